r"""Micro-benchmarks behind jaxcnn/kernels/xla_cpu.py: max pooling and convolution gradients.

  python benchmarks/ops.py

Times, in one process with interleaved repeats (median ms), forward and gradient of
  - max pooling: reduce_window + select_and_scatter (kernels "xla") vs the fused views
    (kernels "xla_cpu"), both through layers.pool2d;
  - convolution: each algorithm of kernels.KERNELS, forward and gradients w.r.t. input
    and kernel, at the shapes of LeNet-5 and of a CIFAR ResNet's first stage.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 7, "interleaved timed repeats")
flags.DEFINE_integer("calls", 5, "calls per timed repeat")

# name, input (N, H, W, C), window, stride, padding, ceil_mode
POOLS = [
    ("lenet pool1", (256, 28, 28, 6), 2, 2, 0, False),
    ("vgg 2x2/2", (16, 64, 64, 64), 2, 2, 0, False),
    ("resnet stem 3x3/2 p1", (32, 56, 56, 64), 3, 2, 1, False),
    ("googlenet 3x3/2 ceil", (32, 56, 56, 64), 3, 2, 0, True),
    ("inception branch 3x3/1 p1", (32, 14, 14, 480), 3, 1, 1, True),
]
# name, input (N, H, W, Cin), kernel (KH, KW, Cin, Cout), stride, padding
CONVS = [
    ("lenet conv1", (256, 32, 32, 1), (5, 5, 1, 6), 1, "VALID"),
    ("lenet conv2", (256, 14, 14, 6), (5, 5, 6, 16), 1, "VALID"),
    ("cifar resnet 16->16", (128, 32, 32, 16), (3, 3, 16, 16), 1, ((1, 1), (1, 1))),
    ("resnet 64->64 @28", (32, 28, 28, 64), (3, 3, 64, 64), 1, ((1, 1), (1, 1))),
]


def timed(functions: dict[str, tuple[Callable, tuple]]) -> dict[str, float]:
    """Median ms per call of each (jitted fn, args), repeats interleaved across functions."""
    for fn, args in functions.values():
        jax.block_until_ready(fn(*args))
    times: dict[str, list[float]] = {key: [] for key in functions}
    for _ in range(FLAGS.repeats):
        for key, (fn, args) in functions.items():
            start = time.perf_counter()
            for _ in range(FLAGS.calls):
                out = fn(*args)
            jax.block_until_ready(out)
            times[key].append((time.perf_counter() - start) / FLAGS.calls * 1e3)
    return {key: statistics.median(v) for key, v in times.items()}


def pool_functions(rng: np.random.Generator) -> dict[str, tuple[Callable, tuple]]:
    from jaxcnn.models import layers

    functions = {}
    for name, shape, window, stride, pad, ceil_mode in POOLS:
        x = jnp.asarray(np.maximum(rng.standard_normal(shape), 0), jnp.float32)
        impls = {
            kernels: lambda x, w=window, s=stride, p=pad, c=ceil_mode, k=kernels:
                layers.pool2d(x, "max", w, s, ((p, p), (p, p)), c, k)
            for kernels in ("xla", "xla_cpu")
        }
        for impl, fn in impls.items():
            cotangent = jnp.ones(jax.eval_shape(fn, x).shape, jnp.float32)
            functions[f"pool | {name} | {impl} | fwd"] = (jax.jit(fn), (x,))
            functions[f"pool | {name} | {impl} | grad"] = (
                jax.jit(lambda x, g, fn=fn: jax.vjp(fn, x)[1](g)[0]), (x, cotangent))
    return functions


def conv_functions(rng: np.random.Generator) -> dict[str, tuple[Callable, tuple]]:
    from jaxcnn import kernels

    functions = {}
    for name, shape, kernel_shape, stride, padding in CONVS:
        x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        w = jnp.asarray(rng.standard_normal(kernel_shape), jnp.float32)
        numbers = jax.lax.conv_dimension_numbers(shape, kernel_shape, ("NHWC", "HWIO", "NHWC"))
        for impl in ("xla", "taps", "patches", "im2col_grad"):
            def conv(x, w, fn=kernels.get(impl).conv, s=stride, p=padding, dn=numbers):
                return fn(x, w, (s, s), p, dimension_numbers=dn)

            g = jnp.ones(jax.eval_shape(conv, x, w).shape, jnp.float32)
            functions[f"conv | {name} | {impl} | fwd"] = (jax.jit(conv), (x, w))
            functions[f"conv | {name} | {impl} | grad x,w"] = (
                jax.jit(lambda x, w, g, conv=conv: jax.vjp(conv, x, w)[1](g)), (x, w, g))
            functions[f"conv | {name} | {impl} | grad w"] = (
                jax.jit(lambda x, w, g, conv=conv: jax.vjp(lambda w: conv(x, w), w)[1](g)),
                (x, w, g))
    return functions


def main(argv: list[str]) -> None:
    del argv
    rng = np.random.default_rng(0)
    for group in (pool_functions, conv_functions):
        print("op | shape | implementation | pass | ms")
        print("--- | --- | --- | --- | ---")
        for key, ms in timed(group(rng)).items():
            print(f"{key} | {ms:.2f}", flush=True)
        print()


if __name__ == "__main__":
    app.run(main)
