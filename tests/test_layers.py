"""The alternative convolution algorithms and the fused max pool equal XLA's, gradients too."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models
from jaxcnn.models import layers

NHWC = ("NHWC", "HWIO", "NHWC")
# (H, W, Cin, Cout, kernel, stride, padding)
CONV_CASES = [
    (12, 13, 1, 4, 5, 1, "VALID"),
    (11, 11, 3, 5, 3, 2, "SAME"),
    (9, 10, 2, 3, 3, 1, ((1, 1), (2, 0))),
    (10, 9, 1, 6, 4, 2, ((2, 1), (1, 2))),
    (8, 8, 4, 2, 1, 2, "VALID"),
    (2, 3, 8, 4, 3, 1, ((1, 1), (1, 1))),  # a map smaller than the kernel ("auto": patches)
    (4, 5, 6, 3, 3, 2, ((1, 1), (1, 1))),  # an output map smaller than the kernel
]


def _xla_conv(x, w, stride, padding):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=NHWC)


def _conv_with(impl: str):
    fn = layers.conv_impl(impl)

    def conv(x, w, stride, padding):
        numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
        return fn(x, w, (stride, stride), padding, dimension_numbers=numbers)

    return conv


def _value_and_grads(conv, x, w, stride, padding, cotangent):
    """conv(x, w) and the gradients of <conv(x, w), cotangent> w.r.t. x and w."""
    out, pullback = jax.vjp(lambda x, w: conv(x, w, stride, padding), x, w)
    return (out, *pullback(cotangent))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_impls_match_xla_with_gradients(case):
    h, w_, cin, cout, k, stride, padding = case
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, h, w_, cin), np.float32))
    w = jnp.asarray(rng.standard_normal((k, k, cin, cout), np.float32))
    cotangent = jnp.asarray(rng.standard_normal(_xla_conv(x, w, stride, padding).shape,
                                                np.float32))

    @jax.jit
    def all_impls(x, w, g):
        return {impl: _value_and_grads(conv, x, w, stride, padding, g) for impl, conv in
                (("xla", _xla_conv), ("taps", _conv_with("taps")),
                 ("patches", _conv_with("patches")), ("im2col_grad", _conv_with("im2col_grad")),
                 ("auto", _conv_with("auto")))}

    results = all_impls(x, w, cotangent)
    for impl in ("taps", "patches", "im2col_grad", "auto"):
        for a, b in zip(results[impl], results["xla"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=impl)


@pytest.mark.parametrize("impl", ["taps", "patches", "im2col_grad"])
def test_unsupported_configurations_fall_back_to_xla(impl):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 9, 9, 4), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 4), np.float32))
    numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
    kwargs = {"rhs_dilation": (2, 2), "dimension_numbers": numbers, "feature_group_count": 2}
    got = layers.conv_impl(impl)(x, w, (1, 1), "SAME", **kwargs)
    expected = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_unknown_conv_impl_is_named():
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        layers.conv_impl("winograd")
    model = models.get_model("lenet5", 10, conv_impl="winograd")
    with pytest.raises(ValueError, match="'winograd'"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)


def test_nn_conv_with_taps_keeps_params():
    x = jnp.ones((1, 8, 8, 1))

    @jax.jit
    def init_both(key):
        return [nn.Conv(3, (3, 3), conv_general_dilated=fn).init(key, x)
                for fn in (None, layers.conv_taps)]

    plain, taps = init_both(jax.random.key(0))
    assert jax.tree.map(jnp.shape, plain) == jax.tree.map(jnp.shape, taps)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(taps), strict=True):
        np.testing.assert_array_equal(a, b)


def test_lenet5_conv_impls_share_params_and_outputs():
    x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 1))
    lenets = {impl: models.get_model("lenet5", 10, conv_impl=impl) for impl in ("xla", "auto")}
    shapes = {impl: jax.eval_shape(lambda m=m: m.init(jax.random.key(0), x, train=False))
              for impl, m in lenets.items()}
    assert shapes["auto"] == shapes["xla"]
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), s.dtype),
                             shapes["xla"])

    @jax.jit
    def logits(v, x):
        return {impl: m.apply(v, x, train=False) for impl, m in lenets.items()}

    out = logits(variables, x)
    np.testing.assert_allclose(out["auto"], out["xla"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("avx512,cin,side,stride,expected", [
    (True, 16, 8, 1, "xla"), (True, 1, 8, 1, "xla"),
    (False, 16, 8, 1, "im2col_grad"), (False, 1, 8, 1, "taps"), (False, 4, 8, 1, "xla"),
    (True, 16, 2, 1, "patches"),  # input map smaller than the 3x3 kernel
    (True, 16, 4, 2, "patches"),  # output map (2x2) smaller than the kernel
    (False, 16, 4, 2, "patches"),
])
def test_conv_auto_picks_by_cpu(monkeypatch, avx512, cin, side, stride, expected):
    """AVX-512 CPUs get XLA's convolution; the rewrites only where they were measured faster."""
    monkeypatch.setattr(layers, "cpu_has_avx512", lambda: avx512)
    x, w = jnp.ones((2, side, side, cin)), jnp.ones((3, 3, cin, 4))

    def loss(x, w):
        return layers.conv_auto(x, w, (stride, stride), ((1, 1), (1, 1)),
                                dimension_numbers=NHWC).sum()

    text = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w))
    xla_conv, im2col = "conv_general_dilated" in text, "concatenate" in text
    used = {(True, True): "im2col_grad", (True, False): "xla",
            (False, True): "patches", (False, False): "taps"}[(xla_conv, im2col)]
    if jax.default_backend() != "cpu":
        expected = "xla"
    assert used == expected


