"""Layers shared by the model families: pooling as modules (so summaries list them), and
convolution algorithms that plug into flax's nn.Conv (`conv_general_dilated=`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
        return _max_over_views(x, window, stride, pads)
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, full)
    if not ceil_mode:
        return summed / (window * window)
    # Count the real + symmetric-pad positions in each window (excludes ceil-mode overhang).
    sym = [(0, 0), *[tuple(p) for p in padding], (0, 0)]
    ones = jnp.pad(jnp.ones((1, *x.shape[1:3], 1), x.dtype), sym)
    extra = [(0, 0)] + [(0, hi - s[1]) for (_, hi), s in zip(pads, sym[1:3])] + [(0, 0)]
    counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims, strides, extra)
    return summed / counts


def _window_views(
    x: jax.Array, window: tuple[int, int], stride: tuple[int, int], pads: Pads,
    pad_value: float = 0.0,
) -> list[jax.Array]:
    """The window[0]*window[1] strided (N, OH, OW, C) views of padded NHWC `x`, row-major.

    View (a, b) holds the element at offset (a, b) of every window; `pads` may be negative.
    """
    config = [(0, 0, 0), *[(lo, hi, 0) for lo, hi in pads], (0, 0, 0)]
    x = jax.lax.pad(x, jnp.array(pad_value, x.dtype), config)
    n, h, w, c = x.shape
    out_h, out_w = (h - window[0]) // stride[0] + 1, (w - window[1]) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"window {window} does not fit the padded input of shape {x.shape}")
    return [
        jax.lax.slice(x, (0, a, b, 0),
                      (n, a + (out_h - 1) * stride[0] + 1, b + (out_w - 1) * stride[1] + 1, c),
                      (1, stride[0], stride[1], 1))
        for a in range(window[0]) for b in range(window[1])
    ]


def _running_max(views: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Elementwise max over `views` and the index of the first view that attains it.

    A NaN counts as larger than anything, so NaNs propagate as in reduce_window max.
    """
    best, first = views[0], jnp.zeros(views[0].shape, jnp.int32)
    for index, view in enumerate(views[1:], start=1):
        later = (view > best) | jnp.isnan(view)
        best, first = jnp.where(later, view, best), jnp.where(later, index, first)
    return best, first


@jax.custom_jvp
def _first_max(*views: jax.Array) -> jax.Array:
    """Max over views whose derivative is that of the first maximal view (ties included)."""
    return _running_max(views)[0]


@_first_max.defjvp
def _first_max_jvp(primals, tangents):
    best, first = _running_max(primals)
    return best, jax.lax.select_n(first, *tangents)


