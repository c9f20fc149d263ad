"""AlexNet's 5 conv + 3 FC for 32x32 (alexnet_cifar, half width) on CIFAR-10 class folders:
the five-conv-layer network whose units experiments/inspect_layers.py shows.

':dataset=folder:PATH' points at train/<class>/ and test/<class>/ (default /tmp/cifar10, where
../shared/data/cifar10_jpeg.tar.gz unpacks), or 'cifar10' for TFDS.
"""

from jaxcnn.train import default_config, override


def get_config(arg: str | None = None):
    config = default_config()
    config.model = "alexnet_cifar"
    config.model_kwargs.width = 0.5
    config.dataset = "folder:/tmp/cifar10"
    config.augment = "crop_flip"
    config.batch_size = 128
    config.eval_batch_size = 500
    config.train_epochs = 20.0
    config.optimizer = "adamw"
    config.learning_rate = 2e-3
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.warmup_epochs = 1.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    return override(config, arg)
