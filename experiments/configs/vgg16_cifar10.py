"""VGG-16 with BatchNorm on CIFAR-10 (32x32 inputs: the classifier pools to 7x7 adaptively)."""

from experiments.configs import resnet18_cifar10
from jaxcnn.train import override


def get_config(arg: str | None = None):
    config = resnet18_cifar10.get_config()
    config.model = "vgg16_bn"
    config.learning_rate = 0.05
    return override(config, arg)
