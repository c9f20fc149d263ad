"""Convolution arithmetic: output sizes, conv2d, pooling, edge filters, receptive fields.

Everything here follows the lecture's conventions: convolution is the deep-learning
cross-correlation (no kernel flip), images are NHWC and kernels HWIO.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Padding = str | int | Sequence[tuple[int, int]]


def _frozen(rows: list[list[float]]) -> np.ndarray:
    array = np.array(rows, dtype=np.float32)
    array.setflags(write=False)
    return array


# The 3x3 filters exactly as the lecture writes them (vertical-edge orientation for
# Sobel and Scharr; transpose any of them for the horizontal version).
EDGE_FILTERS: dict[str, np.ndarray] = {
    "vertical": _frozen([[1, 0, -1], [1, 0, -1], [1, 0, -1]]),
    "horizontal": _frozen([[1, 1, 1], [0, 0, 0], [-1, -1, -1]]),
    "sobel": _frozen([[1, 0, -1], [2, 0, -2], [1, 0, -1]]),
    "scharr": _frozen([[3, 0, -3], [10, 0, -10], [3, 0, -3]]),
}


def same_padding(f: int) -> int:
    """Padding p = (f-1)/2 that keeps an n x n input n x n at stride 1; f must be odd."""
    if f < 1:
        raise ValueError(f"filter size f must be >= 1, got f={f}")
    if f % 2 == 0:
        raise ValueError(f"'same' padding needs an odd filter size f, got f={f}")
    return (f - 1) // 2


def conv_output_size(n: int, f: int, p: int | str = 0, s: int = 1) -> int:
    """Output side length floor((n + 2p - f) / s) + 1; p may be an int, 'valid' or 'same'."""
    if isinstance(p, str):
        mode = p.lower()
        if mode == "valid":
            p = 0
        elif mode == "same":
            p = same_padding(f)
        else:
            raise ValueError(f"padding p must be an int, 'valid' or 'same', got {p!r}")
    if n < 1:
        raise ValueError(f"input size n must be >= 1, got n={n}")
    if f < 1:
        raise ValueError(f"filter size f must be >= 1, got f={f}")
    if p < 0:
        raise ValueError(f"padding p must be >= 0, got p={p}")
    if s < 1:
        raise ValueError(f"stride s must be >= 1, got s={s}")
    if f > n + 2 * p:
        raise ValueError(
            f"filter size f={f} is larger than the padded input n+2p={n + 2 * p} "
            f"(n={n}, p={p}): the filter does not fit"
        )
    return (n + 2 * p - f) // s + 1


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """Receptive field (pixels per side) of a stack of (filter size f, stride s) layers."""
    field, jump = 1, 1
    for index, layer in enumerate(layers):
        if len(layer) != 2:
            raise ValueError(f"layers[{index}] must be a pair (f, s), got {layer!r}")
        f, s = layer
        if f < 1 or s < 1:
            raise ValueError(f"layers[{index}] needs f >= 1 and s >= 1, got (f={f}, s={s})")
        field += (f - 1) * jump
        jump *= s
    return field


def receptive_field_geometry(layers: Sequence[tuple[int, int, int]]) -> tuple[int, int, float]:
    """(size, jump, start) in input pixels after a stack of (filter f, stride s, padding p).

    size: pixels per side one output unit sees; jump: input pixels between neighbouring
    units; start: input coordinate of the centre of unit 0 (pixel centres at 0, 1, ...; may be
    negative when padding puts it outside the image). Unit i's field spans
    start + i*jump +- (size - 1) / 2, before clipping at the border.
    """
    size, jump, start = 1, 1, 0.0
    for index, layer in enumerate(layers):
        if len(layer) != 3:
            raise ValueError(f"layers[{index}] must be (f, s, p), got {layer!r}")
        f, s, p = layer
        if f < 1 or s < 1 or p < 0:
            raise ValueError(f"layers[{index}] needs f >= 1, s >= 1, p >= 0, got {layer!r}")
        start += ((f - 1) / 2 - p) * jump
        size += (f - 1) * jump
        jump *= s
    return size, jump, start


def _as_nhwc(x: jax.Array, name: str) -> tuple[jax.Array, int]:
    """Lift HW or HWC to NHWC; returns the array and its original rank."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if x.ndim == 2:
        return x[None, :, :, None], 2
    if x.ndim == 3:
        return x[None], 3
    if x.ndim == 4:
        return x, 4
    raise ValueError(f"{name} must be HW, HWC or NHWC (rank 2-4), got shape {x.shape}")


