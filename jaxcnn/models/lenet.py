"""LeNet-5 (LeCun et al. 1998) in the lecture's form: CONV-POOL-CONV-POOL-FC-FC-FC."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import kernels
from jaxcnn.models.layers import AvgPool, MaxPool, check_image, conv_fn, min_input_side
from jaxcnn.models.registry import TrunkInfo, register

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
}
POOLS: dict[str, type[nn.Module]] = {"max": MaxPool, "avg": AvgPool}
# conv5 - pool2 - conv5 - pool2; activations are applied as functions (no summary rows).
_STEPS = ((5, 1, 0, False), (2, 2, 0, False), (5, 1, 0, False), (2, 2, 0, False))
MIN_SIDE = min_input_side(_STEPS)


class LeNet5(nn.Module):
    """CONV(5,1,6)-POOL(2,2)-CONV(5,1,16)-POOL(2,2)-FC120-FC84-FC(num_classes); NHWC in, logits out.

    `activation` is "relu" (default), "tanh" or "sigmoid"; `pool` is "max" or "avg"
    (the 1998 network is activation="tanh", pool="avg"). Sown intermediates: act1..act4
    (the activations of conv1, conv2, fc3, fc4). `conv_impl` names the convolution and
    max-pool kernels (jaxcnn.kernels; same parameters and values for all). The trunk
    (include_top=False) ends at pool2: stride 4, 16 channels; fc3..fc5 are the classifier.
    """

    num_classes: int = 10
    activation: str = "relu"
    pool: str = "max"
    conv_impl: str = kernels.DEFAULT
    dtype: Any = jnp.float32
    include_top: bool = True

    def trunk_info(self) -> TrunkInfo:
        """(stride, channels) of pool2's output."""
        return TrunkInfo(4, 16)

    def feature_names(self) -> tuple[str, ...]:
        """The sown activations, in network order (the trunk's only)."""
        return ("act1", "act2", "act3", "act4") if self.include_top else ("act1", "act2")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_image(x, "lenet5", MIN_SIDE)
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}; received {self.activation!r}"
            )
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {sorted(POOLS)}; received {self.pool!r}")
        act, pool = ACTIVATIONS[self.activation], POOLS[self.pool]
        layer = {"dtype": self.dtype, "param_dtype": jnp.float32}
        conv = {"padding": "VALID", "conv_general_dilated": conv_fn(self.conv_impl), **layer}
        x = act(nn.Conv(6, (5, 5), name="conv1", **conv)(x))
        self.sow("intermediates", "act1", x)
        x = pool(2, 2, conv_impl=self.conv_impl, name="pool1")(x)
        x = act(nn.Conv(16, (5, 5), name="conv2", **conv)(x))
        self.sow("intermediates", "act2", x)
        x = pool(2, 2, conv_impl=self.conv_impl, name="pool2")(x)
        if not self.include_top:
            return x
        x = x.reshape(x.shape[0], -1)
        x = act(nn.Dense(120, name="fc3", **layer)(x))
        self.sow("intermediates", "act3", x)
        x = act(nn.Dense(84, name="fc4", **layer)(x))
        self.sow("intermediates", "act4", x)
        return nn.Dense(self.num_classes, name="fc5", **layer)(x).astype(jnp.float32)


@register("lenet5", input_shape=(32, 32, 1), num_classes=10)
def lenet5(num_classes: int = 10, **kwargs: Any) -> LeNet5:
    """LeNet-5; kwargs: activation, pool, conv_impl, dtype, include_top."""
    return LeNet5(num_classes=num_classes, **kwargs)