def _max_over_views(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    """Max pooling as a running max over the window's strided views.

    Same values as reduce_window max, and the same gradient: all of it goes to the first
    maximal element in row-major window order, as XLA's select_and_scatter does. XLA
    fuses this into elementwise loops; its gradient is 5-10x faster on CPU than
    select_and_scatter (benchmarks/README.md).
    """
    views = _window_views(x, (window, window), (stride, stride), pads, -jnp.inf)
    # Differentiating the select chain is fastest for strided pools; for stride 1 (views
    # overlapping almost entirely) XLA re-computes the chain per view, so route the
    # gradient by the saved argmax instead.
    return _first_max(*views) if stride == 1 else _running_max(views)[0]


class _Pool(nn.Module):
    """Pooling of kind KIND (window, stride, symmetric padding, torch ceil_mode)."""

    KIND: ClassVar[str]
    window: int
    stride: int
    padding: Pads = ((0, 0), (0, 0))
    ceil_mode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return pool2d(x, self.KIND, self.window, self.stride, self.padding, self.ceil_mode)


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


# --- convolution algorithms with lax.conv_general_dilated's signature (NHWC / HWIO only).


def _is_plain_2d(lhs: jax.Array, rhs: jax.Array, lhs_dilation, rhs_dilation, dimension_numbers,
                 feature_group_count: int) -> bool:
    """True for an undilated, ungrouped 2-D NHWC x HWIO -> NHWC convolution."""
    if lhs.ndim != 4 or rhs.ndim != 4 or feature_group_count != 1:
        return False
    if any(d != 1 for d in (*(lhs_dilation or (1, 1)), *(rhs_dilation or (1, 1)))):
        return False
    nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    given = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return given == nhwc


def _explicit_pads(lhs: jax.Array, rhs: jax.Array, strides: Sequence[int],
                   padding: ConvPadding) -> list[tuple[int, int]]:
    """lax's 'SAME' / 'VALID' / explicit padding as explicit (lo, hi) pairs for H and W."""
    if isinstance(padding, str):
        return jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    return [tuple(p) for p in padding]


def _nhwc_conv(core: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """`core(lhs, rhs, strides, pads, precision, preferred_element_type)` with
    lax.conv_general_dilated's signature: plain 2-D NHWC x HWIO convolutions reach `core`
    (padding made explicit); others (dilation, groups, other layouts) go to lax's."""

    @functools.wraps(core)
    def conv(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
             padding: ConvPadding, lhs_dilation=None, rhs_dilation=None,
             dimension_numbers=None, feature_group_count: int = 1, precision=None,
             preferred_element_type=None, **kwargs) -> jax.Array:
        if kwargs.get("batch_group_count", 1) != 1 or not _is_plain_2d(
                lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count):
            return jax.lax.conv_general_dilated(
                lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                dimension_numbers, feature_group_count, precision=precision,
                preferred_element_type=preferred_element_type, **kwargs)
        pads = tuple(tuple(p) for p in _explicit_pads(lhs, rhs, window_strides, padding))
        return core(lhs, rhs, tuple(window_strides), pads, precision, preferred_element_type)

    return conv


@_nhwc_conv
def conv_taps(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, int], pads: Pads,
              precision=None, preferred_element_type=None) -> jax.Array:
    """Convolution as a sum over kernel taps (a, b) of 1x1 convs of strided input views.

    NHWC input, HWIO kernel -> NHWC. With one input channel each term is a broadcast
    multiply and XLA fuses the whole sum, its gradients included, into elementwise loops:
    several times faster on CPU than XLA's convolution for LeNet's first layer.
    """
    views = _window_views(lhs, rhs.shape[:2], strides, pads)
    taps = rhs.reshape(-1, *rhs.shape[2:])
    out = None
    for view, tap in zip(views, taps):
        term = jax.lax.dot_general(view, tap, (((3,), (0,)), ((), ())), precision=precision,
                                   preferred_element_type=preferred_element_type)
        out = term if out is None else out + term
    return out


@_nhwc_conv
def conv_patches(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, int], pads: Pads,
                 precision=None, preferred_element_type=None) -> jax.Array:
    """Convolution as im2col + one matmul: (N*OH*OW, KH*KW*Cin) patches @ (KH*KW*Cin, Cout).

    The patches are the strided input views concatenated on channels, in the order of
    the HWIO kernel's rows.
    """
    patches = jnp.concatenate(_window_views(lhs, rhs.shape[:2], strides, pads), axis=-1)
    return jax.lax.dot_general(patches, rhs.reshape(-1, rhs.shape[-1]), (((3,), (0,)), ((), ())),
                               precision=precision,
                               preferred_element_type=preferred_element_type)


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              pads: tuple[tuple[int, int], ...], precision) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, strides, pads, precision=precision,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def kernel_grad_im2col(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...],
                       strides: tuple[int, int], pads: Pads, precision=None) -> jax.Array:
    """d<conv(x, w), g>/dw as im2col(x)^T @ g: (KH*KW*Cin, N*OH*OW) @ (N*OH*OW, Cout)."""
    patches = jnp.concatenate(_window_views(x, kernel_shape[:2], strides, pads), axis=-1)
    grad = jax.lax.dot_general(patches, g, (((0, 1, 2), (0, 1, 2)), ((), ())),
                               precision=precision)
    return grad.reshape(kernel_shape).astype(g.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_im2col_grad(x, kernel, strides, pads, precision):
    return _xla_conv(x, kernel, strides, pads, precision)


def _conv_im2col_grad_fwd(x, kernel, strides, pads, precision):
    return _xla_conv(x, kernel, strides, pads, precision), (x, kernel)


def _conv_im2col_grad_bwd(strides, pads, precision, residuals, g):
    x, kernel = residuals
    _, input_grad = jax.vjp(lambda x: _xla_conv(x, kernel, strides, pads, precision), x)
    return (input_grad(g)[0],
            kernel_grad_im2col(x, g, kernel.shape, strides, pads, precision))


_conv_im2col_grad.defvjp(_conv_im2col_grad_fwd, _conv_im2col_grad_bwd)


@_nhwc_conv
def conv_im2col_grad(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, int], pads: Pads,
                     precision=None, preferred_element_type=None) -> jax.Array:
    """XLA's convolution and input gradient, with the kernel gradient as im2col + one matmul.

    XLA:CPU without its AVX-512 kernels computes the kernel gradient as a convolution whose
    window is the whole output map, at a few GFLOP/s for large maps; the matmul runs near
    the machine's peak. A custom VJP, so forward-mode differentiation (jax.jvp) is not
    available; with a preferred_element_type, XLA's convolution is used.
    """
    if preferred_element_type is not None:
        return jax.lax.conv_general_dilated(
            lhs, rhs, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=precision, preferred_element_type=preferred_element_type)
    return _conv_im2col_grad(lhs, rhs, strides, pads, precision)


