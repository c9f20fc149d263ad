"""XLA:CPU's fast paths: convolution and max-pool algorithms, with the measurements behind each.

Every function here computes exactly what XLA's own op computes (values and gradients; tested
in tests/test_kernels.py) and only changes how XLA:CPU compiles it. They are chosen by name
through `jaxcnn.kernels` (`conv_impl="xla_cpu"`); nothing here looks at the backend: the
trainer picks these for CPU meshes (`kernels.choose`). Measurements: benchmarks/README.md
("XLA:CPU weak spots", machine A = Zen 3 AVX2, machine B = Zen 4 AVX-512) and benchmarks/ops.py.

1. Max-pool gradient: reduce_window max differentiates into select_and_scatter, a scalar loop
   on XLA:CPU; `max_pool` (running max over strided views) is 5-10x faster in the gradient.
2. Kernel gradients on large maps (AVX2): XLA computes dL/dkernel as a convolution windowed by
   the whole output map, 2-3 GFLOP/s (200-250 ms per CIFAR 16->16 layer at batch 128);
   `conv_im2col_grad` makes it one matmul.
3. Kernels larger than the input or output map: XLA swaps the operands into a convolution
   ~100x slower (0.75 s per layer, ResNet-50's last stage at 64x64; 312 of 1,237 ms of a
   ResNet-50 step); `conv_patches` (im2col + one matmul) takes milliseconds.
4. One input channel (LeNet-5's conv1): `conv_taps` is faster at inference; in training XLA's
   convolution wins (paired A/B, 30 rounds: taps 0.86x at batch 64, 1.01x at 256), so
   `conv_auto` differentiates XLA's convolution there.
5. AVX-512 CPUs (machine B): XLA's YNNPACK convolutions win (CIFAR 16->16 kernel gradient
   10 ms vs 66 ms with im2col), so `conv_auto` keeps XLA's convolution there (rules 2 and 4
   only without AVX-512F; rule 3 everywhere).
7. `materialize`: XLA:CPU re-computes BatchNorm/ReLU/residual chains inside the transposes
   feeding kernel gradients (273 of 590 ms of a ResNet-20 step); a conditional is a fusion
   boundary it keeps: transposes 273 -> 28 ms, ResNet-20 train 1.21x (8-round A/B).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Pads = Sequence[tuple[int, int]]
ConvPadding = str | Sequence[tuple[int, int]]


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


def max_pool(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    """Max pooling of NHWC `x` (explicit (lo, hi) pads for H and W) as a running max over the
    window's strided views.

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


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _taps_then_xla(lhs, rhs, strides, pads, precision, preferred_element_type):
    return conv_taps(lhs, rhs, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                     precision=precision, preferred_element_type=preferred_element_type)


@_taps_then_xla.defjvp
def _taps_then_xla_jvp(strides, pads, precision, preferred_element_type, primals, tangents):
    def xla(lhs, rhs):
        return jax.lax.conv_general_dilated(
            lhs, rhs, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=precision, preferred_element_type=preferred_element_type)

    return jax.jvp(xla, primals, tangents)


@_nhwc_conv
def conv_taps_inference(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, int], pads: Pads,
                        precision=None, preferred_element_type=None) -> jax.Array:
    """conv_taps when not differentiated; XLA's convolution (value and derivatives) when it is.

    Rule 4: the taps win LeNet-5's one-channel conv1 at inference and lose in training.
    """
    return _taps_then_xla(lhs, rhs, strides, pads, precision, preferred_element_type)


def conv_auto(
    lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: ConvPadding,
    *args, **kwargs,
) -> jax.Array:
    """The fastest measured on XLA:CPU, per layer: conv_patches where the input or output map
    is smaller than the kernel (rule 3); else, on AVX-512 CPUs, XLA's convolution (rule 5);
    on others conv_taps_inference for inputs of at most TAPS_MAX_CHANNELS channels (rule 4)
    and conv_im2col_grad from IM2COL_GRAD_MIN_CHANNELS on (rule 2). The input is
    `materialize`d first (rule 7). Other layouts and ranks: XLA's convolution, unchanged."""
    impl = jax.lax.conv_general_dilated
    if rhs.ndim == 4 and lhs.ndim == 4:
        lhs = materialize(lhs)
        if _kernel_exceeds_map(lhs, rhs, window_strides, padding):
            impl = conv_patches
        elif cpu_has_avx512():
            pass
        elif rhs.shape[2] <= TAPS_MAX_CHANNELS:
            impl = conv_taps_inference
        elif rhs.shape[2] >= IM2COL_GRAD_MIN_CHANNELS:
            impl = conv_im2col_grad
    return impl(lhs, rhs, window_strides, padding, *args, **kwargs)
