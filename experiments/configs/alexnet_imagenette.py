"""AlexNet (torchvision layout) on Imagenette (10 ImageNet classes) at 224x224."""

from jaxcnn.train import default_config, override


def get_config(arg: str | None = None):
    config = default_config()
    config.model = "alexnet"
    config.dataset = "imagenette"
    config.image_size = (224, 224)
    config.augment = "inception_crop"
    config.batch_size = 128
    config.eval_batch_size = 256
    config.train_epochs = 90.0
    config.optimizer = "momentum"
    config.learning_rate = 0.01
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.warmup_epochs = 2.0
    config.log_every_steps = 50
    config.eval_every_steps = 1000
    config.checkpoint_every_steps = 1000
    return override(config, arg)
