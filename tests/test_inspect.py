"""Seeing what layers respond to: receptive fields, streamed top-k, crops, gathered merge."""

from __future__ import annotations

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from gather_worker import EVAL_BATCH, tiny_dataset

from jaxcnn import inspection, models, ops, train
from jaxcnn.models.layers import AvgPool
from jaxcnn.tasks import classification


class Chain(nn.Module):
    """Identity activations, all-ones kernels, average pooling: every path adds positively."""

    @nn.compact
    def __call__(self, x, train: bool):
        conv = {"use_bias": False, "kernel_init": nn.initializers.ones}
        x = nn.Conv(1, (3, 3), strides=2, padding=((1, 1), (1, 1)), **conv)(x)
        self.sow("intermediates", "l1", x)
        x = AvgPool(2, 2)(x)
        self.sow("intermediates", "l2", x)
        x = nn.Conv(1, (3, 3), padding="SAME", **conv)(x)
        self.sow("intermediates", "l3", x)
        x = nn.Conv(1, (5, 5), padding=((2, 2), (2, 2)), strides=2, **conv)(x)
        self.sow("intermediates", "l4", x)
        return x.mean((1, 2))


def test_receptive_field_box_is_where_the_input_gradient_lives():
    # 32 px: no layer drops border rows (a truncating pool would leave part of a box unseen).
    model, shape = Chain(), (32, 32, 1)
    variables = model.init(jax.random.key(0), jnp.zeros((1, *shape)), train=False)
    geometry = inspection.layer_geometry(model, shape)
    assert {k: (g.size, g.jump) for k, g in geometry.items()} == {
        "l1": (3, 2), "l2": (5, 4), "l3": (13, 4), "l4": (29, 8)}
    image = jnp.asarray(np.random.default_rng(0).random(shape), jnp.float32)
    for layer, (h, w, _) in inspection.activation_shapes(model, shape).items():
        for y, x in {(0, 0), (h // 2, w // 2), (h - 1, w - 1), (0, w - 1)}:
            grad = jax.grad(lambda img, y=y, x=x, layer=layer: inspection.activations(
                model, variables, img[None], [layer])[layer][0, y, x, 0])(image)
            support = np.abs(np.asarray(grad[..., 0])) > 0
            top, bottom, left, right = geometry[layer].box(y, x, shape[0], shape[1])
            expected = np.zeros(shape[:2], bool)
            expected[top:bottom, left:right] = True
            np.testing.assert_array_equal(support, expected, err_msg=f"{layer} unit {(y, x)}")


def test_receptive_fields_of_the_classic_networks():
    def sizes(name, shape):
        return {k: g.size for k, g in inspection.layer_geometry(
            models.get_model(name, num_classes=10), shape).items()}

    assert sizes("lenet5", (32, 32, 1))["act2"] == 14  # 5 + 1 (pool) + 4 x 2
    vgg = sizes("vgg16", (224, 224, 3))
    assert (vgg["relu1_2"], vgg["relu3_3"], vgg["relu5_3"]) == (5, 40, 196)  # the classic 196
    alexnet = sizes("alexnet", (224, 224, 3))
    assert [alexnet[f"relu{i}"] for i in range(1, 6)] == [11, 51, 99, 131, 163]
    assert sizes("resnet18", (224, 224, 3))["stage4"] == 435
    # ops' size-only function agrees with the geometry (no padding there).
    assert ops.receptive_field_geometry([(5, 1, 0), (2, 2, 0), (5, 1, 0)])[0] == \
        ops.receptive_field([(5, 1), (2, 2), (5, 1)]) == 14


def test_crops_stay_inside_the_image():
    geometry = inspection.layer_geometry(models.get_model("alexnet", num_classes=10), (224, 224, 3))
    for layer in ("relu1", "relu3", "relu5"):
        g = geometry[layer]
        for y in (0, 3, 13):
            top, bottom, left, right = g.box(y, y, 224, 224)
            assert 0 <= top < bottom <= 224 and 0 <= left < right <= 224
    image = np.zeros((224, 224, 3))
    assert inspection.crop(image, geometry["relu5"].box(0, 0, 224, 224)).shape == (97, 97, 3)


def _program():
    config = train.default_config()
    config.update({"batch_size": 8, "eval_batch_size": EVAL_BATCH, "train_steps": 1})
    base = classification.make_task(train.resolve_platform(config), tiny_dataset())
    task = inspection.inspection_task(base.model, base.dataset, ["act1", "act2"], 3)
    return base, train.build_program(config, task)


def test_streamed_top_k_equals_a_sort_of_all_activations():
    base, program = _program()
    state = program.init_state()
    topk = inspection.top_patches(program, state, ["act1", "act2"], 3)
    dataset = base.dataset
    x = (dataset.x_test - dataset.mean) / dataset.std  # the loop normalises inputs
    acts = inspection.activations(base.model, {"params": state.params}, jnp.asarray(x),
                               ["act1", "act2"])
    for layer, a in acts.items():
        a = np.asarray(a).reshape(len(x), -1, a.shape[-1])
        best = a.max(1)  # (examples, units)
        for unit in range(best.shape[1]):
            order = sorted(range(len(x)), key=lambda i, u=unit: (-best[i, u], i))[:3]
            np.testing.assert_array_equal(topk.index[layer][:, unit], order)
            np.testing.assert_allclose(topk.values[layer][:, unit], best[order, unit], rtol=1e-5)
            np.testing.assert_array_equal(topk.position[layer][:, unit],
                                          a[order, :, unit].argmax(1))
            np.testing.assert_array_equal(topk.label[layer][:, unit], dataset.y_test[order])


@pytest.mark.slow  # 8 devices; the streamed top-k stays in the default suite
def test_eight_devices_merge_to_the_single_device_top_k(tmp_path):
    out = tmp_path / "eight.npz"
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "gather_worker.py"),
                             str(out), "--inspect"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    eight = np.load(out)
    _, program = _program()
    single = inspection.top_patches(program, program.init_state(), ["act1", "act2"], 3)
    for layer in ("act1", "act2"):
        np.testing.assert_array_equal(eight[f"index_{layer}"], single.index[layer])
        np.testing.assert_array_equal(eight[f"position_{layer}"], single.position[layer])
        np.testing.assert_allclose(eight[f"values_{layer}"], single.values[layer], atol=1e-5)


def test_unknown_layer_lists_the_valid_ones():
    with pytest.raises(ValueError, match="convolutional layers are: act1, act2"):
        inspection.check_layers(models.get_model("lenet5", num_classes=10), (32, 32, 1), ["conv9"])
    with pytest.raises(ValueError, match="act3"):  # a dense layer has no patches
        inspection.check_layers(models.get_model("lenet5", num_classes=10), (32, 32, 1), ["act3"])
    with pytest.raises(ValueError, match="top_k"):
        inspection.TopK(["act1"], 0)


def test_class_purity_is_the_share_of_the_most_common_label():
    labels = np.array([[1, 2], [1, 3], [0, 4], [1, 2]])
    np.testing.assert_allclose(inspection.class_purity(labels), [0.75, 0.5])


def test_inspect_layers_on_a_short_lenet_run(tmp_path):
    """The experiment on the demo's LeNet-5 (its two conv layers): the index states the
    receptive fields by hand (act1: 5 px, jump 1; act2 after a 2x2/2 pool and a 5x5 conv:
    5 + 1 + (5 - 1) * 2 = 14 px, jump 2) and the run's own eval top-1."""
    import json

    from conftest import run_module

    workdir, output = tmp_path / "run", tmp_path / "inspect"
    overrides = ("train_steps=20,batch_size=64,log_every_steps=10,progress=False,"
                 "tensorboard=False,checkpoint_every_steps=20")
    run_module("experiments.train", f"--config=experiments/configs/lenet5_mnist.py:{overrides}",
               f"--workdir={workdir}")
    run_module("experiments.inspect_layers", f"--workdir={workdir}", f"--output={output}",
               "--units=4", "--top_k=3")
    index = (output / "index.md").read_text()
    top1 = json.loads((workdir / "final_metrics.json").read_text())["top1"]
    assert f"checkpoint step 20, eval top-1 {100 * top1:.1f} %" in index
    rows = [line.split("|") for line in index.splitlines() if line.startswith("| 1: ")
            or line.startswith("| 2: ")]
    assert [(row[2].strip(), row[3].strip(), row[4].strip()) for row in rows] == [
        ("5", "1", "6"), ("14", "2", "16")]  # (receptive field, jump, units)
    assert sorted(os.listdir(output)) == ["filters_layer1.png", "index.md", "layer1_act1.png",
                                          "layer2_act2.png"]
