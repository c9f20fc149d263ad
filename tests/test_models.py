"""The classic architectures: exact parameter counts, tables, shapes, MACs and errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import counting, models
from jaxcnn.models import layers
from jaxcnn.models.inception import local_response_norm

# torchvision's documented num_params (and the papers' for googlenet / the CIFAR nets).
PARAMS_1000 = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "googlenet": 6_998_552,
    "googlenet_bn": 6_624_904,
}
# torchvision's documented GFLOPS (multiply-accumulates) at 224x224.
GMACS_224 = {"alexnet": 0.71, "vgg16": 15.47, "resnet18": 1.81, "resnet50": 4.09,
             "googlenet_bn": 1.50}


def _variables(model, side: int, channels: int = 3):
    x = jnp.zeros((1, side, side, channels), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))


def _output(model, shape, train: bool = False):
    """Abstract output of init + apply on zeros of `shape` (nothing is computed)."""
    x = jnp.zeros(shape, jnp.float32)

    def run(key):
        variables = model.init(key, x, train=False)
        return model.apply(variables, x, train=train, rngs={"dropout": key},
                           mutable=["batch_stats"] if train else False)

    out = jax.eval_shape(run, jax.random.key(0))
    return out[0] if train else out


def _random_variables(model, x: jax.Array, seed: int = 0):
    """Variables of `model` filled with numpy randoms (jit-compiling init's RNG is slow on CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

    def fill(path, spec):
        leaf = path[-1].key
        if leaf in ("scale", "var"):
            return rng.uniform(0.5, 1.5, spec.shape).astype(np.float32)
        if leaf == "kernel":
            fan_in = math.prod(spec.shape[:-1])
            return (rng.normal(size=spec.shape) / math.sqrt(fan_in)).astype(np.float32)
        return (0.1 * rng.normal(size=spec.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _side(name: str) -> int:
    return 32 if name == "lenet5" or "cifar" in name else 64


@pytest.mark.parametrize("name", models.list_models())
def test_every_registered_model_shape_and_parameter_count(name):
    """Output shape on a small input for every model; exact counts where documented."""
    side, channels = _side(name), 1 if name == "lenet5" else 3
    model = models.get_model(name, num_classes=1000)
    x = jnp.zeros((2, side, side, channels), jnp.float32)

    def run(key):
        variables = model.init(key, x, train=False)
        return variables, model.apply(variables, x, train=False)

    variables, out = jax.eval_shape(run, jax.random.key(0))
    assert out.shape == (2, 1000) and out.dtype == jnp.float32
    if name in PARAMS_1000:
        assert counting.count_params(variables) == PARAMS_1000[name]


def test_lenet5_table_row_by_row():
    rows = counting.summary(models.get_model("lenet5", num_classes=10), (32, 32, 3))
    got = [(r.name, r.shape, r.size, r.params) for r in rows]
    assert got == [
        ("input", (32, 32, 3), 3_072, 0),
        ("conv1", (28, 28, 6), 4_704, 456),
        ("pool1", (14, 14, 6), 1_176, 0),
        ("conv2", (10, 10, 16), 1_600, 2_416),
        ("pool2", (5, 5, 16), 400, 0),
        ("fc3", (120,), 120, 48_120),
        ("fc4", (84,), 84, 10_164),
        ("fc5", (10,), 10, 850),
    ]
    assert counting.total_params(rows) == 62_006


def test_lenet5_1998_variant_runs():
    model = models.get_model("lenet5", num_classes=10, activation="tanh", pool="avg")
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(_random_variables(model, x), x)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("activation,pool", [("tanh", "avg"), ("relu", "max"), ("sigmoid", "avg")])
def test_lenet5_variants_table(activation, pool):
    model = models.get_model("lenet5", num_classes=10, activation=activation, pool=pool)
    rows = counting.summary(model, (32, 32, 1))
    assert [r.kind for r in rows[1:5]] == ["Conv", "AvgPool" if pool == "avg" else "MaxPool"] * 2


def test_lenet5_rejects_unknown_activation_and_pool():
    x = jnp.zeros((1, 32, 32, 1))
    with pytest.raises(ValueError, match="activation"):
        _variables(models.get_model("lenet5", 10, activation="gelu"), 32, 1)
    with pytest.raises(ValueError, match="pool"):
        models.get_model("lenet5", 10, pool="l2").init(jax.random.key(0), x, train=False)


def _alexnet_by_hand(drop: tuple[int, ...], num_classes: int = 1000) -> int:
    """AlexNet's parameters from the layer shapes, skipping the dropped layers."""
    convs = [(11, 64), (5, 192), (3, 384), (3, 256), (3, 256)]
    total, channels = 0, 3
    for number, (f, out) in enumerate(convs, start=1):
        if number not in drop:
            total += counting.conv_params(f, channels, out)
            channels = out
    features = 6 * 6 * channels
    for number in (6, 7):
        if number not in drop:
            total += counting.dense_params(features, 4096)
            features = 4096
    return total + counting.dense_params(features, num_classes)


@pytest.mark.parametrize("drop", [(), (3, 4), (6, 7), (7,), (3, 4, 6, 7), (1,), (2, 5)])
def test_alexnet_ablations_match_hand_counts(drop):
    model = models.get_model("alexnet", num_classes=1000, drop_layers=drop)
    assert counting.count_params(_variables(model, 64)) == _alexnet_by_hand(drop)
    assert _output(model, (2, 64, 64, 3)).shape == (2, 1000)


def test_alexnet_ablation_deltas():
    full = PARAMS_1000["alexnet"]
    assert full - _alexnet_by_hand((7,)) == 16_781_312
    assert full - _alexnet_by_hand((6, 7)) == 49_414_144
    drop7 = counting.count_params(_variables(models.get_model("alexnet", drop_layers=(7,)), 64))
    assert full - drop7 == 16_781_312
    # Without conv3 and conv4, conv5 reads conv2's 192 channels.
    params = _variables(models.get_model("alexnet", drop_layers=[3, 4]), 64)["params"]
    assert set(params) == {"conv1", "conv2", "conv5", "fc6", "fc7", "fc8"}
    assert params["conv5"]["kernel"].shape == (3, 3, 192, 256)
    params = _variables(models.get_model("alexnet", drop_layers=(6, 7)), 64)["params"]
    assert params["fc8"]["kernel"].shape == (9_216, 1000)


@pytest.mark.parametrize("drop", [(8,), (0,), (9,), (3, 8)])
def test_alexnet_rejects_bad_drop_layers(drop):
    with pytest.raises(ValueError, match="drop_layers"):
        _variables(models.get_model("alexnet", drop_layers=drop), 64)


def test_resnet_plain_has_no_projections():
    """Plain ResNet-18 = ResNet-18 minus its three 1x1 projections (+ their BN)."""
    projections = sum(
        counting.conv_params(1, cin, cout, bias=False) + 2 * cout
        for cin, cout in ((64, 128), (128, 256), (256, 512))
    )
    assert projections == 173_824
    plain = _variables(models.get_model("resnet18", plain=True), 64)
    assert counting.count_params(plain) == PARAMS_1000["resnet18"] - projections == 11_515_688
    assert not any("downsample" in "/".join(map(str, path))
                   for path, _ in jax.tree_util.tree_flatten_with_path(plain)[0])


def _cifar_resnet_by_hand(depth: int, num_classes: int = 10) -> int:
    """He et al.'s CIFAR ResNet with parameter-free (option A) shortcuts, by layer shapes."""
    n = (depth - 2) // 6
    total = counting.conv_params(3, 3, 16, bias=False) + 2 * 16
    channels = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += counting.conv_params(3, channels, width, bias=False) + 2 * width
            total += counting.conv_params(3, width, width, bias=False) + 2 * width
            channels = width
    return total + counting.dense_params(64, num_classes)


@pytest.mark.parametrize("depth,paper_millions", [(20, 0.27), (32, 0.46), (56, 0.85)])
def test_cifar_resnets_match_the_paper(depth, paper_millions):
    model = models.get_model(f"resnet{depth}_cifar", num_classes=10)
    count = counting.count_params(_variables(model, 32))
    assert count == _cifar_resnet_by_hand(depth)
    assert round(count / 1e6, 2) == paper_millions
    assert _output(model, (2, 32, 32, 3)).shape == (2, 10)


def test_cifar_resnet_counts():
    assert [_cifar_resnet_by_hand(d) for d in (20, 32, 56)] == [269_722, 464_154, 853_018]
    # Option B (1x1 projections + BN) adds 16*32 + 64 + 32*64 + 128 parameters.
    model = models.get_model("resnet20_cifar", num_classes=10, shortcut="projection")
    assert counting.count_params(_variables(model, 32)) == 269_722 + 512 + 64 + 2_048 + 128


def test_resnet18_cifar_stem():
    model = models.get_model("resnet18_cifar", num_classes=10)
    expected = PARAMS_1000["resnet18"] - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 - 512 * 990 - 990
    assert counting.count_params(_variables(model, 32)) == expected == 11_173_962
    rows = counting.summary(model, (32, 32, 3))
    assert rows[1].name == "conv1" and rows[1].shape == (32, 32, 64)
    assert not any(r.kind == "MaxPool" for r in rows)
    same = models.get_model("resnet18", num_classes=10, cifar_stem=True)
    assert counting.count_params(_variables(same, 32)) == expected


@pytest.mark.parametrize("name", ["googlenet", "googlenet_bn"])
def test_googlenet_aux_logits_in_train_mode_only(name):
    model = models.get_model(name, num_classes=5, aux_logits=True)
    train_out = _output(model, (2, 96, 96, 3), train=True)
    assert isinstance(train_out, tuple) and [o.shape for o in train_out] == [(2, 5)] * 3
    assert _output(model, (2, 96, 96, 3)).shape == (2, 5)


def test_googlenet_aux_head_parameters():
    with_aux = counting.count_params(_variables(models.get_model("googlenet_bn", aux_logits=True),
                                                64))
    heads = sum(
        counting.conv_params(1, cin, 128, bias=False) + 2 * 128
        + counting.dense_params(4 * 4 * 128, 1024) + counting.dense_params(1024, 1000)
        for cin in (512, 528)
    )
    assert with_aux == PARAMS_1000["googlenet_bn"] + heads


def test_inception_block_concatenates_branches():
    block = models.InceptionBlock(64, 96, 128, 16, 32, 32)
    x = jnp.zeros((1, 28, 28, 192))
    out = jax.eval_shape(lambda: block.apply(block.init(jax.random.key(0), x, False), x, False))
    assert out.shape == (1, 28, 28, 256)
    variables = jax.eval_shape(lambda: block.init(jax.random.key(0), x, False))
    expected = (counting.conv_params(1, 192, 64) + counting.conv_params(1, 192, 96)
                + counting.conv_params(3, 96, 128) + counting.conv_params(1, 192, 16)
                + counting.conv_params(5, 16, 32) + counting.conv_params(1, 192, 32))
    assert counting.count_params(variables) == expected == 163_696


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet19'") as info:
        models.get_model("resnet19")
    for name in ("lenet5", "alexnet", "vgg16_bn", "resnet50", "googlenet_bn", "resnet20_cifar"):
        assert name in str(info.value)


@pytest.mark.parametrize("name,side,minimum", [
    ("lenet5", 15, 16), ("alexnet", 62, 63), ("vgg11", 31, 32), ("googlenet", 14, 15),
    ("googlenet_bn", 14, 15),
])
def test_too_small_input_raises(name, side, minimum):
    model = models.get_model(name, num_classes=10)
    with pytest.raises(ValueError, match=rf"{name}: .*>= {minimum}.*\(1, {side}, {side}, 3\)"):
        _variables(model, side)
    assert _output(model, (1, minimum, minimum, 3)).shape == (1, 10)


def test_non_nhwc_input_raises():
    model = models.get_model("resnet18", num_classes=10)
    with pytest.raises(ValueError, match="NHWC"):
        model.init(jax.random.key(0), jnp.zeros((32, 32, 3)), train=False)


@pytest.mark.parametrize("name", sorted(GMACS_224))
def test_macs_match_torchvision_gflops(name):
    rows = counting.summary(models.get_model(name, num_classes=1000), (224, 224, 3))
    assert counting.total_macs(rows) / 1e9 == pytest.approx(GMACS_224[name], rel=0.01)
    assert counting.total_params(rows) == PARAMS_1000[name]


def test_intermediates_are_sown():
    def sown(name, side):
        model = models.get_model(name, num_classes=10)
        x = jnp.zeros((1, side, side, 3))

        def run(key):
            variables = model.init(key, x, train=False)
            return model.apply(variables, x, train=False, mutable=["intermediates"])[1]

        inter = jax.eval_shape(run, jax.random.key(0))["intermediates"]
        return {key: value[0].shape for key, value in inter.items()}

    resnet = sown("resnet18", 64)
    assert {k: resnet[k] for k in ("stage1", "stage2", "stage3", "stage4")} == {
        "stage1": (1, 16, 16, 64), "stage2": (1, 8, 8, 128), "stage3": (1, 4, 4, 256),
        "stage4": (1, 2, 2, 512)}
    assert set(sown("alexnet", 64)) == {f"relu{i}" for i in range(1, 8)}
    vgg = sown("vgg16", 32)
    assert vgg["relu1_1"] == (1, 32, 32, 64) and vgg["relu5_3"] == (1, 2, 2, 512)
    assert sown("googlenet_bn", 64)["inception5b_out"] == (1, 2, 2, 1024)
    assert set(sown("lenet5", 32)) == {"act1", "act2", "act3", "act4"}


def test_bfloat16_compute_keeps_float32_params():
    model = models.get_model("lenet5", num_classes=10, dtype=jnp.bfloat16)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(shapes))
    variables = _random_variables(model, x)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))
    logits, inter = apply(variables, x)
    assert logits.dtype == jnp.float32 and logits.shape == (2, 10)
    assert inter["intermediates"]["act2"][0].dtype == jnp.bfloat16


