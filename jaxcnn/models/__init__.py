"""The model families; importing this package registers every model name.

`get_model(name, num_classes)` builds a model, `get_trunk(name)` the same network without
its classifier (same parameter names), `trunk_info(name)` its output (stride, channels),
`model_info(name)` its native input and default classes, `features(model, variables, x,
layers)` its named intermediate activations (`model.feature_names()` lists them).
"""

from jaxcnn.models import alexnet, inception, lenet, resnet, smallnets, vgg  # noqa: F401 registers
from jaxcnn.models.alexnet import AlexNet
from jaxcnn.models.inception import ConvUnit, GoogLeNet, InceptionAux, InceptionBlock
from jaxcnn.models.layers import AdaptiveAvgPool, AvgPool, GlobalAvgPool, MaxPool
from jaxcnn.models.lenet import LeNet5
from jaxcnn.models.registry import (
    ModelInfo,
    TrunkInfo,
    features,
    get_model,
    get_trunk,
    list_models,
    model_info,
    register,
    trunk_info,
)
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
    "ModelInfo",
    "ResNet",
    "ResidualBlock",
    "TrunkInfo",
    "VGG",
    "features",
    "get_model",
    "get_trunk",
    "list_models",
    "model_info",
    "register",
    "trunk_info",
]
