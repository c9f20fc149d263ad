"""Backbones: every registry model's trunk, its stride and channels, and named activations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models

# Top-level parameter/state names of each family's classifier (torchvision's `classifier`/`fc`).
HEADS = {"lenet5": {"fc3", "fc4", "fc5"}, "alexnet": {"fc6", "fc7", "fc8"},
         "vgg": {"fc6", "fc7", "fc8"}, "resnet": {"fc"}, "googlenet": {"fc"},
         "filter_size_net": {"fc"}}


def _family(name: str) -> str:
    return next(f for f in ("lenet5", "alexnet", "vgg", "resnet", "googlenet",
                            "filter_size_net") if name.startswith(f))


def _side(name: str) -> int:
    return 32 if name == "lenet5" or "cifar" in name or name == "filter_size_net" else 64


def _paths(tree) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path): leaf.shape for path, leaf in leaves}


def _abstract_run(model, x):
    """(variables, output, sown intermediates) of init, shapes only (one trace)."""
    out, variables = jax.eval_shape(
        lambda key: model.init_with_output(key, x, train=False, mutable=True), jax.random.key(0))
    variables = dict(variables)
    sown = variables.pop("intermediates")
    return variables, out, sown


@pytest.mark.parametrize("name", models.list_models())
def test_trunk_params_are_the_full_models_minus_the_classifier(name):
    info = models.model_info(name)
    x = jnp.zeros((1, _side(name), _side(name), info.input_shape[2]), jnp.float32)
    full_vars, logits, full_sown = _abstract_run(models.get_model(name), x)
    trunk = models.get_trunk(name)
    trunk_vars, features, trunk_sown = _abstract_run(trunk, x)
    assert logits.shape == (1, info.num_classes)
    full, kept = _paths(full_vars), _paths(trunk_vars)
    head = {path: shape for path, shape in full.items() if path not in kept}
    assert {path: full[path] for path in kept} == kept  # same names, same shapes
    assert {path.split("'")[3] for path in head} == HEADS[_family(name)]
    # The sown names are the ones the model lists (no more, no fewer, no duplicates).
    assert set(trunk_sown) == set(trunk.feature_names())
    assert set(full_sown) == set(models.get_model(name).feature_names())
    assert len(set(full_sown)) == len(models.get_model(name).feature_names())
    assert features.ndim == 4 and features.shape[-1] == models.trunk_info(name).channels


# One model per family and variant of stem / block / pooling mode.
STRIDE_CASES = [("lenet5", 32), ("alexnet", 64), ("vgg11", 32), ("resnet18", 32),
                ("resnet50", 64), ("resnet18_cifar", 8), ("resnet20_cifar", 8),
                ("googlenet", 64), ("googlenet_bn", 64), ("filter_size_net", 8)]


@pytest.mark.parametrize("name,side", STRIDE_CASES)
def test_trunk_stride_and_channels_match_the_output(name, side):
    """Adding `stride` input pixels adds exactly one output pixel (rows and columns alike)."""
    channels = models.model_info(name).input_shape[2]
    stride, out_channels = models.trunk_info(name)
    trunk = models.get_trunk(name)
    shapes = [_abstract_run(trunk, jnp.zeros((1, h, w, channels)))[1].shape
              for h, w in ((side, side + stride), (side + stride, side + 3 * stride))]
    (_, h0, w0, c0), (_, h1, w1, c1) = shapes
    assert (h1 - h0, w1 - w0) == (1, 2)
    assert w0 - h0 == 1
    assert c0 == c1 == out_channels


def test_trunk_stride_and_channels_follow_the_kwargs():
    assert models.trunk_info("resnet20_cifar") == (4, 64)
    assert models.trunk_info("resnet50") == (32, 2048)
    assert models.trunk_info("filter_size_net", width=12) == (2, 12)
    assert models.trunk_info("alexnet", drop_layers=(1, 5)) == (8, 256)  # no conv1 (stride 4)
    assert models.trunk_info("alexnet", drop_layers=(4, 5)) == (32, 384)
    # 67 -> pool1 33 -> conv2 33 -> pool2 16 -> conv3, conv4 16 -> pool5 7, conv4's 256 channels.
    out = _abstract_run(models.get_trunk("alexnet", drop_layers=(1, 5)), jnp.zeros((1, 67, 67, 3)))
    assert out[1].shape == (1, 7, 7, 256)


def test_trunk_runs_on_the_full_models_variables():
    """Converted (full-model) variables apply to the trunk: its output is the last stage."""
    model, trunk = models.get_model("resnet20_cifar"), models.get_trunk("resnet20_cifar")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((2, 16, 16, 3), np.float32))
    shapes = _abstract_run(model, x)[0]
    variables = jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.0, s.shape) /
                                                   np.sqrt(np.prod(s.shape[:-1]) or 1),
                                                   np.float32), shapes)
    got = jax.jit(lambda v, x: trunk.apply(v, x, train=False))(variables, x)
    sown = jax.jit(lambda v, x: models.features(model, v, x, layers=["stage3"]))(variables, x)
    assert got.shape == (2, 4, 4, 64)
    np.testing.assert_allclose(np.asarray(got), np.asarray(sown["stage3"]), rtol=1e-5)
    assert float(jnp.abs(got).max()) > 0.1


def test_unknown_feature_name_lists_the_valid_ones():
    model = models.get_model("vgg11")
    with pytest.raises(ValueError, match=r"unknown name\(s\) \['relu9_9'\].*relu1_1, relu2_1"):
        models.features(model, {}, jnp.zeros((1, 32, 32, 3)), layers=["relu1_1", "relu9_9"])


def test_registry_records_native_inputs_and_default_classes():
    assert models.model_info("lenet5").input_shape == (32, 32, 1)
    assert models.model_info("resnet50").input_shape == (224, 224, 3)
    assert models.model_info("resnet20_cifar").num_classes == 10
    assert models.model_info("resnet18_cifar").num_classes == 10
    assert models.model_info("googlenet").num_classes == 1000
    with pytest.raises(ValueError, match="unknown model 'resnet19'"):
        models.model_info("resnet19")
    with pytest.raises(ValueError, match="include_top"):
        models.get_trunk("resnet18", include_top=True)


def test_summary_defaults_to_the_native_input_and_classes():
    from experiments import summary

    # LeNet-5 on its native 32x32x1 with 10 classes: the lecture's 62,006 parameters are for
    # 3 input channels; one channel has 2 x 5 x 5 x 6 = 300 fewer conv1 weights.
    text = summary.render("lenet5")
    assert "(32, 32, 1) with 10 classes" in text and "parameters: 61,706" in text
