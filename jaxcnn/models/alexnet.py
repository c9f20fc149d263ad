"""AlexNet as torchvision defines it (the one-GPU variant of Krizhevsky et al. 2012)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import kernels
from jaxcnn.models.layers import AdaptiveAvgPool, MaxPool, check_image, conv_fn, min_input_side
from jaxcnn.models.registry import TrunkInfo, register

# (name, features, kernel, stride, padding, max-pool after it)
CONVS: tuple[tuple[str, int, int, int, int, bool], ...] = (
    ("conv1", 64, 11, 4, 2, True),
    ("conv2", 192, 5, 1, 2, True),
    ("conv3", 384, 3, 1, 1, False),
    ("conv4", 256, 3, 1, 1, False),
    ("conv5", 256, 3, 1, 1, True),
)
FCS: tuple[tuple[str, int], ...] = (("fc6", 4096), ("fc7", 4096))
DROPPABLE = (1, 2, 3, 4, 5, 6, 7)


def _trunk_steps(drop_layers: Sequence[int]) -> list[tuple[int, int, int, bool]]:
    """Spatial (window, stride, pad, ceil) steps of the kept convs and all three max pools."""
    steps = []
    for number, (_, _, kernel, stride, pad, pooled) in enumerate(CONVS, start=1):
        if number not in drop_layers:
            steps.append((kernel, stride, pad, False))
        if pooled:
            steps.append((3, 2, 0, False))
    return steps


class AlexNet(nn.Module):
    """torchvision AlexNet on NHWC input; layers 1-5 are conv1..conv5, 6-8 are fc6..fc8.

    `drop_layers` removes any of layers 1-7 (an ablation): the next kept layer reads
    whatever the previous kept layer produced (flax infers its input width), and the three
    max pools stay where they are. A dropped fc also drops the dropout in front of it.
    Sown intermediates (after ReLU): relu1..relu5 (convs), relu6, relu7 (fcs).
    `conv_impl` names the convolution and max-pool kernels (jaxcnn.kernels). The trunk
    (include_top=False) is torchvision's `features`, ending at pool5 (stride 32, 256
    channels); avgpool and fc6..fc8 are the classifier.
    """

    num_classes: int = 1000
    drop_layers: Sequence[int] = ()
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    conv_impl: str = kernels.DEFAULT
    include_top: bool = True

    def trunk_info(self) -> TrunkInfo:
        """(stride, channels) of pool5's output (the last kept conv's channels)."""
        dropped = self._validate()
        kept = [conv for n, conv in enumerate(CONVS, start=1) if n not in dropped]
        if not kept:
            raise ValueError("trunk_info: with every conv dropped the trunk's channels are the "
                             f"input's; received drop_layers={tuple(self.drop_layers)}")
        stride = math.prod(step[1] for step in _trunk_steps(dropped))
        return TrunkInfo(stride, kept[-1][1])

    def feature_names(self) -> tuple[str, ...]:
        """The sown activations, in network order (the trunk's only)."""
        dropped = self._validate()
        last = 7 if self.include_top else 5
        return tuple(f"relu{n}" for n in range(1, last + 1) if n not in dropped)

    def _validate(self) -> tuple[int, ...]:
        dropped = tuple(sorted(set(self.drop_layers)))
        bad = [n for n in dropped if n not in DROPPABLE]
        if bad:
            raise ValueError(
                f"drop_layers: expected layer numbers from {DROPPABLE} (layer 8 is the "
                f"classifier and cannot be dropped); received {tuple(self.drop_layers)}"
            )
        return dropped

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dropped = self._validate()
        check_image(x, "alexnet", min_input_side(_trunk_steps(dropped)))
        layer = {"dtype": self.dtype, "param_dtype": jnp.float32}
        for number, (name, features, kernel, stride, pad, pooled) in enumerate(CONVS, start=1):
            if number not in dropped:
                x = nn.Conv(features, (kernel, kernel), (stride, stride),
                            padding=((pad, pad), (pad, pad)), name=name,
                            conv_general_dilated=conv_fn(self.conv_impl), **layer)(x)
                x = nn.relu(x)
                self.sow("intermediates", f"relu{number}", x)
            if pooled:
                x = MaxPool(3, 2, conv_impl=self.conv_impl, name=f"pool{number}")(x)
        if not self.include_top:
            return x
        x = AdaptiveAvgPool((6, 6), name="avgpool")(x)
        # torch flattens NCHW; we flatten NHWC (convert.py permutes fc6's rows to match).
        x = x.reshape(x.shape[0], -1)
        for number, (name, features) in enumerate(FCS, start=6):
            if number in dropped:
                continue
            x = nn.Dropout(self.dropout_rate, deterministic=not train, name=f"drop{number}")(x)
            x = nn.relu(nn.Dense(features, name=name, **layer)(x))
            self.sow("intermediates", f"relu{number}", x)
        return nn.Dense(self.num_classes, name="fc8", **layer)(x).astype(jnp.float32)


@register("alexnet", input_shape=(224, 224, 3), num_classes=1000)
def alexnet(num_classes: int = 1000, **kwargs: Any) -> AlexNet:
    """torchvision AlexNet (61,100,840 params at 1000 classes); kwargs: drop_layers,
    dropout_rate, conv_impl, dtype, include_top."""
    if "drop_layers" in kwargs:
        kwargs["drop_layers"] = tuple(kwargs["drop_layers"])
    return AlexNet(num_classes=num_classes, **kwargs)
