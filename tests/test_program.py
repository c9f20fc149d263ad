"""The program builder, gathered evaluation, task config keys and device-side transforms."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import ROOT

from jaxcnn import data as data_lib
from jaxcnn import train
from jaxcnn.tasks import classification

WORKER = os.path.join(ROOT, "tests", "gather_worker.py")


def _worker_env(devices: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **extra}


def _run_worker(out, devices: int) -> dict[str, np.ndarray]:
    result = subprocess.run([sys.executable, WORKER, str(out)], env=_worker_env(devices),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out))


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    return _run_worker(tmp_path_factory.mktemp("gather") / "one.npz", 1)


def _expected_top1(gathered: dict[str, np.ndarray]) -> float:
    return float((gathered["logits"].argmax(-1) == gathered["label"]).mean())


def test_gathered_outputs_are_every_example_in_dataset_order(one_device):
    from gather_worker import NUM_EVAL, tiny_dataset

    np.testing.assert_array_equal(one_device["index"], np.arange(NUM_EVAL))
    np.testing.assert_array_equal(one_device["label"], tiny_dataset().y_test)
    assert one_device["logits"].shape == (NUM_EVAL, 10)
    # The evaluator saw the same outputs, padding dropped; it agrees with the summed top-1.
    assert one_device["metric_gathered_count"] == NUM_EVAL
    assert one_device["metric_gathered_top1"] == pytest.approx(_expected_top1(one_device))
    assert one_device["metric_gathered_top1"] == pytest.approx(one_device["metric_top1"])


def test_eight_devices_gather_the_same_outputs_in_the_same_order(one_device, tmp_path):
    eight = _run_worker(tmp_path / "eight.npz", 8)
    np.testing.assert_array_equal(eight["index"], one_device["index"])
    np.testing.assert_array_equal(eight["label"], one_device["label"])
    np.testing.assert_allclose(eight["logits"], one_device["logits"], atol=1e-5, rtol=0)
    assert eight["metric_gathered_top1"] == one_device["metric_gathered_top1"]


@pytest.mark.slow  # two processes; the 8-device gather stays in the default suite
def test_two_processes_gather_the_same_outputs_in_the_same_order(one_device, tmp_path):
    port = 20000 + (os.getpid() + 7) % 20000
    out = tmp_path / "two.npz"
    procs = [subprocess.Popen(
        [sys.executable, WORKER, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_worker_env(2, JAXCNN_COORDINATOR=f"127.0.0.1:{port}",
                                   JAXCNN_NUM_PROCESSES="2", JAXCNN_PROCESS_ID=str(index)))
        for index in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    two = dict(np.load(out))
    np.testing.assert_array_equal(two["index"], one_device["index"])
    np.testing.assert_array_equal(two["label"], one_device["label"])
    np.testing.assert_allclose(two["logits"], one_device["logits"], atol=1e-5, rtol=0)


def test_task_config_keys_are_declared_and_validated():
    config = train.default_config()
    config.task = ml_collections.ConfigDict({"margin": 0.5})
    settings = train.task_settings(config, {"margin": 0.2, "embedding_size": 128})
    assert settings.margin == 0.5 and settings.embedding_size == 128
    config.task = ml_collections.ConfigDict({"margni": 0.5})
    with pytest.raises(KeyError, match=r"'margni' \(did you mean 'margin'\?\)"):
        train.task_settings(config, {"margin": 0.2})
    # Classification declares no task keys, so its configs stay as strict as the top level.
    from gather_worker import tiny_dataset

    with pytest.raises(KeyError, match="unknown config.task key"):
        train.build_program(config, classification.make_task(train.resolve_platform(config),
                                                             tiny_dataset()))
    config = train.default_config()
    config.batch_szie = 8
    with pytest.raises(KeyError, match=r"'batch_szie' \(did you mean 'batch_size'\?\)"):
        train.check_keys(config)


def test_task_needs_a_way_to_evaluate():
    from gather_worker import tiny_dataset

    with pytest.raises(ValueError, match="eval_fn"):
        train.Task(model=None, dataset=tiny_dataset(), loss_fn=lambda o, b: (0.0, {}))
    with pytest.raises(ValueError, match="make_evaluator"):
        train.Task(model=None, dataset=tiny_dataset(), loss_fn=lambda o, b: (0.0, {}),
                   output_fn=lambda o, b: {})


class FlippingDataset(data_lib.ArrayDataset):
    """Random horizontal flips done on the device, inside the jit-compiled train step."""

    def device_transform(self, batch, rng, train: bool):
        if not train:
            return batch
        flip = jax.random.bernoulli(rng, 0.5, (batch["image"].shape[0], 1, 1, 1))
        return {**batch, "image": jnp.where(flip, batch["image"][:, :, ::-1], batch["image"])}


def _flipping_run(workdir, steps: int, flip: bool = True):
    from gather_worker import tiny_dataset

    base = tiny_dataset()
    kind = FlippingDataset if flip else data_lib.ArrayDataset
    dataset = kind("flip", base.x_train, base.y_train, base.x_test, base.y_test, 10)
    config = train.default_config()
    config.update({"batch_size": 4, "eval_batch_size": 8, "train_steps": steps,
                   "log_every_steps": 1, "checkpoint_every_steps": 2, "progress": False,
                   "tensorboard": False, "async_checkpoints": False, "schedule": "constant"})
    return train.train_and_evaluate(config, str(workdir),
                                    task=classification.make_task(train.resolve_platform(config),
                                                                  dataset))


@pytest.mark.slow  # 16 s; test_device_data's augmented resume stays in the default tier
def test_device_transform_is_keyed_by_step_so_resuming_is_bit_identical(tmp_path):
    straight = _flipping_run(tmp_path / "straight", 4)
    _flipping_run(tmp_path / "resumed", 2)
    resumed = _flipping_run(tmp_path / "resumed", 4)
    assert resumed.steps_run == 2
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.state.params),
                 jax.device_get(straight.state.params))
    # The flips really happen: without them the parameters differ.
    unflipped = _flipping_run(tmp_path / "plain", 4, flip=False)
    leaves = zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(unflipped.state.params))
    assert any(not np.array_equal(a, b) for a, b in leaves)


def test_the_program_shapes_the_state_and_steps():
    from gather_worker import tiny_dataset

    config = train.default_config()
    config.update({"batch_size": 8, "train_steps": 3})
    program = train.build_program(config, classification.make_task(train.resolve_platform(config),
                                                                   tiny_dataset()))
    assert program.total_steps == 3 and program.steps_per_epoch == 2  # 16 train / 8
    params = program.abstract_state.params
    assert params["conv1"]["kernel"].shape == (5, 5, 1, 6)  # LeNet-5's C1 on 1 channel
    state = program.init_state()
    assert int(state.step) == 0
    state, metrics = program.train_step(state, program.to_global(
        next(program.task.dataset.train_batches(8, seed=0))))
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
