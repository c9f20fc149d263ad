"""Model options the CIFAR studies need: the 32x32 AlexNet (width, drop_layers) and widths= on
the CIFAR ResNets. Parameter counts are checked against formulas written out here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxcnn import counting, models


def _params(model, side: int = 32) -> int:
    x = jnp.zeros((1, side, side, 3), jnp.float32)
    variables = jax.eval_shape(lambda key: model.init(key, x, train=False), jax.random.key(0))
    return counting.count_params(variables)


def _output_shape(model, side: int = 32) -> tuple[int, ...]:
    x = jnp.zeros((2, side, side, 3), jnp.float32)
    return jax.eval_shape(lambda key: model.init_with_output(key, x, train=False)[0],
                          jax.random.key(0)).shape


def alexnet_cifar_params_by_formula(width: float, drop: tuple[int, ...] = (),
                                    classes: int = 10) -> int:
    """Weights + biases of the 32x32 AlexNet: kernels 5,5,3,3,3; pool5 is 4x4; each kept layer
    reads the previous kept layer's width."""
    convs = [(5, round(64 * width)), (5, round(192 * width)), (3, round(384 * width)),
             (3, round(256 * width)), (3, round(256 * width))]
    fcs = [round(4096 * width)] * 2
    total, channels = 0, 3
    for number, (kernel, out) in enumerate(convs, start=1):
        if number not in drop:
            total += kernel * kernel * channels * out + out
            channels = out
    inputs = 4 * 4 * channels
    for number, out in enumerate(fcs, start=6):
        if number not in drop:
            total += inputs * out + out
            inputs = out
    return total + inputs * classes + classes


def test_alexnet_cifar_quarter_width_by_hand():
    # convs 16/48/96/64/64, fcs 1024: 1216 + 19248 + 41568 + 55360 + 36928 (convs)
    # + 1049600 + 1049600 + 10250 (fc6, fc7, fc8) = 2,263,770.
    assert alexnet_cifar_params_by_formula(0.25) == 2_263_770
    assert _params(models.get_model("alexnet_cifar", width=0.25)) == 2_263_770


@pytest.mark.parametrize("width", [1.0, 0.5, 0.125])
def test_alexnet_cifar_width_multiplier_params(width):
    model = models.get_model("alexnet_cifar", width=width)
    assert _params(model) == alexnet_cifar_params_by_formula(width)
    assert _output_shape(model) == (2, 10)


@pytest.mark.parametrize("drop", [(3, 4), (6, 7), (3, 4, 6, 7), (7,), (1, 2)])
def test_alexnet_cifar_drop_layers(drop):
    model = models.get_model("alexnet_cifar", width=0.25, drop_layers=list(drop))
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda key: model.init(key, x, train=False), jax.random.key(0))
    names = set(variables["params"])
    expected = {f"conv{n}" for n in range(1, 6) if n not in drop}
    expected |= {f"fc{n}" for n in (6, 7, 8) if n not in drop}
    assert names == expected
    assert counting.count_params(variables) == alexnet_cifar_params_by_formula(0.25, drop)
    assert _output_shape(model) == (2, 10)


def test_alexnet_cifar_feature_map_sizes():
    """5x5/1 conv1 and padded 3x3/2 pools: 32 -> 16 -> 8 -> 4 (trunk stride 8, 64 channels)."""
    rows = counting.summary(models.get_model("alexnet_cifar", width=0.25), (32, 32, 3))
    shapes = {row.name: row.shape for row in rows}
    assert shapes["conv1"] == (32, 32, 16) and shapes["pool1"] == (16, 16, 16)
    assert shapes["pool2"] == (8, 8, 48) and shapes["pool5"] == (4, 4, 64)
    assert models.trunk_info("alexnet_cifar", width=0.25) == (8, 64)


def test_alexnet_width_rejects_nonpositive():
    model = models.get_model("alexnet_cifar", width=0.0)
    with pytest.raises(ValueError, match="width"):
        _params(model)


def test_imagenet_alexnet_unchanged_by_the_options():
    assert _params(models.get_model("alexnet", num_classes=1000), 224) == 61_100_840


def resnet_cifar_params_by_formula(depth: int, widths: tuple[int, int, int],
                                   classes: int = 10, projection: bool = False) -> int:
    """3x3 convs without bias, BN scale + bias per channel, option A (or B) shortcuts, fc."""
    n = (depth - 2) // 6
    total = 9 * 3 * widths[0] + 2 * widths[0]
    previous = widths[0]
    for width in widths:
        for _ in range(n):
            total += 9 * previous * width + 2 * width + 9 * width * width + 2 * width
            if projection and previous != width:
                total += previous * width + 2 * width
            previous = width
    return total + widths[-1] * classes + classes


def test_resnet20_formula_matches_he_et_al():
    # He et al. Table 6: ResNet-20 has 0.27M parameters; the formula gives 269,722.
    assert resnet_cifar_params_by_formula(20, (16, 32, 64)) == 269_722
    assert _params(models.get_model("resnet20_cifar")) == 269_722


@pytest.mark.parametrize("depth,widths", [(20, (8, 16, 32)), (20, (32, 64, 128)),
                                          (56, (8, 16, 32)), (32, [24, 48, 96])])
def test_cifar_resnet_widths(depth, widths):
    for plain in (False, True):
        model = models.get_model(f"resnet{depth}_cifar", widths=widths, plain=plain)
        assert _params(model) == resnet_cifar_params_by_formula(depth, tuple(widths))
        assert _output_shape(model) == (2, 10)
    assert models.trunk_info(f"resnet{depth}_cifar", widths=widths) == (4, widths[-1])


def test_cifar_resnet_widths_with_projection_shortcuts():
    model = models.get_model("resnet20_cifar", widths=(8, 16, 32), shortcut="projection")
    assert _params(model) == resnet_cifar_params_by_formula(20, (8, 16, 32), projection=True)


def test_cifar_resnet_widths_errors():
    with pytest.raises(ValueError, match="widths"):
        _params(models.get_model("resnet20_cifar", widths=(16, 32)))
    with pytest.raises(ValueError, match="zeropad"):
        _params(models.get_model("resnet20_cifar", widths=(32, 16, 8)))
