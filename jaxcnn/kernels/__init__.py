"""Backend-specific algorithms for the models' convolutions and max pools, chosen by name.

Every model family takes one field, `conv_impl`, naming a `Kernels` pair (the convolution
handed to `nn.Conv(conv_general_dilated=...)` and the max pool): "xla" (the default: XLA's
own ops, `lax.conv_general_dilated` and `reduce_window`), "xla_cpu" (the XLA:CPU rewrites of
`xla_cpu.py`, chosen per layer by `xla_cpu.conv_auto`), or one CPU convolution algorithm on
its own ("taps", "patches", "im2col_grad", for measurements). All give the same values,
gradients and parameters. Models and tasks never decide: `choose(config.conv_impl, platform)`
is called once, by the program builder (`jaxcnn.train.platform_conv_impl`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxcnn.kernels import xla_cpu

Pads = Sequence[tuple[int, int]]


def xla_max_pool(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    """XLA's max pool of NHWC `x` (reduce_window; explicit (lo, hi) pads for H and W).

    The default, and the reference every other max pool is tested against: its gradient
    (select_and_scatter) goes to the first maximal element in row-major window order.
    """
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                 (1, stride, stride, 1), [(0, 0), *[tuple(p) for p in pads],
                                                          (0, 0)])


@dataclasses.dataclass(frozen=True)
class Kernels:
    """A convolution (lax.conv_general_dilated's signature) and a max pool (x, window,
    stride, pads) -> y, used together by a model."""

    conv: Callable[..., jax.Array]
    max_pool: Callable[[jax.Array, int, int, Pads], jax.Array]


KERNELS: dict[str, Kernels] = {
    "xla": Kernels(jax.lax.conv_general_dilated, xla_max_pool),
    "xla_cpu": Kernels(xla_cpu.conv_auto, xla_cpu.max_pool),
    "taps": Kernels(xla_cpu.conv_taps, xla_cpu.max_pool),
    "patches": Kernels(xla_cpu.conv_patches, xla_cpu.max_pool),
    "im2col_grad": Kernels(xla_cpu.conv_im2col_grad, xla_cpu.max_pool),
}
DEFAULT = "xla"
AUTO = "auto"  # the trainer's choice: resolved by `choose`, never seen by a model


def get(name: str) -> Kernels:
    """The kernels called `name` (one of KERNELS)."""
    if name not in KERNELS:
        raise ValueError(f"conv_impl must be one of {sorted(KERNELS)}; received {name!r}")
    return KERNELS[name]


def choose(requested: str, platform: str) -> str:
    """The kernels a model gets for `requested` (KERNELS or "auto") on devices of `platform`
    ("cpu", "gpu", "tpu", ...): "auto" is "xla_cpu" on CPUs and "xla" elsewhere (no
    accelerator measurement says otherwise yet); anything else is checked and returned."""
    if requested == AUTO:
        return "xla_cpu" if platform == "cpu" else DEFAULT
    if requested not in KERNELS:
        raise ValueError(
            f"conv_impl must be 'auto' or one of {sorted(KERNELS)}; received {requested!r}")
    return requested


__all__ = ["AUTO", "DEFAULT", "KERNELS", "Kernels", "choose", "get", "xla_cpu", "xla_max_pool"]