def _from_nhwc(y: jax.Array, rank: int) -> jax.Array:
    if rank == 2:
        return y[0, :, :, 0]
    if rank == 3:
        return y[0]
    return y


def _lax_padding(padding: Padding, window: tuple[int, int]) -> str | list[tuple[int, int]]:
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("VALID", "SAME"):
            raise ValueError(f"padding must be 'VALID', 'SAME', an int or pairs, got {padding!r}")
        if mode == "SAME":
            # The lecture's 'same' is symmetric p=(f-1)/2, not XLA's asymmetric SAME.
            return [(same_padding(f), same_padding(f)) for f in window]
        return mode
    if isinstance(padding, (int, np.integer)):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        return [(int(padding), int(padding))] * 2
    pairs = [tuple(int(v) for v in pair) for pair in padding]
    if len(pairs) != 2 or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"padding pairs must be ((top, bottom), (left, right)), got {padding!r}")
    return pairs


def conv2d(x: jax.Array, w: jax.Array, stride: int = 1, padding: Padding = "VALID") -> jax.Array:
    """Cross-correlate x (NHWC, HWC or HW) with w (HWIO, or HW for one channel in/out)."""
    w = jnp.asarray(w)
    if w.ndim == 2:
        w = w[:, :, None, None]
    if w.ndim != 4:
        raise ValueError(f"w must be HW or HWIO (rank 2 or 4), got shape {w.shape}")
    x, rank = _as_nhwc(x, "x")
    if x.shape[-1] != w.shape[2]:
        raise ValueError(
            f"x has {x.shape[-1]} channels but w expects {w.shape[2]} input channels "
            f"(x shape {x.shape}, w shape {w.shape})"
        )
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    y = jax.lax.conv_general_dilated(
        x,
        w.astype(x.dtype),
        window_strides=(stride, stride),
        padding=_lax_padding(padding, w.shape[:2]),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    if rank == 2 and w.shape[3] != 1:
        return y[0]
    return _from_nhwc(y, rank)


def _pool(x: jax.Array, f: int, s: int | None, padding: Padding, reducer: str) -> jax.Array:
    if f < 1:
        raise ValueError(f"pool size f must be >= 1, got {f}")
    s = f if s is None else s
    if s < 1:
        raise ValueError(f"pool stride s must be >= 1, got {s}")
    x, rank = _as_nhwc(x, "x")
    pads = _lax_padding(padding, (f, f))
    if isinstance(pads, str):
        pads = [(0, 0), (0, 0)] if pads == "VALID" else pads
    for axis, (lo, hi) in zip((1, 2), pads):
        if f > x.shape[axis] + lo + hi:
            raise ValueError(f"pool size f={f} exceeds padded input side {x.shape[axis] + lo + hi}")
    window, strides = (1, f, f, 1), (1, s, s, 1)
    full_pads = [(0, 0), *pads, (0, 0)]
    if reducer == "max":
        y = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, full_pads)
    else:
        # Divide by the window size (count_include_pad semantics, as in the lecture).
        y = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, full_pads) / (f * f)
    return _from_nhwc(y, rank)


def max_pool(x: jax.Array, f: int, s: int | None = None, padding: Padding = "VALID") -> jax.Array:
    """Max pooling with an f x f window and stride s (default s=f) over NHWC, HWC or HW."""
    return _pool(x, f, s, padding, "max")


def avg_pool(x: jax.Array, f: int, s: int | None = None, padding: Padding = "VALID") -> jax.Array:
    """Average pooling with an f x f window and stride s (default s=f) over NHWC, HWC or HW."""
    return _pool(x, f, s, padding, "avg")
