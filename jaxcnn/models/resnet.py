"""ResNets (He et al. 2015): torchvision's ImageNet ResNet-18..152 and the paper's CIFAR nets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import kernels
from jaxcnn.models.layers import MaxPool, check_image, conv_fn, min_input_side
from jaxcnn.models.registry import TrunkInfo, register

_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # as torchvision
SHORTCUTS = ("projection", "zeropad")


def _conv(features: int, kernel: int, stride: int, name: str, dtype: Any,
          impl: str) -> nn.Conv:
    """Bias-free conv with torch's symmetric padding (kernel - 1) // 2 (not XLA's SAME)."""
    pad = (kernel - 1) // 2
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=_CONV_INIT, name=name, dtype=dtype,
                   param_dtype=jnp.float32, conv_general_dilated=conv_fn(impl))


def _bn(name: str, train: bool, dtype: Any) -> nn.BatchNorm:
    """BatchNorm with torch's defaults (momentum 0.1 -> flax 0.9, eps 1e-5)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name,
                        dtype=dtype, param_dtype=jnp.float32)


class ResidualBlock(nn.Module):
    """Basic (3x3, 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1 x4) block.

    Computes a[l+2] = relu(z[l+2] + shortcut(a[l])); the shortcut is the identity when the
    shape is kept, else a 1x1 conv + BN ("projection", option B) or a strided identity with
    zero channels appended ("zeropad", option A, parameter free). `plain` drops the shortcut.
    `conv_impl` names the convolution kernels (jaxcnn.kernels; same parameters).
    """

    features: int
    stride: int = 1
    bottleneck: bool = False
    shortcut: str = "projection"
    plain: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = kernels.DEFAULT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_features = self.features * 4 if self.bottleneck else self.features
        if self.bottleneck:
            kernels = ((1, 1, self.features), (3, self.stride, self.features), (1, 1, out_features))
        else:
            kernels = ((3, self.stride, self.features), (3, 1, self.features))
        y = x
        for i, (kernel, stride, features) in enumerate(kernels, start=1):
            y = _conv(features, kernel, stride, f"conv{i}", self.dtype, self.conv_impl)(y)
            y = _bn(f"bn{i}", train, self.dtype)(y)
            if i < len(kernels):
                y = nn.relu(y)
        if self.plain:
            return nn.relu(y)
        if self.stride != 1 or x.shape[-1] != out_features:
            if self.shortcut == "projection":
                x = _conv(out_features, 1, self.stride, "downsample_0", self.dtype,
                          self.conv_impl)(x)
                x = _bn("downsample_1", train, self.dtype)(x)
            else:
                x = x[:, :: self.stride, :: self.stride, :]
                extra = out_features - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
        return nn.relu(y + x.astype(y.dtype))


