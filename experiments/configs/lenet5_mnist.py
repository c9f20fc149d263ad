"""LeNet-5 on the embedded MNIST digits (the demo); ':dataset=mnist' for the full TFDS set."""

from jaxcnn.train import default_config, override


def get_config(arg: str | None = None):
    config = default_config()
    config.model = "lenet5"
    config.dataset = "embedded_mnist"
    config.image_size = (32, 32)
    config.batch_size = 64
    config.train_epochs = 15.0
    config.optimizer = "adam"
    config.learning_rate = 2e-3
    config.schedule = "cosine"
    config.warmup_epochs = 1.0
    config.log_every_steps = 50
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 250
    return override(config, arg)
