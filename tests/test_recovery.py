"""A run is never lost: workdir lock, run fingerprint, checksummed checkpoints, fault injection.

Every training here is a real `python -m experiments.train` process on a tiny synthetic .npz
set (LeNet-5, batch 8, a checkpoint every 2 steps) sharing one persistent compilation cache,
so each process costs about 3 s of CPU; the uninterrupted reference run is made once.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import ROOT, run_module
from test_train import LENET_CONFIG, read_metrics

from jaxcnn import train

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


def _steps_on_disk(workdir):
    return sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())


def _files(directory):
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, _, names in os.walk(directory) for name in names)


def _assert_same_run(workdir, reference, steps=REFERENCE_STEPS):
    """Bit-identical final state (every array, its checksum), final metrics and losses."""
    ours = train.Checkpointer(str(workdir / "checkpoints"), read_only=True)
    theirs = train.Checkpointer(str(reference / "checkpoints"), read_only=True)
    assert ours.latest_step() == theirs.latest_step() == steps
    a, b = ours.restore_arrays(), theirs.restore_arrays()
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert train.checkpoint.array_checksums(a) == train.checkpoint.array_checksums(b)
    final = json.loads((workdir / "final_metrics.json").read_text())
    assert final == json.loads((reference / "final_metrics.json").read_text())
    # A resumed run logs the steps after its checkpoint again: the last row of each step counts.
    last = {row["step"]: row["loss"] for row in read_metrics(workdir)}
    assert last == {row["step"]: row["loss"] for row in read_metrics(reference)}


# --- 1. one writer per workdir -------------------------------------------------------------

_HOLD_LOCK = ("import sys; from jaxcnn.train import WorkdirLock; "
              "WorkdirLock(sys.argv[1]).acquire(); print('locked', flush=True); sys.stdin.read()")


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
    assert _steps_on_disk(tmp_path) == [2]
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

def test_resuming_with_another_fingerprint_refuses_naming_the_keys(tiny, reference, tmp_path):
    workdir = _copy(reference, tmp_path)
    before = _files(workdir)
    refused = _train(tiny, workdir, extra=",optimizer='sgd',image_size=(28,28)", check=False)
    assert refused.returncode != 0
    assert "differs in image_shape, image_size, optimizer, state_layout" in refused.stderr
    assert "optimizer: 'adam' in the checkpoints, 'sgd' in this config" in refused.stderr
    assert "Nothing was changed or deleted" in refused.stderr
    assert _files(workdir) == before
    # Without the stored fingerprint (a workdir from before fingerprints) the array shapes
    # still tell a different run from a corrupt one: refused, nothing set aside.
    os.remove(workdir / "checkpoints" / "fingerprint.json")
    refused = _train(tiny, workdir, extra=",image_size=(28,28)", check=False)
    assert refused.returncode != 0
    assert "differently shaped state" in refused.stderr
    assert "params/fc3/kernel float32[400, 120] vs float32[256, 120]" in refused.stderr
    assert not (workdir / "checkpoints" / "corrupt").exists()
    # Keys that do not shape the state may change: the run resumes and goes on.
    _train(tiny, workdir, steps=REFERENCE_STEPS + 2, extra=",learning_rate=1e-4")
    assert [row["step"] for row in read_metrics(workdir)][-3:] == [12, 13, 14]
    assert _steps_on_disk(workdir)[-1] == REFERENCE_STEPS + 2


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
        train.workdir.tree_path(path) for (path, a), b in
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
    assert _steps_on_disk(workdir) == [8, 10]


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