class ResNet(nn.Module):
    """ResNet on NHWC input: stem, stages layer{s}_{b} of residual blocks, global pool, fc.

    The ImageNet stem is a 7x7/2 conv (padding 3 on every side), BN, ReLU and a 3x3/2
    max pool (padding 1); `cifar_stem` replaces it by a 3x3/1 conv, BN, ReLU, no pool.
    Stage s halves the size (except stage 1) and has widths[s-1] (x4 for bottlenecks).
    Sown intermediates: stem (after the max pool), stage1..stage4 (each stage's output).
    `conv_impl` names the convolution and max-pool kernels (jaxcnn.kernels; same
    parameters). The trunk (include_top=False) ends at the last stage's output (stride 32
    for ImageNet stems, 2**(stages-1) for the CIFAR stem); fc is the classifier.
    """

    stage_sizes: Sequence[int]
    bottleneck: bool = False
    widths: Sequence[int] = (64, 128, 256, 512)
    num_classes: int = 1000
    cifar_stem: bool = False
    plain: bool = False
    shortcut: str = "projection"
    arch: str = "resnet"
    dtype: Any = jnp.float32
    conv_impl: str = kernels.DEFAULT
    include_top: bool = True

    def trunk_info(self) -> TrunkInfo:
        """(stride, channels) of the last stage's output."""
        stem = 1 if self.cifar_stem else 4
        expansion = 4 if self.bottleneck else 1
        return TrunkInfo(stem * 2 ** (len(self.stage_sizes) - 1), self.widths[-1] * expansion)

    def feature_names(self) -> tuple[str, ...]:
        """The sown activations, in network order."""
        return ("stem", *(f"stage{s}" for s in range(1, len(self.stage_sizes) + 1)))

    def _steps(self) -> list[tuple[int, int, int, bool]]:
        stem = [(3, 1, 1, False)] if self.cifar_stem else [(7, 2, 3, False), (3, 2, 1, False)]
        return stem + [(3, 2, 1, False)] * (len(self.stage_sizes) - 1)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_image(x, self.arch, min_input_side(self._steps()))
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}; received {self.shortcut!r}")
        if len(self.widths) != len(self.stage_sizes):
            raise ValueError(
                f"widths: expected one width per stage ({len(self.stage_sizes)}); received "
                f"{tuple(self.widths)}"
            )
        if self.cifar_stem:
            x = _conv(self.widths[0], 3, 1, "conv1", self.dtype, self.conv_impl)(x)
        else:
            x = _conv(self.widths[0], 7, 2, "conv1", self.dtype, self.conv_impl)(x)
        x = nn.relu(_bn("bn1", train, self.dtype)(x))
        if not self.cifar_stem:
            x = MaxPool(3, 2, ((1, 1), (1, 1)), conv_impl=self.conv_impl, name="maxpool")(x)
        self.sow("intermediates", "stem", x)
        stages = zip(self.stage_sizes, self.widths, strict=True)
        for s, (blocks, width) in enumerate(stages, start=1):
            for b in range(blocks):
                stride = 2 if s > 1 and b == 0 else 1
                x = ResidualBlock(width, stride, self.bottleneck, self.shortcut, self.plain,
                                  self.dtype, self.conv_impl, name=f"layer{s}_{b}")(x, train)
            self.sow("intermediates", f"stage{s}", x)
        if not self.include_top:
            return x
        x = jnp.mean(x, axis=(1, 2))  # global average pool (torch's AdaptiveAvgPool2d(1))
        logits = nn.Dense(self.num_classes, name="fc", dtype=self.dtype,
                          param_dtype=jnp.float32)(x)
        return logits.astype(jnp.float32)


# depth -> (blocks per stage, bottleneck)
IMAGENET_DEPTHS: dict[int, tuple[tuple[int, ...], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # 6n + 2 layers, n blocks per stage


def _imagenet_builder(depth: int, cifar_stem: bool):
    def build(num_classes: int = 10 if cifar_stem else 1000, **kwargs: Any) -> ResNet:
        sizes, bottleneck = IMAGENET_DEPTHS[depth]
        kwargs.setdefault("cifar_stem", cifar_stem)
        name = f"resnet{depth}" + ("_cifar" if kwargs["cifar_stem"] else "")
        return ResNet(sizes, bottleneck, num_classes=num_classes, arch=name, **kwargs)

    stem = "a 3x3/1 stem and no max pool" if cifar_stem else "the 7x7/2 stem"
    build.__doc__ = (f"torchvision ResNet-{depth} with {stem}; kwargs: plain, cifar_stem, "
                     "conv_impl, dtype, include_top.")
    return build


def _cifar_builder(depth: int):
    def build(num_classes: int = 10, **kwargs: Any) -> ResNet:
        n = (depth - 2) // 6
        kwargs.setdefault("shortcut", "zeropad")
        return ResNet((n, n, n), False, (16, 32, 64), num_classes=num_classes, cifar_stem=True,
                      arch=f"resnet{depth}_cifar", **kwargs)

    build.__doc__ = (f"He et al.'s CIFAR ResNet-{depth}: 3 stages of 16/32/64 channels, option A "
                     "(zero-padding) shortcuts by default; kwargs: shortcut, plain, conv_impl, "
                     "dtype, include_top.")
    return build


for _depth in IMAGENET_DEPTHS:
    register(f"resnet{_depth}", input_shape=(224, 224, 3), num_classes=1000)(
        _imagenet_builder(_depth, False))
    register(f"resnet{_depth}_cifar", input_shape=(32, 32, 3), num_classes=10)(
        _imagenet_builder(_depth, True))
for _depth in CIFAR_DEPTHS:
    register(f"resnet{_depth}_cifar", input_shape=(32, 32, 3), num_classes=10)(
        _cifar_builder(_depth))