# --- max pooling: the fused running max against reduce_window + select_and_scatter

POOL_CASES = [(2, 2, 0, False), (3, 2, 1, False), (3, 2, 0, True), (3, 1, 1, True),
              (2, 2, 0, True)]


def _reduce_window_max(x, window, stride, pad, ceil_mode):
    pads = [(pad, pad + (layers._ceil_extra(x.shape[axis], window, stride, pad, pad)
                         if ceil_mode else 0)) for axis in (1, 2)]
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1),
                                 (1, stride, stride, 1), [(0, 0), *pads, (0, 0)])


def _tied_input(seed: int) -> jax.Array:
    """ReLU-like input with many exact ties (zeros and repeated values) inside windows."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((2, 13, 14, 3)), 0).round(1)
    return jnp.asarray(x, jnp.float32)


@pytest.mark.parametrize("window,stride,pad,ceil_mode", POOL_CASES)
def test_max_pool_matches_reduce_window_including_tied_gradients(window, stride, pad, ceil_mode):
    x = _tied_input(0)

    def ours(x):
        return layers.pool2d(x, "max", window, stride, ((pad, pad), (pad, pad)), ceil_mode)

    def reference(x):
        return _reduce_window_max(x, window, stride, pad, ceil_mode)

    shape = jax.eval_shape(reference, x).shape
    rng = np.random.default_rng(1)
    cotangent = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    tangent = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

    @jax.jit
    def both(x, cotangent, tangent):
        results = {}
        for name, fn in (("ours", ours), ("reference", reference)):
            out, pullback = jax.vjp(fn, x)
            results[name] = (out, pullback(cotangent)[0])
        results["jvp"] = jax.jvp(ours, (x,), (tangent,))[1]  # forward mode works too
        return results

    r = both(x, cotangent, tangent)
    np.testing.assert_array_equal(r["ours"][0], r["reference"][0])
    np.testing.assert_array_equal(r["ours"][1], r["reference"][1])
    np.testing.assert_allclose(jnp.vdot(r["jvp"], cotangent), jnp.vdot(r["ours"][1], tangent),
                               rtol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_propagates_nan(stride):
    x = _tied_input(3).at[0, 4, 4, 1].set(jnp.nan)
    out, expected = jax.jit(lambda x: (layers.pool2d(x, "max", 3, stride, ((1, 1), (1, 1))),
                                       _reduce_window_max(x, 3, stride, 1, False)))(x)
    np.testing.assert_array_equal(jnp.isnan(out), jnp.isnan(expected))
    assert bool(jnp.isnan(out).any())


# --- materialize: identity in value and derivatives, a fusion boundary only when differentiated


@pytest.mark.parametrize("first", [1.5, float("nan")])
def test_materialize_is_the_identity(first):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 5)), jnp.float32)
    x = x.at[0, 0, 0, 0].set(first)  # NaN first: the conditional's other branch
    weights = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)

    def f(x):
        return jnp.sum(jnp.tanh(layers.materialize(x * 2.0)) * weights)

    def g(x):
        return jnp.sum(jnp.tanh(x * 2.0) * weights)

    np.testing.assert_array_equal(jax.jit(layers.materialize)(x), x)
    np.testing.assert_array_equal(jax.jit(jax.grad(f))(x), jax.jit(jax.grad(g))(x))
    tangent = jnp.ones_like(x)
    np.testing.assert_array_equal(jax.jvp(f, (x,), (tangent,))[1], jax.jvp(g, (x,), (tangent,))[1])


def test_materialize_adds_a_conditional_only_when_differentiated():
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))

    def loss(x, w):
        y = jnp.maximum(x * 2.0 + 1.0, 0.0)
        return layers.conv_auto(y, w, (1, 1), "SAME", dimension_numbers=NHWC).sum()

    forward = jax.jit(loss).lower(x, w).compile().as_text()
    # Differentiated w.r.t. x too: like every conv input after the first in a network.
    train = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    assert "conditional(" not in forward
    assert ("conditional(" in train) == (jax.default_backend() == "cpu")
