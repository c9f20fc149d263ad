"""The training loop: learning, sharding, multi-process, checkpoints, errors, launch."""

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, run_module

from jaxcnn import data as data_lib
from jaxcnn import models, tasks, train
from jaxcnn.tasks import classification

LENET_CONFIG = "experiments/configs/lenet5_mnist.py"


def small_config(**overrides):
    config = train.default_config()
    config.model = "lenet5"
    config.dataset = "embedded_mnist"
    config.image_size = (32, 32)
    config.batch_size = 64
    config.eval_batch_size = 500
    config.train_steps = 40
    config.learning_rate = 2e-3
    config.schedule = "constant"
    config.log_every_steps = 5
    config.checkpoint_every_steps = 20
    config.progress = False
    config.tensorboard = False
    for key, value in overrides.items():
        config[key] = value
    return config


def tiny_mnist(num_test=64):
    """The embedded digits with a short test split, for fast evaluation."""
    full = data_lib.embedded_mnist()
    return dataclasses.replace(full, x_test=full.x_test[:num_test], y_test=full.y_test[:num_test])


def read_metrics(workdir, split="train"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [row for row in rows if row["split"] == split]


def saved_params(workdir):
    tree = train.Checkpointer(os.path.join(workdir, "checkpoints")).restore_arrays()
    return tree["step"], tree["params"]


def assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


def test_lenet5_learns_embedded_mnist(tmp_path):
    result = train.train_and_evaluate(small_config(), str(tmp_path), tasks.build)
    losses = [row["loss"] for row in read_metrics(tmp_path)]
    assert len(losses) == 8
    # Chance is ln(10) = 2.30; 40 Adam steps of 64 digits bring the loss well below half.
    assert losses[0] > 1.8
    assert losses[-1] < 0.5 * losses[0]
    assert result.metrics["count"] == 1000  # every held-out digit, the padded rows masked
    assert result.metrics["top1"] > 0.75
    assert result.metrics["top5"] >= result.metrics["top1"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train_steps"] == 40
    step, _ = saved_params(tmp_path)
    assert int(step) == 40
    step, metrics = train.evaluate_checkpoint(train.load_run_config(str(tmp_path)),
                                              str(tmp_path), tasks.build)
    assert step == 40 and metrics == pytest.approx(result.metrics, abs=1e-6)
    again = train.train_and_evaluate(small_config(), str(tmp_path), tasks.build)  # resumes
    assert again.steps_run == 0
    assert_trees_close(again.state.params, result.state.params, atol=0)


@pytest.mark.slow  # two trainings; test_models keeps bf16 compute, float32 params
def test_mixed_precision_keeps_float32_params_and_loss(tmp_path):
    config = small_config(dtype="bfloat16", train_steps=2, log_every_steps=1)
    dataset = tiny_mnist()
    result = train.train_and_evaluate(config, str(tmp_path / "bf16"),
                                      task=classification.make_task(train.resolve_platform(config),
                                                                    dataset))
    config32 = small_config(train_steps=2, log_every_steps=1)
    train.train_and_evaluate(config32, str(tmp_path / "f32"),
                             task=classification.make_task(train.resolve_platform(config32),
                                                           dataset))
    assert {leaf.dtype for leaf in jax.tree.leaves(result.state.params)} == {jnp.dtype("float32")}
    bf16_loss = read_metrics(tmp_path / "bf16")[0]["loss"]
    f32_loss = read_metrics(tmp_path / "f32")[0]["loss"]
    assert bf16_loss != f32_loss  # really computed in bf16 ...
    assert abs(bf16_loss - f32_loss) < 0.05  # ... and close to float32 (about 3 digits)


def _train_subprocess(workdir, steps, env=None, extra=""):
    overrides = (f"train_steps={steps},batch_size=64,log_every_steps=1,progress=False,"
                 f"tensorboard=False,checkpoint_every_steps={steps},schedule='constant'{extra}")
    return run_module("experiments.train", f"--config={LENET_CONFIG}:{overrides}",
                      f"--workdir={workdir}", env=env)


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one_device")
    _train_subprocess(workdir, 4, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
    return workdir


@pytest.mark.slow  # 8 devices stay in the default suite in test_program's gather
def test_eight_devices_match_one(one_device_run, tmp_path):
    _train_subprocess(tmp_path, 4, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    one = [row["loss"] for row in read_metrics(one_device_run)]
    eight = [row["loss"] for row in read_metrics(tmp_path)]
    assert len(one) == len(eight) == 4
    np.testing.assert_allclose(eight, one, atol=1e-5, rtol=0)
    assert_trees_close(saved_params(tmp_path)[1], saved_params(one_device_run)[1], atol=1e-5)


@pytest.mark.slow  # two-process training; test_multiprocess_resume has the rest
def test_two_processes_train_together(one_device_run, tmp_path):
    """Two jax.distributed CPU processes, each feeding half of every global batch."""
    port = 20000 + os.getpid() % 20000
    overrides = ("train_steps=4,batch_size=64,log_every_steps=1,progress=False,"
                 "tensorboard=False,checkpoint_every_steps=4,schedule='constant'")
    procs = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": ROOT, "JAXCNN_COORDINATOR": f"127.0.0.1:{port}",
               "JAXCNN_NUM_PROCESSES": "2", "JAXCNN_PROCESS_ID": str(index),
               "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "experiments.train", f"--config={LENET_CONFIG}:{overrides}",
             f"--workdir={tmp_path}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    two = [row["loss"] for row in read_metrics(tmp_path)]
    one = [row["loss"] for row in read_metrics(one_device_run)]
    np.testing.assert_allclose(two, one, atol=1e-5, rtol=0)
    assert_trees_close(saved_params(tmp_path)[1], saved_params(one_device_run)[1], atol=1e-5)


@pytest.mark.slow  # the default suite resumes bit-identically in test_recovery's signal tests
def test_killed_run_resumes_to_identical_parameters(tmp_path):
    steps = 120
    overrides = (f"train_steps={steps},batch_size=64,log_every_steps=1,progress=False,"
                 "tensorboard=False,checkpoint_every_steps=10")
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", f"--config={LENET_CONFIG}:{overrides}",
         f"--workdir={killed}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        metrics = killed / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 35:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final_metrics.json").exists(), "the run finished before the kill"
    interrupted_at = len(read_metrics(killed))
    assert 35 <= interrupted_at < steps
    run_module("experiments.train", f"--config={LENET_CONFIG}:{overrides}",
               f"--workdir={killed}")
    resumed_rows = read_metrics(killed)
    assert resumed_rows[-1]["step"] == steps
    straight = tmp_path / "straight"
    run_module("experiments.train", f"--config={LENET_CONFIG}:{overrides}",
               f"--workdir={straight}")
    step_a, params_a = saved_params(killed)
    step_b, params_b = saved_params(straight)
    assert int(step_a) == int(step_b) == steps
    assert_trees_close(params_a, params_b, atol=0)


class _PoisonedDataset:
    """Embedded MNIST whose 8th training batch (step index 7) holds an all-NaN image."""

    def __init__(self, base):
        self.base = base

    def __getattr__(self, name):
        return getattr(self.base, name)

    def train_batches(self, global_batch, *, seed, start_step=0, **kw):
        for step, batch in enumerate(self.base.train_batches(
                global_batch, seed=seed, start_step=start_step, **kw), start=start_step):
            if step == 7:
                batch = {**batch, "image": batch["image"].copy()}
                batch["image"][0] = np.nan
            yield batch


def test_nan_loss_stops_with_step_and_last_checkpoint(tmp_path):
    config = small_config(train_steps=20, checkpoint_every_steps=5, log_every_steps=10)
    task = classification.make_task(train.resolve_platform(config), _PoisonedDataset(tiny_mnist()))
    with pytest.raises(FloatingPointError, match=r"at step 8; last good checkpoint: step 5"):
        train.train_and_evaluate(config, str(tmp_path), task=task)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    checkpointer = train.Checkpointer(str(tmp_path), keep=3, async_save=False)
    state = {"w": jnp.arange(4.0), "step": jnp.array(0)}
    checkpointer.save(1, state)
    checkpointer.save(2, {"w": jnp.arange(4.0) * 2, "step": jnp.array(2)})
    checkpointer.wait()
    for root, _, files in os.walk(tmp_path / "2"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    fresh = train.Checkpointer(str(tmp_path), keep=3, async_save=False)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    step, restored = fresh.restore_latest(abstract)
    assert step == 1
    np.testing.assert_array_equal(restored["w"], np.arange(4.0))


def test_unknown_config_key_is_named():
    with pytest.raises(KeyError, match="learnin_rate"):
        train.override(train.default_config(), "learnin_rate=0.1")
    config = small_config()
    config.batchsize = 32
    with pytest.raises(KeyError, match="batchsize"):
        train.train_and_evaluate(config, "/nonexistent/never/written", tasks.build)
    assert train.override(train.default_config(), "image_size=(28,28),learning_rate=1")[
        "image_size"] == (28, 28)
    widened = train.override(train.default_config(), "model_kwargs.width=0.25")
    assert widened.model_kwargs.width == 0.25  # the model's own kwargs are open
    with pytest.raises(TypeError, match="no_such_kwarg"):
        models.get_model("lenet5", **train.override(train.default_config(),
                                                   "model_kwargs.no_such_kwarg=1").model_kwargs)


def test_unprepared_tfds_dataset_fails_fast_with_instructions(tmp_path):
    start = time.time()
    with pytest.raises(FileNotFoundError) as error:
        data_lib.get_dataset("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert "cifar10" in message and str(tmp_path) in message and "tfds build" in message
    with pytest.raises(ValueError, match="no_such_dataset"):
        data_lib.get_dataset("no_such_dataset", data_dir=str(tmp_path))
    assert time.time() - start < 60


def test_durations_and_schedule():
    config = train.default_config()
    config.train_epochs, config.warmup_epochs = 2.5, 0.5
    assert train.to_steps(config, "train", 100) == 250
    config.train_steps = 7
    assert train.to_steps(config, "train", 100) == 7
    config.train_steps = None
    config.learning_rate = 0.1
    schedule = train.make_schedule(config, steps_per_epoch=100, total_steps=250)
    assert float(schedule(0)) == 0.0
    assert float(schedule(25)) == pytest.approx(0.05)
    assert float(schedule(50)) == pytest.approx(0.1)
    # Half-way through the 200 cosine steps the rate is half the peak.
    assert float(schedule(150)) == pytest.approx(0.05, rel=1e-5)
    config.schedule, config.warmup_epochs, config.decay_epochs = "step", 0.0, (1, 2)
    step_schedule = train.make_schedule(config, steps_per_epoch=100, total_steps=250)
    assert [float(step_schedule(s)) for s in (99, 100, 199, 200)] == pytest.approx(
        [0.1, 0.01, 0.01, 0.001])


def test_launch_cluster_dry_runs(tmp_path):
    def dry(*args):
        return subprocess.run(["./launch.sh", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True, env={**os.environ, "NODES": "2",
                                               "TASKS_PER_NODE": "4"}).stdout.strip()

    python = os.path.join(ROOT, ".venv", "bin", "python")
    *options, wrap = shlex.split(dry("slurm", "--dry-run", "train", "--config=c.py:a=1",
                                     "--workdir=/w"))
    # SIGTERM 120 s before the kill, requeued after preemption or the time limit.
    assert options == ["sbatch", "--requeue", "--signal=TERM@120", "--open-mode=append",
                       "--nodes=2", "--ntasks-per-node=4", "--gpus-per-task=1"]
    assert wrap == (f"--wrap=srun env JAXCNN_DISTRIBUTED=1 {python} -m experiments.train "
                    "--config=c.py:a=1 --workdir=/w; rc=$?; [ $rc -eq 143 ] && scontrol "
                    'requeue "$SLURM_JOB_ID"; exit $rc')
    # The job script requeues itself when the run exits 143 (preempted, saved) and only then:
    # run with stand-ins for srun (exiting with the code given) and scontrol (recording).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nexit "$SRUN_RC"\n')
    (bin_dir / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$RECORD"\n')
    for name in ("srun", "scontrol"):
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "scontrol.txt"
    for srun_rc, requeued in ((143, "requeue 77\n"), (0, ""), (1, "")):
        job = subprocess.run(["sh", "-c", wrap.removeprefix("--wrap=")], env={
            "PATH": f"{bin_dir}:/usr/bin:/bin", "SRUN_RC": str(srun_rc), "SLURM_JOB_ID": "77",
            "RECORD": str(record)})
        assert job.returncode == srun_rc
        assert (record.read_text() if record.exists() else "") == requeued
        record.unlink(missing_ok=True)
    assert dry("tpu", "--dry-run", "v4-32", "us-central2-b", "train", "--workdir=gs://b/r") == (
        "gcloud compute tpus tpu-vm ssh v4-32 --zone=us-central2-b --worker=all "
        "--command=cd\\ ~/jaxcnn\\ \\&\\&\\ JAXCNN_DISTRIBUTED=1\\ ./launch.sh\\ run\\ train"
        "\\ --workdir=gs://b/r")
