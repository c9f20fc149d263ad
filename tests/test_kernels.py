"""The kernels: XLA:CPU's convolution algorithms and max pool equal XLA's ops, gradients too;
the trainer's choice of kernels per platform."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import kernels, models
from jaxcnn.kernels import xla_cpu
from jaxcnn.models import layers

NHWC = ("NHWC", "HWIO", "NHWC")
# (H, W, Cin, Cout, kernel, stride, padding)
CONV_CASES = [
    (12, 13, 1, 4, 5, 1, "VALID"),
    (11, 11, 3, 5, 3, 2, "SAME"),
    (9, 10, 2, 3, 3, 1, ((1, 1), (2, 0))),
    (10, 9, 1, 6, 4, 2, ((2, 1), (1, 2))),
    (8, 8, 4, 2, 1, 2, "VALID"),
    (2, 3, 8, 4, 3, 1, ((1, 1), (1, 1))),  # a map smaller than the kernel (xla_cpu: patches)
    (4, 5, 6, 3, 3, 2, ((1, 1), (1, 1))),  # an output map smaller than the kernel
]


def _xla_conv(x, w, stride, padding):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=NHWC)


def _conv_with(impl: str):
    fn = kernels.get(impl).conv

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
                 ("xla_cpu", _conv_with("xla_cpu")))}

    results = all_impls(x, w, cotangent)
    for impl in ("taps", "patches", "im2col_grad", "xla_cpu"):
        for a, b in zip(results[impl], results["xla"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=impl)


@pytest.mark.parametrize("impl", ["taps", "patches", "im2col_grad"])
def test_unsupported_configurations_fall_back_to_xla(impl):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((1, 9, 9, 4), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 4), np.float32))
    numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, NHWC)
    kwargs = {"rhs_dilation": (2, 2), "dimension_numbers": numbers, "feature_group_count": 2}
    got = kernels.get(impl).conv(x, w, (1, 1), "SAME", **kwargs)
    expected = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_unknown_conv_impl_is_named():
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        kernels.get("winograd")
    model = models.get_model("lenet5", 10, conv_impl="winograd")
    with pytest.raises(ValueError, match="'winograd'"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)


def test_nn_conv_with_taps_keeps_params():
    x = jnp.ones((1, 8, 8, 1))

    @jax.jit
    def init_both(key):
        return [nn.Conv(3, (3, 3), conv_general_dilated=fn).init(key, x)
                for fn in (None, xla_cpu.conv_taps)]

    plain, taps = init_both(jax.random.key(0))
    assert jax.tree.map(jnp.shape, plain) == jax.tree.map(jnp.shape, taps)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(taps), strict=True):
        np.testing.assert_array_equal(a, b)


def test_lenet5_conv_impls_share_params_and_outputs():
    x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 1))
    lenets = {impl: models.get_model("lenet5", 10, conv_impl=impl) for impl in ("xla", "xla_cpu")}
    shapes = {impl: jax.eval_shape(lambda m=m: m.init(jax.random.key(0), x, train=False))
              for impl, m in lenets.items()}
    assert shapes["xla_cpu"] == shapes["xla"]
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), s.dtype),
                             shapes["xla"])

    @jax.jit
    def logits(v, x):
        return {impl: m.apply(v, x, train=False) for impl, m in lenets.items()}

    out = logits(variables, x)
    np.testing.assert_allclose(out["xla_cpu"], out["xla"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("avx512,cin,side,stride,expected", [
    (True, 16, 8, 1, "xla"), (True, 1, 8, 1, "xla"),
    (False, 16, 8, 1, "im2col_grad"), (False, 4, 8, 1, "xla"),
    (False, 1, 8, 1, "xla"),  # one channel: taps at inference only (next test)
    (True, 16, 2, 1, "patches"),  # input map smaller than the 3x3 kernel
    (True, 16, 4, 2, "patches"),  # output map (2x2) smaller than the kernel
    (False, 16, 4, 2, "patches"),
])
def test_conv_auto_picks_by_cpu(monkeypatch, avx512, cin, side, stride, expected):
    """AVX-512 CPUs get XLA's convolution; the rewrites only where they were measured faster."""
    monkeypatch.setattr(xla_cpu, "cpu_has_avx512", lambda: avx512)
    x, w = jnp.ones((2, side, side, cin)), jnp.ones((3, 3, cin, 4))

    def loss(x, w):
        return xla_cpu.conv_auto(x, w, (stride, stride), ((1, 1), (1, 1)),
                                 dimension_numbers=NHWC).sum()

    assert _algorithm(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w)) == expected


def _algorithm(jaxpr) -> str:
    text = str(jaxpr)
    xla_conv, im2col = "conv_general_dilated" in text, "concatenate" in text
    return {(True, True): "im2col_grad", (True, False): "xla",
            (False, True): "patches", (False, False): "taps"}[(xla_conv, im2col)]


