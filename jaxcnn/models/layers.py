"""Layers shared by the model families: pooling as modules (so summaries list them)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Pads = Sequence[tuple[int, int]]


def _ceil_extra(n: int, f: int, s: int, lo: int, hi: int) -> int:
    """Extra high-side padding that turns floor-mode into torch's ceil_mode output size."""
    out = math.ceil((n + lo + hi - f) / s) + 1
    if (out - 1) * s >= n + lo:  # torch: the last window must start inside input or left pad
        out -= 1
    return max(0, (out - 1) * s + f - (n + lo + hi))


def pool2d(
    x: jax.Array, kind: str, window: int, stride: int, padding: Pads = ((0, 0), (0, 0)),
    ceil_mode: bool = False,
) -> jax.Array:
    """Max or average pooling over NHWC with explicit symmetric padding and torch's ceil_mode.

    Average pooling divides by the window size (torch's count_include_pad=True); padding
    added only to honour ceil_mode is excluded from the divisor, as torch does.
    """
    if x.ndim != 4:
        raise ValueError(f"pool2d expects NHWC input, got shape {x.shape}")
    pads = [tuple(p) for p in padding]
    if ceil_mode:
        pads = [
            (lo, hi + _ceil_extra(x.shape[axis], window, stride, lo, hi))
            for axis, (lo, hi) in zip((1, 2), pads)
        ]
    for axis, (lo, hi) in zip((1, 2), pads):
        if window > x.shape[axis] + lo + hi:
            raise ValueError(
                f"pooling window {window} is larger than the padded input side "
                f"{x.shape[axis] + lo + hi} (input shape {x.shape}): the input is too small"
            )
    dims, strides = (1, window, window, 1), (1, stride, stride, 1)
    full = [(0, 0), *pads, (0, 0)]
    if kind == "max":
        init = jnp.array(-jnp.inf, x.dtype)
        return jax.lax.reduce_window(x, init, jax.lax.max, dims, strides, full)
    summed = jax.lax.reduce_window(x, jnp.array(0, x.dtype), jax.lax.add, dims, strides, full)
    if not ceil_mode:
        return summed / (window * window)
    # Count the real + symmetric-pad positions in each window (excludes ceil-mode overhang).
    sym = [(0, 0), *[tuple(p) for p in padding], (0, 0)]
    ones = jnp.pad(jnp.ones((1, *x.shape[1:3], 1), x.dtype), sym)
    extra = [(0, 0)] + [(0, hi - s[1]) for (_, hi), s in zip(pads, sym[1:3])] + [(0, 0)]
    counts = jax.lax.reduce_window(ones, jnp.array(0, x.dtype), jax.lax.add, dims, strides, extra)
    return summed / counts


class MaxPool(nn.Module):
    """Max pooling (window, stride, symmetric padding, torch ceil_mode) as a module."""

    window: int
    stride: int
    padding: Pads = ((0, 0), (0, 0))
    ceil_mode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return pool2d(x, "max", self.window, self.stride, self.padding, self.ceil_mode)


class AvgPool(nn.Module):
    """Average pooling (window, stride, symmetric padding, torch ceil_mode) as a module."""

    window: int
    stride: int
    padding: Pads = ((0, 0), (0, 0))
    ceil_mode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return pool2d(x, "avg", self.window, self.stride, self.padding, self.ceil_mode)


class GlobalAvgPool(nn.Module):
    """Mean over H and W: (N, H, W, C) -> (N, C)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.mean(x, axis=(1, 2))
