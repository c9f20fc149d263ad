"""GoogLeNet (torchvision's BatchNorm variant) on Imagenette at 224x224."""

from experiments.configs import alexnet_imagenette
from jaxcnn.train import override


def get_config(arg: str | None = None):
    config = alexnet_imagenette.get_config()
    config.model = "googlenet_bn"
    config.learning_rate = 0.1
    config.weight_decay = 1e-4
    config.label_smoothing = 0.1
    return override(config, arg)