@pytest.mark.parametrize("avx512,expected", [(False, "taps"), (True, "xla")])
def test_one_channel_conv_uses_taps_at_inference_without_avx512(monkeypatch, avx512, expected):
    monkeypatch.setattr(xla_cpu, "cpu_has_avx512", lambda: avx512)
    x, w = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 4))
    jaxpr = jax.make_jaxpr(lambda x, w: xla_cpu.conv_auto(x, w, (1, 1), "SAME",
                                                          dimension_numbers=NHWC))(x, w)
    assert _algorithm(jaxpr) == expected


# --- max pooling: the fused running max against reduce_window + select_and_scatter

POOL_CASES = [(2, 2, 0, False), (3, 2, 1, False), (3, 2, 0, True), (3, 1, 1, True),
              (2, 2, 0, True)]


def _reduce_window_max(x, window, stride, pad, ceil_mode):
    """The reference: XLA's max pool (kernels.xla_max_pool) with the same padding."""
    return layers.pool2d(x, "max", window, stride, ((pad, pad), (pad, pad)), ceil_mode, "xla")


def _tied_input(seed: int) -> jax.Array:
    """ReLU-like input with many exact ties (zeros and repeated values) inside windows."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((2, 13, 14, 3)), 0).round(1)
    return jnp.asarray(x, jnp.float32)


@pytest.mark.parametrize("window,stride,pad,ceil_mode", POOL_CASES)
def test_max_pool_matches_reduce_window_including_tied_gradients(window, stride, pad, ceil_mode):
    x = _tied_input(0)

    def ours(x):
        return layers.pool2d(x, "max", window, stride, ((pad, pad), (pad, pad)), ceil_mode,
                             "xla_cpu")

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
    out, expected = jax.jit(lambda x: (layers.pool2d(x, "max", 3, stride, ((1, 1), (1, 1)),
                                                     impl="xla_cpu"),
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
        return jnp.sum(jnp.tanh(xla_cpu.materialize(x * 2.0)) * weights)

    def g(x):
        return jnp.sum(jnp.tanh(x * 2.0) * weights)

    np.testing.assert_array_equal(jax.jit(xla_cpu.materialize)(x), x)
    np.testing.assert_array_equal(jax.jit(jax.grad(f))(x), jax.jit(jax.grad(g))(x))
    tangent = jnp.ones_like(x)
    np.testing.assert_array_equal(jax.jvp(f, (x,), (tangent,))[1], jax.jvp(g, (x,), (tangent,))[1])


def test_materialize_adds_a_conditional_only_when_differentiated():
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))

    def loss(x, w):
        y = jnp.maximum(x * 2.0 + 1.0, 0.0)
        return xla_cpu.conv_auto(y, w, (1, 1), "SAME", dimension_numbers=NHWC).sum()

    forward = jax.jit(loss).lower(x, w).compile().as_text()
    # Differentiated w.r.t. x too: like every conv input after the first in a network.
    train = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    assert "conditional(" not in forward
    assert "conditional(" in train


# --- the trainer's choice, and the same choice in every family


@pytest.mark.parametrize("requested,platform,expected", [
    ("auto", "cpu", "xla_cpu"), ("auto", "gpu", "xla"), ("auto", "tpu", "xla"),
    ("auto", "cuda", "xla"), ("xla", "cpu", "xla"), ("xla_cpu", "gpu", "xla_cpu"),
    ("taps", "cpu", "taps"),
])
def test_choose_gives_xla_ops_off_cpu(requested, platform, expected):
    assert kernels.choose(requested, platform) == expected


def test_choose_names_a_bad_request():
    with pytest.raises(ValueError, match=r"conv_impl must be 'auto' or one of .*'winograd'"):
        kernels.choose("winograd", "cpu")


def _train_step_hlo(conv_impl: str, compiled: bool = True) -> str:
    """The HLO text of LeNet-5's compiled (else lowered) train step, as the trainer builds it."""
    from jaxcnn import train
    from jaxcnn.data import ArrayDataset
    from jaxcnn.tasks import classification

    config = train.default_config()
    config.update({"conv_impl": conv_impl, "optimizer": "momentum", "schedule": "constant"})
    rng = np.random.default_rng(0)
    images = rng.random((4, 32, 32, 1), np.float32)
    labels = np.arange(4, dtype=np.int32)
    dataset = ArrayDataset("tiny", images, labels, images, labels, num_classes=10)
    task = classification.make_task(train.resolve_platform(config), dataset)
    schedule = train.make_schedule(config, 1, 1)
    tx = train.make_optimizer(config, schedule)
    train_step, _ = train.make_steps(task, tx, schedule, lambda x: x)
    state = jax.eval_shape(train.init_state(task, tx, 0), jax.random.key(0))
    batch = {"image": jnp.zeros((4, 32, 32, 1)), "label": jnp.zeros((4,), jnp.int32)}
    lowered = jax.jit(train_step).lower(state, batch)
    return lowered.compile().as_text() if compiled else lowered.as_text()


