"""The model families; importing this package registers every model name."""

from jaxcnn.models import alexnet, inception, lenet, resnet, smallnets, vgg  # noqa: F401 registers
from jaxcnn.models.alexnet import AlexNet
from jaxcnn.models.inception import ConvUnit, GoogLeNet, InceptionAux, InceptionBlock
from jaxcnn.models.layers import AdaptiveAvgPool, AvgPool, GlobalAvgPool, MaxPool
from jaxcnn.models.lenet import LeNet5
from jaxcnn.models.registry import get_model, list_models, register
from jaxcnn.models.resnet import ResidualBlock, ResNet
from jaxcnn.models.vgg import VGG

__all__ = [
    "AdaptiveAvgPool",
    "AlexNet",
    "AvgPool",
    "ConvUnit",
    "GlobalAvgPool",
    "GoogLeNet",
    "InceptionAux",
    "InceptionBlock",
    "LeNet5",
    "MaxPool",
    "ResNet",
    "ResidualBlock",
    "VGG",
    "get_model",
    "list_models",
    "register",
]
