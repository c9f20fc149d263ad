"""A run is never lost: workdir lock, run fingerprint, checksummed checkpoints, fault injection.

Every training here is a real `python -m experiments.train` process on a tiny synthetic .npz
set (LeNet-5, batch 8, a checkpoint every 2 steps) sharing one persistent compilation cache,
so each process costs about 3 s of CPU; the uninterrupted reference run is made once.
"""

import contextlib
import gc
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, run_module
from runs import assert_same_run, steps_on_disk, train_two_processes
from test_train import LENET_CONFIG, read_metrics

from jaxcnn import tasks, train
from jaxcnn.train import checkpoint as checkpoint_lib

REFERENCE_STEPS = 12
CHECKPOINT_EVERY = 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(npz path, subprocess environment with a shared compilation cache)."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    path = root / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8),
             y_train=np.arange(64) % 10, x_test=rng.integers(0, 256, (16, 28, 28, 1), np.uint8),
             y_test=np.arange(16) % 10)
    env = {"JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    return str(path), env


def _train(tiny, workdir, steps=REFERENCE_STEPS, extra="", fault=None, check=True):
    """One `experiments.train` process on the tiny set; `fault` sets JAXCNN_FAULT."""
    path, env = tiny
    overrides = (f"dataset='npz:{path}',batch_size=8,eval_batch_size=16,train_steps={steps},"
                 f"checkpoint_every_steps={CHECKPOINT_EVERY},log_every_steps=1,progress=False,"
                 "tensorboard=False,eval_every_steps=None,warmup_epochs=0.0,schedule='constant'"
                 f"{extra}")
    env = {**env, **({"JAXCNN_FAULT": fault} if fault else {})}
    return run_module("experiments.train", f"--config={LENET_CONFIG}:{overrides}",
                      f"--workdir={workdir}", env=env, check=check)


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """An uninterrupted run of REFERENCE_STEPS steps (never modified: tests copy it)."""
    workdir = tmp_path_factory.mktemp("reference")
    _train(tiny, workdir)
    return workdir


def _copy(workdir, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(workdir, target)
    return target


def _files(directory):
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, _, names in os.walk(directory) for name in names)


def _assert_same_run(workdir, reference, steps=REFERENCE_STEPS):
    assert_same_run(workdir, reference, steps)


# --- 1. one writer per workdir -------------------------------------------------------------

_HOLD_LOCK = ("import sys; from jaxcnn.train import WorkdirLock; "
              "WorkdirLock(sys.argv[1]).acquire(); print('locked', flush=True); sys.stdin.read()")


@pytest.mark.slow  # two trainings; the lock's rules stay in the default test below
def test_second_writer_fails_naming_the_holder_and_a_stale_lock_is_taken_over(tiny, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = _train(tiny, tmp_path, steps=2, check=False)
        assert second.returncode != 0
        message = second.stderr
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert str(tmp_path / "writer.lock") in message
        # Failed at once: nothing of the second run was written.
        assert sorted(os.listdir(tmp_path)) == ["writer.lock"]
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: the next training takes the lock over and says so.
    taken = _train(tiny, tmp_path, steps=2)
    assert f"taking over the stale lock {tmp_path / 'writer.lock'}" in taken.stderr
    assert f"pid {holder.pid}" in taken.stderr
    assert steps_on_disk(tmp_path) == [2]
    assert not (tmp_path / "writer.lock").exists()  # released on exit


def test_lock_of_another_host_or_unreadable_is_never_taken_over(tmp_path):
    lock_path = tmp_path / "writer.lock"
    lock_path.write_text(json.dumps({"host": "elsewhere", "pid": os.getpid(), "started": "x"}))
    with pytest.raises(train.WorkdirLockedError, match="on host elsewhere.*another host"):
        train.WorkdirLock(str(tmp_path)).acquire()
    lock_path.write_text("{half a lock")
    with pytest.raises(train.WorkdirLockedError, match="cannot be read"):
        train.WorkdirLock(str(tmp_path)).acquire()
    assert lock_path.read_text() == "{half a lock"  # neither attempt touched it
    lock_path.unlink()
    with train.WorkdirLock(str(tmp_path)) as lock:  # ours, then released
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
        with pytest.raises(train.WorkdirLockedError, match=f"pid {os.getpid()}"):
            train.WorkdirLock(str(tmp_path)).acquire()  # a live holder on this host
    assert lock.held is False and not lock_path.exists()


# --- 2. a workdir belongs to one kind of run -----------------------------------------------

def _last_line(result):
    """The one line a failed command printed last on stderr (library logs may precede it)."""
    return result.stderr.strip().splitlines()[-1]


def test_resuming_with_another_fingerprint_refuses_naming_the_keys(tiny, reference, tmp_path):
    workdir = _copy(reference, tmp_path)
    before = _files(workdir)
    refused = _train(tiny, workdir, extra=",optimizer='sgd',image_size=(28,28)", check=False)
    assert refused.returncode == 1
    line = _last_line(refused)
    assert line.startswith("error: refusing to use the checkpoints in ")
    assert "differs in image_shape, image_size, normalization, optimizer, state_layout" in line
    assert "optimizer: 'adam' in the checkpoints, 'sgd' in this config" in line
    assert "Nothing was changed or deleted" in line
    assert "Traceback" not in refused.stderr
    assert _files(workdir) == before
    # The fingerprint is an item of every step: nothing beside the steps can be lost.
    assert not (workdir / "checkpoints" / "fingerprint.json").exists()
    assert all((workdir / "checkpoints" / str(step) / "fingerprint").is_dir()
               for step in steps_on_disk(workdir))
    # Keys that do not shape the state may change: the run resumes and goes on.
    _train(tiny, workdir, steps=REFERENCE_STEPS + 2, extra=",learning_rate=1e-4")
    assert [row["step"] for row in read_metrics(workdir)][-3:] == [12, 13, 14]
    assert steps_on_disk(workdir)[-1] == REFERENCE_STEPS + 2


def _drop_item(step_dir, item):
    """Make a step look written by an older version: without `item` and without its mention."""
    shutil.rmtree(step_dir / item)
    meta_path = step_dir / "_CHECKPOINT_METADATA"
    meta = json.loads(meta_path.read_text())
    del meta["item_handlers"][item]
    meta_path.write_text(json.dumps(meta))


def test_steps_from_before_fingerprint_items_are_checked_by_their_shapes(tiny, reference,
                                                                          tmp_path):
    workdir = _copy(reference, tmp_path)
    for step in steps_on_disk(workdir):
        _drop_item(workdir / "checkpoints" / str(step), "fingerprint")
    refused = _train(tiny, workdir, extra=",image_size=(28,28)", check=False)
    assert refused.returncode == 1
    assert "differently shaped state" in _last_line(refused)
    assert "params/fc3/kernel float32[400, 120] vs float32[256, 120]" in _last_line(refused)
    assert not (workdir / "checkpoints" / "corrupt").exists()


def test_normalize_is_in_the_fingerprint(tiny, reference, tmp_path):
    """Defect 4: resuming with normalize=False was accepted and rewrote the final metrics."""
    workdir = _copy(reference, tmp_path)
    before = _files(workdir)
    final = (workdir / "final_metrics.json").read_text()
    refused = _train(tiny, workdir, extra=",normalize=False", check=False)
    assert refused.returncode == 1
    assert "differs in normalization, normalize" in _last_line(refused)
    assert "normalize: True in the checkpoints, False in this config" in _last_line(refused)
    assert _files(workdir) == before and (workdir / "final_metrics.json").read_text() == final


def test_another_dataset_of_the_same_shape_is_refused(tiny, reference, tmp_path):
    """Defect 5: with fingerprint.json deleted, another dataset of one shape went through."""
    workdir = _copy(reference, tmp_path)
    other = tmp_path / "other.npz"
    rng = np.random.default_rng(1)
    np.savez(other, x_train=rng.integers(0, 128, (64, 28, 28, 1), dtype=np.uint8),
             y_train=np.arange(64) % 10, x_test=rng.integers(0, 128, (16, 28, 28, 1), np.uint8),
             y_test=np.arange(16) % 10)
    (workdir / "checkpoints" / "fingerprint.json").unlink(missing_ok=True)  # none now
    refused = _train(tiny, workdir, extra=f",dataset='npz:{other}'", check=False)
    assert refused.returncode == 1
    assert "differs in dataset, normalization" in _last_line(refused)


# --- 3. and 4. corrupt checkpoints ---------------------------------------------------------

def test_unreadable_newest_checkpoint_is_set_aside_and_its_step_saved_again(
        tiny, reference, tmp_path):
    workdir = _copy(reference, tmp_path)
    newest = workdir / "checkpoints" / str(REFERENCE_STEPS)
    for name in _files(newest / "default"):
        (newest / "default" / name).write_bytes(b"garbage")
    rerun = _train(tiny, workdir)
    corrupt = workdir / "checkpoints" / "corrupt" / str(REFERENCE_STEPS)
    assert f"moved it to {corrupt}" in rerun.stderr
    assert (corrupt / "default" / "_METADATA").read_bytes() == b"garbage"  # kept as it was
    assert "JSONDecodeError" in (corrupt / "WHY.txt").read_text()
    # Resumed from step 10, retrained steps 11-12 and saved step 12 again.
    assert [row["step"] for row in read_metrics(workdir)][-2:] == [11, 12]
    _assert_same_run(workdir, reference)
    again = _train(tiny, workdir)  # the step-12 checkpoint is good now: nothing to do
    assert "unusable" not in again.stderr
    assert sorted(os.listdir(workdir / "checkpoints" / "corrupt")) == [str(REFERENCE_STEPS)]


def test_checksum_catches_one_flipped_byte_in_an_array_file(reference, tmp_path):
    workdir = _copy(reference, tmp_path)
    ckpt_dir = workdir / "checkpoints"
    step_dir = ckpt_dir / str(REFERENCE_STEPS) / "default"
    array_file = max((step_dir / name for name in _files(step_dir) if "/d/" in name),
                     key=os.path.getsize)  # ocdbt data: the arrays' bytes, uncompressed
    data = bytearray(array_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    array_file.write_bytes(bytes(data))
    # Orbax alone reads it without complaint, values changed ...
    flipped = ocp.StandardCheckpointer().restore(step_dir)
    clean = train.Checkpointer(str(reference / "checkpoints"), read_only=True).restore_arrays()
    changed = sorted(
        train.fingerprint.tree_path(path) for (path, a), b in
        zip(jax.tree_util.tree_flatten_with_path(flipped)[0], jax.tree.leaves(clean), strict=True)
        if not np.array_equal(np.asarray(a), np.asarray(b)))
    assert changed
    # ... the recorded checksums name exactly the arrays that changed ...
    with pytest.raises(train.CorruptCheckpointError,
                       match=f"checksum mismatch in {len(changed)} array.*{changed[0]}"):
        train.Checkpointer(str(ckpt_dir), read_only=True).restore_arrays()
    # ... and a writer sets the step aside and falls back to the previous one.
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), clean)
    step, state = train.Checkpointer(str(ckpt_dir)).restore_latest(abstract)
    assert step == REFERENCE_STEPS - CHECKPOINT_EVERY
    assert "checksum mismatch" in (ckpt_dir / "corrupt" / str(REFERENCE_STEPS) / "WHY.txt"
                                   ).read_text()
    assert steps_on_disk(workdir) == [8, 10]


# --- fault injection -----------------------------------------------------------------------

def _kill_points(rng, steps, kills):
    """`kills` JAXCNN_FAULT specs at increasing steps, so each is reached after a resume."""
    points = []
    for step in sorted(rng.sample(range(1, steps + 1), kills)):
        kind = rng.choice(["step", "save", "write"]) if step % CHECKPOINT_EVERY == 0 else "step"
        points.append(f"write:{step}:{rng.uniform(0, 0.01):.4f}" if kind == "write"
                      else f"{kind}:{step}")
    return points


def _kill_and_resume(tiny, workdir, steps, points):
    """Run with each fault in turn (each run resumes the last), then once to the end."""
    unfinished_writes = 0
    for point in points:
        killed = _train(tiny, workdir, steps=steps, fault=point, check=False)
        assert killed.returncode == -signal.SIGKILL, (
            f"JAXCNN_FAULT={point} did not kill the run (rc {killed.returncode}):\n"
            f"{killed.stderr[-3000:]}")
        assert not (workdir / "final_metrics.json").exists()
        unfinished_writes += any("orbax-checkpoint-tmp" in name
                                 for name in os.listdir(workdir / "checkpoints"))
    assert unfinished_writes >= 1, "no kill landed inside a checkpoint write"
    _train(tiny, workdir, steps=steps)
    assert not (workdir / "writer.lock").exists()
    assert not (workdir / "checkpoints" / "corrupt").exists()  # a kill never corrupts


@pytest.mark.slow  # 22 s; the default tier keeps test_train's real SIGKILL and resume
def test_killed_six_times_at_random_points_ends_bit_identical(tiny, reference, tmp_path):
    points = _kill_points(random.Random(3), REFERENCE_STEPS, 6)
    assert {p.split(":")[0] for p in points} == {"step", "save", "write"}  # every kind
    _kill_and_resume(tiny, tmp_path, REFERENCE_STEPS, points)
    _assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_killed_fifty_times_at_random_points_ends_bit_identical(tiny, tmp_path):
    steps = 64
    reference = tmp_path / "reference"
    _train(tiny, reference, steps=steps)
    killed = tmp_path / "killed"
    _kill_and_resume(tiny, killed, steps, _kill_points(random.Random(50), steps, 50))
    _assert_same_run(killed, reference, steps)


# --- a step missing an item is set aside like a corrupt one (defects 1 and 2) --------------

def _flip_a_byte(step_dir):
    array_file = max((step_dir / "default" / name for name in _files(step_dir / "default")
                      if "/d/" in name), key=os.path.getsize)
    data = bytearray(array_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    array_file.write_bytes(bytes(data))


def test_step_without_its_checksum_item_is_set_aside_not_restored_unverified(
        tiny, reference, tmp_path):
    """Defect 1: a step whose checksum item was deleted (and bytes flipped) was restored
    'unverified'; the finished run then overwrote final_metrics.json with NaN and exit 0."""
    workdir = _copy(reference, tmp_path)
    newest = workdir / "checkpoints" / str(REFERENCE_STEPS)
    shutil.rmtree(newest / "checksum")
    _flip_a_byte(newest)
    rerun = _train(tiny, workdir)
    corrupt = workdir / "checkpoints" / "corrupt" / str(REFERENCE_STEPS)
    assert f"moved it to {corrupt}" in rerun.stderr
    assert "item(s) checksum missing" in (corrupt / "WHY.txt").read_text()
    assert "unverified" not in rerun.stderr
    assert [row["step"] for row in read_metrics(workdir)][-2:] == [11, 12]  # from step 10
    _assert_same_run(workdir, reference)


@pytest.mark.slow  # setting a step aside stays in the default suite (unreadable newest step)
def test_step_without_state_metadata_is_set_aside_and_evaluate_uses_the_previous(
        tiny, reference, tmp_path):
    """Defect 2: a deleted default/_METADATA made every train fail ('differently shaped
    state') and evaluate crash; the intact previous step was never used."""
    workdir = _copy(reference, tmp_path)
    (workdir / "checkpoints" / str(REFERENCE_STEPS) / "default" / "_METADATA").unlink()
    evaluated = run_module("experiments.evaluate", f"--workdir={workdir}", env=tiny[1])
    assert evaluated.stdout.startswith(f"checkpoint step {REFERENCE_STEPS - CHECKPOINT_EVERY}:")
    assert "default/_METADATA is missing" in evaluated.stderr
    assert steps_on_disk(workdir) == [8, 10, 12]  # a reader moves nothing
    rerun = _train(tiny, workdir)
    assert "differently shaped" not in rerun.stderr
    why = workdir / "checkpoints" / "corrupt" / str(REFERENCE_STEPS) / "WHY.txt"
    assert "default/_METADATA is missing" in why.read_text()
    _assert_same_run(workdir, reference)


# --- final metrics, divergence, NaN inputs, the step fault (defects 3, 8, 9, 11) ------------

def test_final_metrics_name_the_step_of_the_state_evaluated(tiny, reference, tmp_path):
    """Defect 3: a finished 12-step run resumed with train_steps=6 said 'step 6'."""
    workdir = _copy(reference, tmp_path)
    rerun = _train(tiny, workdir, steps=6, extra=",progress=True")
    assert f"final eval at step {REFERENCE_STEPS}:" in rerun.stdout
    assert "past this config's 6 steps" in rerun.stderr
    final = json.loads((workdir / "final_metrics.json").read_text())
    assert final == json.loads((reference / "final_metrics.json").read_text())
    assert final["step"] == REFERENCE_STEPS
    assert read_metrics(workdir, "eval")[-1]["step"] == REFERENCE_STEPS


def test_nan_in_the_evaluation_images_is_named_as_an_input_problem(tiny, tmp_path):
    """Defect 8: a NaN eval image gave exit 0 with loss NaN; evaluate blamed the checkpoint."""
    rng = np.random.default_rng(0)
    path = tmp_path / "nan.npz"
    x_test = rng.uniform(0, 1, (16, 28, 28, 1)).astype(np.float32)
    x_test[5, 3, 3, 0] = np.nan
    np.savez(path, x_train=rng.uniform(0, 1, (64, 28, 28, 1)).astype(np.float32),
             y_train=np.arange(64) % 10, x_test=x_test, y_test=np.arange(16) % 10)
    workdir = tmp_path / "run"
    trained = _train(tiny, workdir, steps=2, extra=f",dataset='npz:{path}'", check=False)
    assert trained.returncode == 1
    expected = (f"1 of the 16 evaluation images of 'npz:{path}' contain NaN or inf pixels: "
                "the inputs are at fault, not the checkpoint")
    assert expected in _last_line(trained)
    assert not (workdir / "final_metrics.json").exists()
    assert not (workdir / "writer.lock").exists()
    evaluated = run_module("experiments.evaluate", f"--workdir={workdir}", env=tiny[1],
                           check=False)
    assert evaluated.returncode == 1
    assert expected in _last_line(evaluated) and "diverged" not in evaluated.stderr


def test_finite_divergence_to_chance_is_a_warning_with_the_figures(tiny, tmp_path):
    """Defect 9: Adam at learning rate 1e3 ended at chance with exit 0 and no word."""
    diverged = _train(tiny, tmp_path / "lr1e3", steps=6, extra=",learning_rate=1e3")
    final = json.loads((tmp_path / "lr1e3" / "final_metrics.json").read_text())
    losses = [row["loss"] for row in read_metrics(tmp_path / "lr1e3")]
    assert all(np.isfinite(losses)) and losses[-1] > np.log(10)  # finite, worse than uniform
    assert final["top1"] <= 0.1 + 0.02  # chance (1/10) or worse, on 16 examples
    assert (f"the run ended at chance: eval top1 {final['top1']:.4f} vs 1/10 = 0.1000, last "
            f"training loss {losses[-1]:.4g} vs ln 10 = 2.303") in diverged.stderr
    # Unit check of the rule: above chance + max(0.02, 0.1/K), or a loss below ln K, is quiet.
    assert train.loop.chance_warning({"top1": 0.125}, 10, [5.0], 6) is None
    assert train.loop.chance_warning({"top1": 0.11}, 10, [2.2], 6) is None
    assert train.loop.chance_warning({"top1": 0.11}, 10, [2.4], 6) is not None
    assert train.loop.chance_warning({"top1": 0.11}, 10, [2.4], 0) is None  # no step ran
    assert train.loop.chance_warning({"loss": 0.1}, 10, [2.4], 6) is None  # no accuracy


def test_step_fault_fires_on_a_step_that_is_not_logged(tiny, tmp_path):
    """Defect 11: JAXCNN_FAULT=step:N never fired when N was not a logged step."""
    killed = _train(tiny, tmp_path, steps=8, extra=",log_every_steps=4", fault="step:3",
                    check=False)
    assert killed.returncode == -signal.SIGKILL
    assert read_metrics(tmp_path) == []  # died before the first logged step (4) ...
    assert steps_on_disk(tmp_path) in ([], [2])  # ... after step 2's save began


# --- evaluate while a trainer prunes old steps (defect 7) -----------------------------------

def test_evaluate_tolerates_steps_vanishing_while_it_reads(reference, tmp_path, monkeypatch):
    """Defect 7: evaluate failed with 'No such file or directory: .../checkpoints/N' when the
    trainer deleted an old step while the reader listed or read the steps."""
    workdir = _copy(reference, tmp_path)
    ckpt_dir = workdir / "checkpoints"
    config = train.load_run_config(str(workdir))
    original = ocp.CheckpointManager._load_checkpoint_infos
    vanished = []

    def listing_races_a_prune(self, *args, **kwargs):
        if not vanished:  # the trainer deletes step 8 between the reader's listdir and read
            vanished.append(8)
            shutil.rmtree(ckpt_dir / "8")
            raise FileNotFoundError(2, "No such file or directory", str(ckpt_dir / "8"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "_load_checkpoint_infos", listing_races_a_prune)
    step, metrics = train.evaluate_checkpoint(config, str(workdir), tasks.build)
    assert vanished == [8] and step == REFERENCE_STEPS
    final = json.loads((reference / "final_metrics.json").read_text())
    assert metrics["top1"] == final["top1"]
    # Listed, then pruned before it is read: the next newest step is used, nothing moved.
    reader = train.Checkpointer(str(ckpt_dir), read_only=True)
    shutil.rmtree(ckpt_dir / str(REFERENCE_STEPS))
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                            reader.restore_arrays(10))
    assert reader.manager.all_steps() == [10, 12]
    step, _ = reader.restore_latest(abstract)
    assert step == 10 and steps_on_disk(workdir) == [10]


# --- preemption: SIGTERM and SIGINT (defect 6) ----------------------------------------------

PREEMPTED = "preempted at step {}; saved; rerun the same command to resume"


@pytest.mark.parametrize("kind, signum", [
    ("sigterm", signal.SIGTERM),
    pytest.param("sigint", signal.SIGINT, marks=pytest.mark.slow)])
def test_signal_at_a_random_step_saves_that_step_and_resumes_bit_identical(
        tiny, reference, tmp_path, kind, signum):
    """The signal arrives after a random step that is not a checkpoint step, and again while
    the preemption checkpoint is being written; the run saves that step, verifies it, frees
    the lock, prints one line and exits 128 + signal; rerunning ends as if never stopped."""
    step = random.Random(kind).choice(range(1, REFERENCE_STEPS, CHECKPOINT_EVERY))  # odd
    stopped = _train(tiny, tmp_path, fault=f"{kind}:{step}", check=False)
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    assert _last_line(stopped) == PREEMPTED.format(step)
    assert "Traceback" not in stopped.stderr and "KeyboardInterrupt" not in stopped.stderr
    assert steps_on_disk(tmp_path)[-1] == step
    assert not (tmp_path / "writer.lock").exists()
    assert not (tmp_path / "final_metrics.json").exists()
    assert [row["step"] for row in read_metrics(tmp_path)][-1] == step
    reader = train.Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
    assert int(reader.restore_arrays(step)["step"]) == step  # complete and verified
    _train(tiny, tmp_path)
    _assert_same_run(tmp_path, reference)


def _train_two_processes(tiny, workdir, steps=REFERENCE_STEPS, faults=(None, None),
                         checkpoint_every=4):
    """Two jax.distributed processes (one CPU device each) on the tiny set; `faults[i]` is
    process i's JAXCNN_FAULT. Returns each process's (returncode, stderr)."""
    path, env = tiny
    overrides = (f"dataset='npz:{path}',batch_size=8,eval_batch_size=16,train_steps={steps},"
                 f"checkpoint_every_steps={checkpoint_every},log_every_steps=1,progress=False,"
                 "tensorboard=False,eval_every_steps=None,warmup_epochs=0.0,schedule='constant'")
    return train_two_processes(LENET_CONFIG, overrides, workdir, env, faults)


@pytest.mark.slow  # six processes, about 50 s of CPU
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_saved_step(tiny, tmp_path):
    """Only process 1 is signalled; the processes agree every AGREE_EVERY_STEPS steps, so both
    stop after the next such step, both save it (Orbax coordinates the hosts) and exit 143;
    the resumed run ends bit for bit like an uninterrupted two-process run."""
    straight = tmp_path / "straight"
    assert [rc for rc, _ in _train_two_processes(tiny, straight)] == [0, 0]
    signalled = random.Random(2).choice(range(1, REFERENCE_STEPS, CHECKPOINT_EVERY))
    every = train.preemption.AGREE_EVERY_STEPS
    step = min(-(-signalled // every) * every, REFERENCE_STEPS)
    stopped = tmp_path / "stopped"
    results = _train_two_processes(tiny, stopped, faults=(None, f"sigterm:{signalled}"))
    assert [rc for rc, _ in results] == [143, 143], results[1][1][-3000:]
    assert [err.strip().splitlines()[-1] for _, err in results] == [PREEMPTED.format(step)] * 2
    assert steps_on_disk(stopped)[-1] == step  # 10: not a checkpoint step (every 4)
    assert not (stopped / "writer.lock").exists()
    assert [rc for rc, _ in _train_two_processes(tiny, stopped)] == [0, 0]
    _assert_same_run(stopped, straight)


# --- a full or read-only disk, files where directories belong (defect 12) -------------------

@contextlib.contextmanager
def _tmpfs(directory, size_kb):
    """A tmpfs of `size_kb` KiB at `directory` (root only); yields False where not allowed."""
    directory.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs",
                              str(directory)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], check=True)


def _du_kb(directory):
    return sum(os.path.getsize(os.path.join(directory, name))
               for name in _files(directory)) // 1024 + 1


def _leftovers(workdir):
    names = _files(workdir)
    return [n for n in names if n.endswith(".tmp") or "orbax-checkpoint-tmp" in n]


def test_full_disk_keeps_older_steps_prints_one_line_and_a_rerun_with_space_resumes(
        tiny, reference, tmp_path):
    """A tmpfs with room for about three checkpoints (an injected ENOSPC where mounting is not
    allowed): the run stops with one line naming the path, nothing half-written is left, the
    older steps stay, and once there is space the same command resumes and ends bit-identical."""
    step_kb = _du_kb(reference / "checkpoints" / str(REFERENCE_STEPS))
    disk = tmp_path / "disk"
    with _tmpfs(disk, 3 * step_kb + 96) as mounted:
        workdir = disk / "run"
        full = _train(tiny, workdir, fault=None if mounted else "disk_full:8", check=False)
        assert full.returncode == 1, full.stderr[-3000:]
        line = _last_line(full)
        assert line.startswith("error: cannot "), full.stderr[-4000:]
        assert "the disk is full" in line and "free some space" in line
        assert str(workdir) in line
        assert "Traceback" not in full.stderr
        assert not (workdir / "writer.lock").exists()
        assert _leftovers(workdir) == []  # no writer.lock.PID.tmp, no half-written step
        kept = steps_on_disk(workdir)
        assert kept and kept[-1] < REFERENCE_STEPS
        if mounted:
            subprocess.run(["mount", "-o", f"remount,size={20 * step_kb}k", str(disk)],
                           check=True)
        _train(tiny, workdir)
        _assert_same_run(workdir, reference)


def test_after_a_failed_write_only_orbaxs_stragglers_are_dropped(monkeypatch, capsys,
                                                                  caplog):
    """What Orbax's background work reports after a failed write (seen in CI below the one-line
    error) is dropped; any other error of a thread or coroutine is still printed."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)

    def in_a_thread(message):
        def fail():
            raise RuntimeError(message)
        thread = threading.Thread(target=fail)
        thread.start()
        thread.join()

    def async_serialize_from_host():  # the name Orbax's serialization gives its coroutines
        async def write_fragment():
            pass
        return write_fragment()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoint_lib._quiet_disk_error_logs()
        checkpoint_lib._quiet_disk_error_logs()  # idempotent: one hook, not a chain
        for message in ("cannot schedule new futures after shutdown", "Event loop is closed",
                        "cannot schedule new futures after interpreter shutdown",
                        "a bug of ours"):
            in_a_thread(message)
        del_coroutine = async_serialize_from_host()
        del del_coroutine
        gc.collect()

        async def other_work():
            pass
        other = other_work()
        del other
        gc.collect()
        # Orbax's metadata thread logs the same error through absl (seen in a run here).
        logger = logging.getLogger("absl")
        logger.error("_SignalingThread.run() raised an exception: cannot schedule new futures "
                     "after shutdown")
        logger.error("a logged bug of ours")
    printed = capsys.readouterr().err
    assert "a bug of ours" in printed and "a logged bug of ours" in caplog.text
    assert "cannot schedule" not in caplog.text
    assert "cannot schedule" not in printed and "Event loop is closed" not in printed
    assert [str(w.message).split("'")[1] for w in caught] == [
        "test_after_a_failed_write_only_orbaxs_stragglers_are_dropped.<locals>.other_work"]


@pytest.mark.slow
def test_read_only_workdir_is_one_line_and_evaluate_still_reads_it(tiny, reference, tmp_path):
    with _tmpfs(tmp_path / "ro", 20 * _du_kb(reference / "checkpoints")) as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs needs root")
        workdir = _copy(reference, tmp_path / "ro")
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "ro")], check=True)
        refused = _train(tiny, workdir, check=False)
        assert refused.returncode == 1
        assert _last_line(refused) == (
            f"error: cannot take the writer lock: the file system is read-only "
            f"({workdir / 'writer.lock'}); use a --workdir on a writable file system and rerun")
        evaluated = run_module("experiments.evaluate", f"--workdir={workdir}", env=tiny[1])
        assert evaluated.stdout.startswith(f"checkpoint step {REFERENCE_STEPS}:")


def test_files_where_directories_belong_are_one_line_errors(tiny, tmp_path):
    workdir_file = tmp_path / "a_file"
    workdir_file.write_text("not a workdir")
    refused = _train(tiny, workdir_file, steps=2, check=False)
    assert refused.returncode == 1
    assert _last_line(refused) == (f"error: workdir {workdir_file} is a file, not a directory; "
                                   "pass another --workdir (or move that file away)")
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "checkpoints").write_text("not a directory")
    refused = _train(tiny, workdir, steps=2, check=False)
    assert refused.returncode == 1
    assert _last_line(refused) == (
        f"error: {workdir / 'checkpoints'} is a file, not a checkpoint directory; move it away "
        "(or pass another --workdir) and rerun")
    assert sorted(os.listdir(workdir)) == ["checkpoints"]  # nothing else written, lock freed


def test_evaluate_with_another_fingerprint_is_one_line(tiny, reference, tmp_path):
    path, _ = tiny
    refused = run_module(
        "experiments.evaluate", f"--workdir={reference}",
        f"--config={LENET_CONFIG}:dataset='npz:{path}',image_size=(28,28),optimizer='sgd'",
        env=tiny[1], check=False)
    assert refused.returncode == 1
    line = _last_line(refused)
    assert line.startswith("error: refusing to use the checkpoints in ")
    assert "differs in image_shape, image_size, normalization, optimizer, state_layout" in line


@pytest.mark.slow
def test_sigterm_from_outside_stops_at_the_step_it_names(tiny, tmp_path):
    """A real SIGTERM sent by another process (as a scheduler does) at whatever step the run
    has reached: the checkpoint is at the step the line names and the rerun finishes."""
    path, env = tiny
    steps = 400
    overrides = (f"dataset='npz:{path}',batch_size=8,eval_batch_size=16,train_steps={steps},"
                 "checkpoint_every_steps=1000,log_every_steps=1,progress=False,"
                 "tensorboard=False,warmup_epochs=0.0,schedule='constant'")
    args = [sys.executable, "-m", "experiments.train", f"--config={LENET_CONFIG}:{overrides}",
            f"--workdir={tmp_path}"]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=240)[1]
    assert proc.returncode == 143, stderr[-3000:]
    step = int(stderr.strip().splitlines()[-1].split()[3].rstrip(";"))
    assert stderr.strip().splitlines()[-1] == PREEMPTED.format(step)
    assert 5 <= step < steps and steps_on_disk(tmp_path) == [step]  # saved only because of it
    resumed = _train(tiny, tmp_path, steps=steps, extra=",checkpoint_every_steps=1000")
    assert "Traceback" not in resumed.stderr
    assert [row["step"] for row in read_metrics(tmp_path)][-1] == steps
    assert steps_on_disk(tmp_path) == [step, steps]


def test_steps_from_older_versions_restore_with_their_legacy_records(reference, tmp_path,
                                                                     caplog):
    """A step written before checksums existed (its Orbax record names no checksum item) is
    restored unverified with a warning; a step from before fingerprint items is checked
    against checkpoints/fingerprint.json when there is one."""
    workdir = _copy(reference, tmp_path)
    ckpt_dir = workdir / "checkpoints"
    newest = ckpt_dir / str(REFERENCE_STEPS)
    _drop_item(newest, "checksum")
    _drop_item(newest, "fingerprint")
    reader = train.Checkpointer(str(ckpt_dir), read_only=True)
    with caplog.at_level("WARNING"):
        arrays = reader.restore_arrays()
    assert int(arrays["step"]) == REFERENCE_STEPS
    assert f"checkpoint at step {REFERENCE_STEPS} in {ckpt_dir} was written without " \
           "checksums" in caplog.text
    stored = train.Checkpointer(str(ckpt_dir), read_only=True).stored_fingerprint(10)
    (ckpt_dir / "fingerprint.json").write_text(json.dumps({**stored, "optimizer": "sgd"}))
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), arrays)
    with pytest.raises(train.FingerprintMismatchError, match="differs in optimizer "):
        train.Checkpointer(str(ckpt_dir), read_only=True,
                           fingerprint=stored).restore_latest(abstract)