def test_xla_train_step_has_no_conditional_and_no_custom_call():
    xla = _train_step_hlo("xla")
    assert "conditional(" not in xla and "custom-call" not in xla
    assert "reduce-window(" in xla and "convolution(" in xla  # XLA's own max pool and conv
    # The CPU kernels (the trainer's "auto" on CPU) do add conditionals (materialize) and
    # take the max over strided views instead of reduce_window.
    xla_cpu, xla = _train_step_hlo("xla_cpu", compiled=False), _train_step_hlo("xla", False)
    assert "stablehlo.case" in xla_cpu and "stablehlo.case" not in xla
    assert "reduce_window" not in xla_cpu and "reduce_window" in xla


def _small_nets(impl: str) -> dict[str, tuple[nn.Module, int, int]]:
    """One small network per family, built with kernels `impl`: name -> (net, side, channels)."""
    return {
        "lenet5": (models.get_model("lenet5", 5, conv_impl=impl), 32, 1),
        "alexnet": (models.get_model("alexnet", 5, drop_layers=(6, 7), conv_impl=impl), 63, 3),
        "vgg_bn": (models.VGG(((4,), (4, 4)), 5, batch_norm=True, conv_impl=impl), 32, 3),
        "resnet18": (models.get_model("resnet18", 5, widths=(4, 8, 8, 8), conv_impl=impl), 32, 3),
        "resnet20_cifar": (models.get_model("resnet20_cifar", 5, conv_impl=impl), 8, 3),
        "inception_block": (models.InceptionBlock(2, 2, 3, 2, 3, 2, batch_norm=True,
                                                  conv_impl=impl), 6, 3),
        "inception_aux": (models.InceptionAux(5, conv_impl=impl), 14, 3),
        "filter_size_net": (models.get_model("filter_size_net", 5, width=4, conv_impl=impl), 8, 3),
    }


# Compiling both programs takes 10-30 s for these on 2 busy cores: slow (the jaxpr test below
# checks that the choice reaches every conv and pool of every full model).
SLOW_FAMILIES = ("alexnet", "vgg_bn", "resnet18", "resnet20_cifar")


@pytest.mark.parametrize("family", [
    pytest.param(f, marks=pytest.mark.slow) if f in SLOW_FAMILIES else f
    for f in _small_nets("xla")])
def test_every_family_takes_the_kernel_choice_with_equal_outputs_and_gradients(family):
    """Values and input gradients (through every conv and pool gradient) agree; the
    convolution-level tests above cover the kernel gradients."""
    nets = {impl: _small_nets(impl)[family] for impl in ("xla", "xla_cpu")}
    _, side, channels = nets["xla"]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((2, side, side, channels), np.float32))
    shapes = {impl: jax.eval_shape(lambda n=n: n.init(jax.random.key(0), x, train=False))
              for impl, (n, _, _) in nets.items()}
    assert shapes["xla_cpu"] == shapes["xla"]
    variables = jax.tree.map(
        lambda s: jnp.asarray(rng.uniform(0.5, 1.0, s.shape) * 0.3, np.float32), shapes["xla"])

    @jax.jit
    def outputs_and_grads(variables, x):
        def weighted(x, net):
            out = net.apply(variables, x, train=False)
            return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) / out.size), out

        return {impl: jax.grad(weighted, has_aux=True)(x, net)
                for impl, (net, _, _) in nets.items()}

    results = outputs_and_grads(variables, x)
    for got, expected in zip(results["xla_cpu"], results["xla"], strict=True):
        scale = float(jnp.abs(expected).max())
        assert scale > 0
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


# Max pools per network: LeNet-5 2, AlexNet 3, VGG 5, ResNet stem 1, GoogLeNet 4 + 9 blocks.
MAX_POOLS = {"lenet5": 2, "alexnet": 3, "vgg11_bn": 5, "resnet50": 1, "googlenet": 13,
             "googlenet_bn": 13, "filter_size_net": 1}


@pytest.mark.parametrize("name", sorted(MAX_POOLS))
def test_the_choice_reaches_every_pool_and_conv_of_the_full_models(name):
    """xla: every max pool is reduce_window and no conv is rewritten; xla_cpu: none is."""
    shape = (1, 32, 32, models.model_info(name).input_shape[2])
    if name == "alexnet":
        shape = (1, 63, 63, 3)

    def primitives(impl: str) -> str:
        model = models.get_model(name, 5, conv_impl=impl)
        x = jnp.zeros(shape)
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
        jaxpr = jax.make_jaxpr(jax.grad(lambda v, x: model.apply(v, x, train=False).sum(),
                                        argnums=1))(variables, x)
        return str(jaxpr)

    xla, xla_cpu = primitives("xla"), primitives("xla_cpu")
    assert len(re.findall(r"\breduce_window_max\[", xla)) == MAX_POOLS[name]
    assert "reduce_window_max" not in xla_cpu
    assert " cond[" not in xla and " cond[" in xla_cpu  # materialize