def test_train_mode_updates_batch_stats_and_uses_dropout():
    model = models.ResNet((1, 1), widths=(4, 8), num_classes=3, cifar_stem=True)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    variables = _random_variables(model, x)
    step = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    _, updates = step(variables, x)
    before = variables["batch_stats"]["bn1"]["mean"]
    assert not np.allclose(updates["batch_stats"]["bn1"]["mean"], before)
    out = _output(models.get_model("alexnet", num_classes=3), (1, 63, 63, 3), train=True)
    assert out.shape == (1, 3)  # dropout ran with the 'dropout' rng


def _torch_pool_out(n: int, f: int, s: int, p: int, ceil_mode: bool) -> int:
    """torch.nn.MaxPool2d's output size formula (pooling_output_shape)."""
    numerator = n + 2 * p - f + (s - 1 if ceil_mode else 0)
    out = math.floor(numerator / s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


@pytest.mark.parametrize("f,s,p", [(3, 2, 0), (2, 2, 0), (3, 2, 1), (3, 1, 1), (5, 3, 0)])
def test_ceil_mode_pool_output_size_matches_torch_formula(f, s, p):
    for n in range(max(1, f - 2 * p), 20):
        for ceil_mode in (False, True):
            expected = _torch_pool_out(n, f, s, p, ceil_mode)
            assert layers.output_side(n, [(f, s, p, ceil_mode)]) == expected
            pool = models.MaxPool(f, s, ((p, p), (p, p)), ceil_mode)
            out = jax.eval_shape(lambda x, pool=pool: pool.apply({}, x), jnp.zeros((1, n, n, 1)))
            assert out.shape[1:3] == (expected, expected), (n, ceil_mode)


@pytest.mark.parametrize("size,out", [(7, 7), (14, 7), (2, 7), (3, 6), (10, 4), (1, 6)])
def test_adaptive_avg_pool_matches_torch_bins(size, out):
    x = np.random.default_rng(0).normal(size=(2, size, size + 1, 3)).astype(np.float32)
    got = models.AdaptiveAvgPool((out, out)).apply({}, jnp.asarray(x))
    expected = np.zeros((2, out, out, 3), np.float32)
    for i in range(out):
        for j in range(out):
            h0, h1 = (i * size) // out, math.ceil((i + 1) * size / out)
            w0, w1 = (j * (size + 1)) // out, math.ceil((j + 1) * (size + 1) / out)
            expected[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def test_local_response_norm_matches_definition():
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 7)).astype(np.float32)
    got = np.asarray(local_response_norm(jnp.asarray(x), size=5, alpha=0.1, beta=0.75, k=2.0))
    expected = np.empty_like(x)
    for c in range(7):
        window = x[..., max(0, c - 2): c + 3]
        expected[..., c] = x[..., c] / (2.0 + 0.1 / 5 * (window ** 2).sum(-1)) ** 0.75
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_summary_experiment_renders_the_lenet5_table():
    from experiments import summary

    text = summary.render("lenet5", summary.parse_input(["32", "32", "3"]), 10)
    assert "fc5" in text and "62,006" in text and "651,720" in text



def test_local_response_norm_is_differentiable():
    """Regression: an array init value made reduce_window non-differentiable (googlenet)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 2, 7)).astype(np.float32))
    grad = jax.grad(lambda v: local_response_norm(v).sum())(x)
    eps = 1e-2
    bump = jnp.zeros_like(x).at[0, 1, 0, 3].set(eps)
    numeric = (local_response_norm(x + bump).sum() - local_response_norm(x - bump).sum()) / (
        2 * eps)
    assert float(grad[0, 1, 0, 3]) == pytest.approx(float(numeric), rel=1e-3)
