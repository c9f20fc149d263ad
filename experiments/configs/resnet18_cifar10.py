"""ResNet-18 with the CIFAR stem (3x3/1, no max-pool) on CIFAR-10."""

from jaxcnn.train import default_config, override


def get_config(arg: str | None = None):
    config = default_config()
    config.model = "resnet18_cifar"
    config.dataset = "cifar10"
    config.augment = "crop_flip"
    config.batch_size = 128
    config.eval_batch_size = 500
    config.train_epochs = 200.0
    config.optimizer = "momentum"
    config.learning_rate = 0.1
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.log_every_steps = 100
    config.eval_every_steps = 2000
    config.checkpoint_every_steps = 2000
    return override(config, arg)
