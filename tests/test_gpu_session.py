"""The GPU session's pieces that need no GPU: the He et al. config, the smoke criteria, the
timing split, and the model FLOPs behind MFU."""

import math
import os
import sys

import pytest
from conftest import ROOT

from jaxcnn import train

sys.path.insert(0, ROOT)
from benchmarks.common import (  # noqa: E402
    check_losses,
    datasheet_peak_tflops,
    model_train_flops,
    split_times,  # noqa: E402
)
from experiments.configs import resnet20_cifar10  # noqa: E402


def test_he_config_decays_at_32k_and_48k_of_64k():
    config = resnet20_cifar10.get_config()
    assert (config.train_steps, config.batch_size, config.weight_decay) == (64000, 128, 1e-4)
    assert config.optimizer == "momentum" and config.dtype == "bfloat16"
    assert config.dataset == "device:" + resnet20_cifar10.DEFAULT_DATA
    schedule = train.make_schedule(config, 50000 // 128, config.train_steps)
    rates = [float(schedule(s)) for s in (0, 31999, 32000, 47999, 48000, 63999)]
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_shortened_config_keeps_the_shape_and_other_overrides():
    config = resnet20_cifar10.get_config("steps=1000,data=/d/c.tar.gz,seed=3")
    assert (config.train_steps, config.seed, config.dataset) == (1000, 3, "device:/d/c.tar.gz")
    schedule = train.make_schedule(config, 390, 1000)
    assert [float(schedule(s)) for s in (499, 500, 749, 750)] == pytest.approx(
        [0.1, 0.01, 0.01, 0.001])
    with pytest.raises(ValueError, match="steps"):
        resnet20_cifar10.get_config("steps=2")


def test_smoke_criteria():
    ln10 = math.log(10)
    assert check_losses([ln10 * 1.04, 1.0], 10)["ok"]
    assert not check_losses([ln10 * 1.06, 1.0], 10)["initial_ok"]
    assert not check_losses([ln10, ln10 + 0.1], 10)["decreased"]
    assert not check_losses([float("nan"), 1.0], 10)["ok"]


def test_timing_split_removes_compiles_from_train_and_eval():
    # loop 0..100 s; compiles of 10 s (ending at 12 s) and 3 s (in the eval window 90..96 s)
    times = split_times(0.0, 100.0, [(12.0, 10.0), (93.0, 3.0)], [(90.0, 96.0)])
    assert times == {"compile_s": 13.0, "evaluation_s": 3.0, "training_s": 84.0}


def test_resnet50_model_flops_and_h100_peak():
    # torchvision ResNet-50 at 224: 4.09 GMACs forward (fvcore/ptflops count 4.1 G "FLOPs"
    # that are MACs); a train step is 3 passes of 2 FLOPs per MAC.
    flops = model_train_flops("resnet50", (224, 224, 3), 1000)
    assert flops / 6 == pytest.approx(4.09e9, rel=0.01)
    assert datasheet_peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert datasheet_peak_tflops("cpu") is None


def test_session_script_is_valid_bash():
    assert os.system(f"bash -n {ROOT}/benchmarks/gpu_session.sh") == 0


def test_mfu_of_each_framework():
    from benchmarks.common import add_mfu, mfu_line

    result = {"model": "m", "batch": 8, "jax": {"train_img_s": 1000.0, "compile_s": 30.0,
                                                "peak_device_mb": 2048.0},
              "torch": {"train_img_s": 500.0}, "torch_compile": {"error": "x"}}
    add_mfu(result, flops_per_image=24.6e9, datasheet_tflops=989.4, measured_gflops=800e3)
    assert result["jax"]["mfu_datasheet"] == pytest.approx(24.6e12 / 989.4e12)
    assert result["torch"]["mfu_measured"] == pytest.approx(12.3e12 / 800e12)
    assert "mfu_datasheet" not in result["torch_compile"]
    assert "jax: 1000 img/s MFU 2.5% datasheet 3.1% measured" in mfu_line(result)


def test_pool_switch_swaps_the_xla_pool_with_equal_values_and_gradients():
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.common import use_max_pool
    from jaxcnn import kernels
    from jaxcnn.models import layers

    x = jnp.asarray(np.random.default_rng(0).random((2, 9, 9, 3)), jnp.float32)

    def pooled_sum(v):
        return (layers.pool2d(v, "max", 3, 2, ((1, 1), (1, 1)), impl="xla") ** 2).sum()

    window = jax.value_and_grad(pooled_sum)(x)
    try:
        use_max_pool("views")
        assert kernels.get("xla").max_pool is kernels.xla_cpu.max_pool
        views = jax.value_and_grad(pooled_sum)(x)
    finally:
        use_max_pool("reduce_window")
    assert kernels.get("xla").max_pool is kernels.xla_max_pool
    np.testing.assert_allclose(views[0], window[0], rtol=1e-6)
    np.testing.assert_array_equal(views[1], window[1])
    with pytest.raises(ValueError, match="max_pool"):
        use_max_pool("avg")