# Input channels up to which "auto" picks conv_taps, and from which it picks
# conv_im2col_grad, on CPUs without AVX-512 (measured in benchmarks/README.md).
TAPS_MAX_CHANNELS = 1
IM2COL_GRAD_MIN_CHANNELS = 8


@functools.cache
def cpu_has_avx512() -> bool:
    """True on a CPU with AVX-512F (from /proc/cpuinfo; False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def _kernel_exceeds_map(lhs: jax.Array, rhs: jax.Array, strides: Sequence[int],
                       padding: ConvPadding) -> bool:
    """True when a kernel side is larger than the input or the output map's side."""
    pads = _explicit_pads(lhs, rhs, strides, padding)
    for axis in (0, 1):
        n, k, (lo, hi) = lhs.shape[1 + axis], rhs.shape[axis], pads[axis]
        out = (n + lo + hi - k) // strides[axis] + 1
        if n < k or out < k:
            return True
    return False


def _own_buffer(pred: jax.Array, v: jax.Array) -> jax.Array:
    """v through a conditional: XLA:CPU fuses nothing across it. The second branch (taken
    only when pred is False) returns v as well."""
    return jax.lax.cond(pred, lambda v: v, lambda v: v + 0.0, v)


@jax.custom_jvp
def materialize(x: jax.Array) -> jax.Array:
    """x; when differentiated, x and its tangent (so also the cotangent in the backward
    pass) are computed once into their own buffers of the compiled program.

    In a train step XLA:CPU otherwise re-computes the elementwise chain producing a
    convolution's input (BatchNorm, ReLU, the residual adds of several blocks), and the
    chain producing its gradient, inside each consumer fusion, e.g. the transposes that
    feed the kernel gradient. It strips optimization_barrier but keeps a conditional as a
    fusion boundary. Without autodiff (inference) x passes through untouched.
    """
    return x


@materialize.defjvp
def _materialize_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    if x.size == 0:
        return x, t
    first = x.reshape(-1)[0]
    pred = first == first  # True unless NaN; data-dependent, so XLA keeps the conditional
    return _own_buffer(pred, x), _own_buffer(pred, t)


def conv_auto(
    lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: ConvPadding,
    *args, **kwargs,
) -> jax.Array:
    """The fastest measured on CPU: conv_patches where the input or output map is smaller
    than the kernel; else, on AVX-512 CPUs, XLA's convolution; on others conv_taps for
    inputs of at most TAPS_MAX_CHANNELS channels and conv_im2col_grad from
    IM2COL_GRAD_MIN_CHANNELS on; on CPU the input is `materialize`d first. Elsewhere
    (and on other backends) XLA's convolution, unchanged."""
    impl = jax.lax.conv_general_dilated
    if jax.default_backend() == "cpu" and rhs.ndim == 4 and lhs.ndim == 4:
        lhs = materialize(lhs)
        if _kernel_exceeds_map(lhs, rhs, window_strides, padding):
            # A kernel larger than the input or output map makes XLA:CPU swap the operands
            # (of the convolution or of its input gradient) into a convolution that runs
            # ~100x slower than this one matmul.
            impl = conv_patches
        elif cpu_has_avx512():
            # XLA:CPU's YNNPACK kernel gradients: 10 ms for a CIFAR 16->16 layer here vs
            # 150 ms on the AVX2 machine the rules below were measured on; they beat the
            # rewrites (benchmarks/README.md).
            pass
        elif rhs.shape[2] <= TAPS_MAX_CHANNELS:
            impl = conv_taps
        elif rhs.shape[2] >= IM2COL_GRAD_MIN_CHANNELS:
            impl = conv_im2col_grad
    return impl(lhs, rhs, window_strides, padding, *args, **kwargs)


CONV_IMPLS: dict[str, Callable[..., jax.Array]] = {
    "auto": conv_auto,
    "xla": jax.lax.conv_general_dilated,
    "taps": conv_taps,
    "patches": conv_patches,
    "im2col_grad": conv_im2col_grad,
}


def conv_impl(name: str) -> Callable[..., jax.Array]:
    """The convolution function called `name` (for nn.Conv's `conv_general_dilated=`)."""
    if name not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {sorted(CONV_IMPLS)}; received {name!r}")
    return CONV_IMPLS[name]
