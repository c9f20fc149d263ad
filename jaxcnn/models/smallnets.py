"""Small probe networks for the tables: a stack of same-size convs under test, in a tiny net."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.kernels import DEFAULT as XLA_KERNELS
from jaxcnn.models.layers import GlobalAvgPool, MaxPool, check_image, conv_fn
from jaxcnn.models.registry import TrunkInfo, register


class FilterStack(nn.Module):
    """Convs of `kernels` sizes (stride 1, size-keeping padding), each `features` wide + ReLU.

    (5,) is one 5x5 conv; (3, 3) is two stacked 3x3 convs with the same 5x5 receptive field.
    """

    kernels: Sequence[int]
    features: int
    dtype: Any = jnp.float32
    conv_impl: str = XLA_KERNELS  # the convolution's kernels (jaxcnn.kernels)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        for i, kernel in enumerate(self.kernels, start=1):
            if kernel < 1 or kernel % 2 == 0:
                raise ValueError(
                    f"kernels: expected odd sizes >= 1; received {tuple(self.kernels)}")
            pad = (kernel - 1) // 2
            x = nn.Conv(self.features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                        name=f"conv{i}", dtype=self.dtype, param_dtype=jnp.float32,
                        conv_general_dilated=conv_fn(self.conv_impl))(x)
            x = nn.relu(x)
        return x


class FilterSizeNet(nn.Module):
    """3x3 stem conv (width) + ReLU + 2x2 max pool, the FilterStack under test, global pool, fc.

    NHWC in, logits out; the stem pool halves the side so the block under test is cheap.
    Sown intermediates: stem_out (after the pool), block_out. `conv_impl` names the convolution and
    max-pool kernels (jaxcnn.kernels). The trunk (include_top=False) ends at the block
    (stride 2, `width` channels); gap and fc are the classifier.
    """

    kernels: Sequence[int] = (3, 3)
    width: int = 32
    num_classes: int = 10
    dtype: Any = jnp.float32
    conv_impl: str = XLA_KERNELS
    include_top: bool = True

    def trunk_info(self) -> TrunkInfo:
        """(stride, channels) of the block's output."""
        return TrunkInfo(2, self.width)

    def feature_names(self) -> tuple[str, ...]:
        """The sown activations, in network order."""
        return ("stem_out", "block_out")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_image(x, "filter_size_net", 2)
        x = nn.Conv(self.width, (3, 3), padding=((1, 1), (1, 1)), name="stem", dtype=self.dtype,
                    param_dtype=jnp.float32, conv_general_dilated=conv_fn(self.conv_impl))(x)
        x = MaxPool(2, 2, conv_impl=self.conv_impl, name="pool")(nn.relu(x))
        self.sow("intermediates", "stem_out", x)
        x = FilterStack(tuple(self.kernels), self.width, self.dtype, self.conv_impl,
                        name="block")(x, train)
        self.sow("intermediates", "block_out", x)
        if not self.include_top:
            return x
        x = GlobalAvgPool(name="gap")(x)
        logits = nn.Dense(self.num_classes, name="fc", dtype=self.dtype,
                          param_dtype=jnp.float32)(x)
        return logits.astype(jnp.float32)


@register("filter_size_net", input_shape=(32, 32, 3), num_classes=10)
def filter_size_net(num_classes: int = 10, **kwargs: Any) -> FilterSizeNet:
    """The filter-size probe net; kwargs: kernels (e.g. (5,) or (3, 3)), width, dtype,
    conv_impl, include_top."""
    if "kernels" in kwargs:
        kwargs["kernels"] = tuple(kwargs["kernels"])
    return FilterSizeNet(num_classes=num_classes, **kwargs)
