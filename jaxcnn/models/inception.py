"""GoogLeNet / Inception v1 (Szegedy et al. 2014): the paper's network and torchvision's."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import kernels
from jaxcnn.models.layers import (
    AdaptiveAvgPool,
    AvgPool,
    MaxPool,
    check_image,
    conv_fn,
    min_input_side,
)
from jaxcnn.models.registry import TrunkInfo, register

# Table 1 of the paper: name -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
BLOCKS: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}
# The max pool (window, stride) that follows each block, where there is one.
POOL_AFTER = {"inception3b": ("maxpool3", 3), "inception4e": ("maxpool4", 2)}
AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}
# Trunk spatial steps (window, stride, pad, ceil): conv1, maxpool1, maxpool2..4 (the 1x1,
# the padded 3x3 convs and the inception blocks keep the size).
_TRUNK = [(7, 2, 3, False), (3, 2, 0, True), (3, 2, 0, True), (3, 2, 0, True), (2, 2, 0, True)]
# Up to inception4a, then the paper's 5x5/3 average pool in the auxiliary head.
_PAPER_AUX = _TRUNK[:4] + [(5, 3, 0, False)]


def local_response_norm(
    x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> jax.Array:
    """torch's LocalResponseNorm over NHWC channels: x / (k + alpha/size * sum x^2)^beta."""
    squares = jnp.square(x)
    pads = ((0, 0), (0, 0), (0, 0), (size // 2, (size - 1) // 2))
    # A Python-scalar init value lets JAX recognise the sum and differentiate it.
    summed = jax.lax.reduce_window(squares, 0.0, jax.lax.add, (1, 1, 1, size), (1, 1, 1, 1), pads)
    return x / (k + alpha / size * summed) ** beta


class ConvUnit(nn.Module):
    """Conv + ReLU (paper: conv with bias) or conv (no bias) + BN(eps 1e-3) + ReLU (torchvision)."""

    features: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    batch_norm: bool = False
    dtype: Any = jnp.float32
    conv_impl: str = kernels.DEFAULT  # the convolution's kernels (jaxcnn.kernels)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                    padding=pad, use_bias=not self.batch_norm, name="conv", dtype=self.dtype,
                    param_dtype=jnp.float32,
                    conv_general_dilated=conv_fn(self.conv_impl))(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3,
                             name="bn", dtype=self.dtype, param_dtype=jnp.float32)(x)
        return nn.relu(x)


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->5x5 | pool->1x1.

    The output has ch1x1 + ch3x3 + ch5x5 + pool_proj channels and the input's H, W.
    `five_kernel=3` reproduces torchvision's 3x3 conv in the "5x5" branch. `conv_impl` names
    the convolution and max-pool kernels (jaxcnn.kernels).
    """

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    batch_norm: bool = False
    five_kernel: int = 5
    dtype: Any = jnp.float32
    conv_impl: str = kernels.DEFAULT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        unit = {"batch_norm": self.batch_norm, "dtype": self.dtype, "conv_impl": self.conv_impl}
        b1 = ConvUnit(self.ch1x1, name="branch1", **unit)(x, train)
        b2 = ConvUnit(self.ch3x3red, name="branch2_0", **unit)(x, train)
        b2 = ConvUnit(self.ch3x3, 3, padding=1, name="branch2_1", **unit)(b2, train)
        b3 = ConvUnit(self.ch5x5red, name="branch3_0", **unit)(x, train)
        b3 = ConvUnit(self.ch5x5, self.five_kernel, padding=self.five_kernel // 2,
                      name="branch3_1", **unit)(b3, train)
        b4 = MaxPool(3, 1, ((1, 1), (1, 1)), ceil_mode=True, conv_impl=self.conv_impl,
                     name="branch4_0")(x)
        b4 = ConvUnit(self.pool_proj, name="branch4_1", **unit)(b4, train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: avg pool to 4x4, 1x1 conv 128, fc 1024 + ReLU, dropout, fc."""

    num_classes: int
    batch_norm: bool = False
    paper_pool: bool = True
    dropout_rate: float = 0.7
    dtype: Any = jnp.float32
    conv_impl: str = kernels.DEFAULT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.paper_pool:
            x = AvgPool(5, 3, name="avgpool")(x)  # 4x4 on the 14x14 maps of a 224 input
        else:
            x = AdaptiveAvgPool((4, 4), name="avgpool")(x)
        x = ConvUnit(128, batch_norm=self.batch_norm, dtype=self.dtype, conv_impl=self.conv_impl,
                     name="conv")(x, train)
        x = x.reshape(x.shape[0], -1)  # NHWC flatten (convert.py permutes fc1 from NCHW)
        layer = {"dtype": self.dtype, "param_dtype": jnp.float32}
        x = nn.relu(nn.Dense(1024, name="fc1", **layer)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(x)
        return nn.Dense(self.num_classes, name="fc2", **layer)(x).astype(jnp.float32)


class GoogLeNet(nn.Module):
    """GoogLeNet on NHWC input; in train mode with aux_logits returns (logits, aux1, aux2).

    The paper's network (batch_norm=False): conv biases, ReLU, 5x5 convs, LRN after
    maxpool1 and conv3, dropout 0.4, aux heads with a 5x5/3 average pool. torchvision's
    (batch_norm=True, five_kernel=3, lrn=False, dropout 0.2): BN(eps 1e-3) after every
    bias-free conv and adaptive 4x4 pooling in the aux heads. Max pools use torch's
    ceil_mode as torchvision does. torchvision's `transform_input` (re-normalising inputs
    for ported TF weights) is not reproduced: feed inputs normalised as the weights expect.
    Sown intermediates: stem (after maxpool2) and inception3a_out .. inception5b_out.
    `conv_impl` names the convolution and max-pool kernels (jaxcnn.kernels). The trunk
    (include_top=False) ends at inception5b (stride 32, 1024 channels); avgpool, fc and the
    aux heads are the classifier.
    """

    num_classes: int = 1000
    batch_norm: bool = False
    five_kernel: int = 5
    lrn: bool = True
    aux_logits: bool = False
    dropout_rate: float = 0.4
    aux_dropout_rate: float = 0.7
    arch: str = "googlenet"
    dtype: Any = jnp.float32
    conv_impl: str = kernels.DEFAULT
    include_top: bool = True

    def trunk_info(self) -> TrunkInfo:
        """(stride, channels) of inception5b's output."""
        last = BLOCKS["inception5b"]
        return TrunkInfo(32, last[0] + last[2] + last[4] + last[5])

    def feature_names(self) -> tuple[str, ...]:
        """The sown activations, in network order."""
        return ("stem", *(f"{name}_out" for name in BLOCKS))

    def _min_side(self) -> int:
        side = min_input_side(_TRUNK)
        if self.aux_logits and not self.batch_norm:
            side = max(side, min_input_side(_PAPER_AUX))
        return side

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array | tuple[jax.Array, ...]:
        check_image(x, self.arch, self._min_side())
        unit = {"batch_norm": self.batch_norm, "dtype": self.dtype, "conv_impl": self.conv_impl}
        pool = {"ceil_mode": True, "conv_impl": self.conv_impl}
        x = ConvUnit(64, 7, 2, 3, name="conv1", **unit)(x, train)
        x = MaxPool(3, 2, name="maxpool1", **pool)(x)
        if self.lrn:
            x = local_response_norm(x)
        x = ConvUnit(64, 1, name="conv2", **unit)(x, train)
        x = ConvUnit(192, 3, padding=1, name="conv3", **unit)(x, train)
        if self.lrn:
            x = local_response_norm(x)
        x = MaxPool(3, 2, name="maxpool2", **pool)(x)
        self.sow("intermediates", "stem", x)
        aux = []
        for name, channels in BLOCKS.items():
            x = InceptionBlock(*channels, five_kernel=self.five_kernel, name=name, **unit)(x, train)
            self.sow("intermediates", f"{name}_out", x)
            # Aux heads only run when training (or creating their params).
            if (name in AUX_AFTER and self.aux_logits and self.include_top
                    and (train or self.is_initializing())):
                head = InceptionAux(self.num_classes, self.batch_norm, not self.batch_norm,
                                    self.aux_dropout_rate, self.dtype, self.conv_impl,
                                    name=AUX_AFTER[name])
                aux.append(head(x, train))
            if name in POOL_AFTER:
                pool_name, window = POOL_AFTER[name]
                x = MaxPool(window, 2, name=pool_name, **pool)(x)
        if not self.include_top:
            return x
        x = AdaptiveAvgPool((1, 1), name="avgpool")(x).reshape(x.shape[0], -1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(x)
        logits = nn.Dense(self.num_classes, name="fc", dtype=self.dtype,
                          param_dtype=jnp.float32)(x).astype(jnp.float32)
        if self.aux_logits and train:
            return (logits, *aux)
        return logits


@register("googlenet", input_shape=(224, 224, 3), num_classes=1000)
def googlenet(num_classes: int = 1000, **kwargs: Any) -> GoogLeNet:
    """The paper's GoogLeNet (6,998,552 params without aux heads at 1000 classes)."""
    return GoogLeNet(num_classes=num_classes, **kwargs)


@register("googlenet_bn", input_shape=(224, 224, 3), num_classes=1000)
def googlenet_bn(num_classes: int = 1000, **kwargs: Any) -> GoogLeNet:
    """torchvision's GoogLeNet with BatchNorm (6,624,904 params without aux heads)."""
    settings = {"batch_norm": True, "five_kernel": 3, "lrn": False, "dropout_rate": 0.2,
                "arch": "googlenet_bn"}
    return GoogLeNet(num_classes=num_classes, **{**settings, **kwargs})
