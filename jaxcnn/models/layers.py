"""Layers shared by the model families: pooling as modules (so summaries list them), the
convolution a family's `conv_impl` names, and input-size arithmetic. No platform code: the
algorithms behind a `conv_impl` live in jaxcnn.kernels."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import kernels

Pads = Sequence[tuple[int, int]]
ConvPadding = str | Sequence[tuple[int, int]]


def _ceil_extra(n: int, f: int, s: int, lo: int, hi: int) -> int:
    """Extra high-side padding that turns floor-mode into torch's ceil_mode output size."""
    out = math.ceil((n + lo + hi - f) / s) + 1
    if (out - 1) * s >= n + lo:  # torch: the last window must start inside input or left pad
        out -= 1
    return max(0, (out - 1) * s + f - (n + lo + hi))


def pool2d(
    x: jax.Array, kind: str, window: int, stride: int, padding: Pads = ((0, 0), (0, 0)),
    ceil_mode: bool = False, impl: str = kernels.DEFAULT,
) -> jax.Array:
    """Max or average pooling over NHWC with explicit symmetric padding and torch's ceil_mode.

    Average pooling divides by the window size (torch's count_include_pad=True); padding
    added only to honour ceil_mode is excluded from the divisor, as torch does. Max pooling
    uses the max pool of kernels `impl` (kernels.KERNELS; all give the same values and
    gradients).
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
        return kernels.get(impl).max_pool(x, window, stride, pads)
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, full)
    if not ceil_mode:
        return summed / (window * window)
    # Count the real + symmetric-pad positions in each window (excludes ceil-mode overhang).
    sym = [(0, 0), *[tuple(p) for p in padding], (0, 0)]
    ones = jnp.pad(jnp.ones((1, *x.shape[1:3], 1), x.dtype), sym)
    extra = [(0, 0)] + [(0, hi - s[1]) for (_, hi), s in zip(pads, sym[1:3])] + [(0, 0)]
    counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims, strides, extra)
    return summed / counts


class _Pool(nn.Module):
    """Pooling of kind KIND (window, stride, symmetric padding, torch ceil_mode)."""

    KIND: ClassVar[str]
    window: int
    stride: int
    padding: Pads = ((0, 0), (0, 0))
    ceil_mode: bool = False
    conv_impl: str = kernels.DEFAULT  # the max pool of these kernels (kernels.KERNELS)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return pool2d(x, self.KIND, self.window, self.stride, self.padding, self.ceil_mode,
                      self.conv_impl)


class MaxPool(_Pool):
    """Max pooling (window, stride, symmetric padding, torch ceil_mode) as a module."""

    KIND = "max"


class AvgPool(_Pool):
    """Average pooling (window, stride, symmetric padding, torch ceil_mode) as a module."""

    KIND = "avg"


class GlobalAvgPool(nn.Module):
    """Mean over H and W: (N, H, W, C) -> (N, C)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.mean(x, axis=(1, 2))


def _adaptive_matrix(n: int, out: int) -> np.ndarray:
    """(out, n) averaging matrix with torch's adaptive bins [floor(i*n/out), ceil((i+1)*n/out))."""
    matrix = np.zeros((out, n), np.float32)
    for i in range(out):
        start, end = (i * n) // out, -((-(i + 1) * n) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class AdaptiveAvgPool(nn.Module):
    """torch's AdaptiveAvgPool2d over NHWC: (N, H, W, C) -> (N, out_h, out_w, C)."""

    output_size: tuple[int, int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"AdaptiveAvgPool expects NHWC input, got shape {x.shape}")
        (h, w), (oh, ow) = x.shape[1:3], self.output_size
        if (h, w) == (oh, ow):
            return x
        if h % oh == 0 and w % ow == 0:
            return x.reshape(x.shape[0], oh, h // oh, ow, w // ow, x.shape[3]).mean(axis=(2, 4))
        rows = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
        cols = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
        return jnp.einsum("nhwc,ih,jw->nijc", x, rows, cols, precision=jax.lax.Precision.HIGHEST)


# One spatial step of a network's trunk: (window, stride, symmetric padding, ceil_mode).
SideOp = tuple[int, int, int, bool]


def output_side(n: int, steps: Sequence[SideOp]) -> int | None:
    """Side length after `steps` (torch's conv/pool formulas), or None if a step cannot fit."""
    for window, stride, pad, ceil_mode in steps:
        if ceil_mode:
            out = -(-(n + 2 * pad - window) // stride) + 1
            if (out - 1) * stride >= n + pad:  # torch: last window must start inside input
                out -= 1
        else:
            out = (n + 2 * pad - window) // stride + 1 if n + 2 * pad >= window else 0
        if out < 1:
            return None
        n = out
    return n


def min_input_side(steps: Sequence[SideOp], limit: int = 4096) -> int:
    """Smallest input side for which every one of `steps` fits."""
    for n in range(1, limit + 1):
        if output_side(n, steps) is not None:
            return n
    raise ValueError(f"no input side up to {limit} fits the steps {list(steps)}")


def check_image(x: jax.Array, model: str, min_side: int) -> None:
    """Raise a ValueError naming `model` unless x is NHWC with H, W >= min_side."""
    if x.ndim != 4:
        raise ValueError(
            f"{model}: input x must be NHWC (N, H, W, C), expected rank 4; received shape "
            f"{tuple(x.shape)}"
        )
    # An image 1, 3 or 4 rows high with more than 4 channels is an (N, C, H, W) batch.
    if x.shape[1] in (1, 3, 4) and x.shape[3] > 4:
        raise ValueError(
            f"{model}: input x has shape {tuple(x.shape)}, which looks like NCHW (channels "
            f"first, as in PyTorch); jaxcnn models take NHWC (N, H, W, C): pass "
            f"x.transpose(0, 2, 3, 1), of shape {(x.shape[0], x.shape[2], x.shape[3], x.shape[1])}"
        )
    if x.shape[1] < min_side or x.shape[2] < min_side:
        raise ValueError(
            f"{model}: input x is too small for the network's strides: expected "
            f"(N, H, W, C) with H, W >= {min_side}; received shape {tuple(x.shape)}"
        )


def conv_fn(conv_impl: str) -> Callable[..., jax.Array]:
    """The convolution of kernels `conv_impl`, for nn.Conv's `conv_general_dilated=`."""
    return kernels.get(conv_impl).conv
