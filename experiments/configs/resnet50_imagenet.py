"""ResNet-50 on ImageNet-1k (TFDS imagenet2012, manual download): the standard 90-epoch SGD."""

from jaxcnn.train import default_config, override


def get_config(arg: str | None = None):
    config = default_config()
    config.model = "resnet50"
    config.dataset = "imagenet2012"
    config.image_size = (224, 224)
    config.augment = "inception_crop"
    config.batch_size = 1024
    config.eval_batch_size = 1024
    config.train_epochs = 90.0
    config.optimizer = "nesterov"
    config.learning_rate = 0.4  # 0.1 x batch / 256
    config.weight_decay = 1e-4
    config.schedule = "cosine"
    config.warmup_epochs = 5.0
    config.label_smoothing = 0.1
    config.dtype = "bfloat16"
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2500
    return override(config, arg)
