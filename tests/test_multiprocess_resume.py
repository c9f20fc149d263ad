"""Every dataset kind resumes bit for bit across two jax.distributed processes.

For each kind beyond test_recovery's .npz arrays (faces: the P x K identity sampler;
detection: the localization task's box scenes; device: the `device:PATH` resident images)
two `python -m experiments.train` processes, one CPU device each, train straight to STEPS;
then two others are stopped by a SIGTERM to process 1 (both stop after the next
AGREE_EVERY_STEPS step and save it) and two more resume; the resumed run must end with
exactly the arrays, final metrics and logged train metrics of the straight one. One case
stops with 2 Grain workers per process and resumes with 1.

The data is tiny and built here; the processes share one persistent compilation cache.
"""

import random

import numpy as np
import pytest
from PIL import Image
from runs import assert_same_run, steps_on_disk, train_two_processes
from test_device_data import write_tree
from test_train import LENET_CONFIG, read_metrics

from jaxcnn import train

STEPS = 12
CHECKPOINT_EVERY = 4
PREEMPTED = "preempted at step {}; saved; rerun the same command to resume"
COMMON = (f"batch_size=8,eval_batch_size=16,train_steps={STEPS},"
          f"checkpoint_every_steps={CHECKPOINT_EVERY},log_every_steps=1,progress=False,"
          "tensorboard=False,eval_every_steps=None,schedule='constant'")
# Train metrics that measure time, not the run: they differ between any two runs.
TIMING = ("images_per_sec", "data_wait_fraction")


def _faces_folder(root):
    """root/s1..s8/1..5.pgm: the AT&T layout, 14x12 grayscale PGM faces of random pixels."""
    rng = np.random.default_rng(0)
    for person in range(1, 9):
        (root / f"s{person}").mkdir(parents=True)
        for number in range(1, 6):
            Image.fromarray(rng.integers(0, 256, (14, 12), dtype=np.uint8), "L").save(
                root / f"s{person}" / f"{number}.pgm")
    return root


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """{kind: (config path, overrides)} on tiny data, and the processes' environment."""
    root = tmp_path_factory.mktemp("kinds")
    faces = _faces_folder(root / "faces")
    write_tree(str(root / "device"), np.random.default_rng(1), per_class=(8, 3), side=32)
    runs = {
        # P = 4 people x K = 2 images; each process holds two people of every batch.
        "faces": ("experiments/configs/faces_att.py",
                  f"dataset='faces:{faces}',task.train_data='{faces}',"
                  "task.train_people='s1-s6',task.eval_people='s7-s8',image_size=(32,32),"
                  f"task.images_per_person=2,task.eigenfaces=4,warmup_steps=0,{COMMON}"),
        # Single-object 96x96 scenes with boxes and flips (the "boxes" batches).
        "detection": ("experiments/configs/localize.py",
                      "task.num_train=48,task.num_test=16,warmup_epochs=0.0,"
                      f"model_kwargs.widths=(8,8,16,16),model_kwargs.hidden=32,{COMMON}"),
        # uint8 images on the device, gathered and crop-flipped there by step key.
        "device": (LENET_CONFIG, f"dataset='device:{root / 'device'}',image_size=None,"
                                 f"augment='crop_flip',warmup_epochs=0.0,{COMMON}"),
    }
    env = {"JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    return runs, env


def _train(kinds, kind, workdir, faults=(None, None), extra=""):
    runs, env = kinds
    config, overrides = runs[kind]
    return train_two_processes(config, overrides + extra, workdir, env, faults)


@pytest.fixture(scope="module")
def straight(kinds, tmp_path_factory):
    """kind -> the workdir of its uninterrupted two-process run (made once, never changed)."""
    made = {}

    def get(kind):
        if kind not in made:
            workdir = tmp_path_factory.mktemp(f"straight_{kind}")
            results = _train(kinds, kind, workdir)
            assert [rc for rc, _ in results] == [0, 0], results[0][1][-3000:]
            made[kind] = workdir
        return made[kind]

    return get


def _last_line(stderr):
    """The last line of stderr but Python's resource_tracker warning, which follows the
    preempted line when Grain workers ran: 'There appear to be 2 leaked shared_memory objects
    to clean up at shutdown' (the batches in flight when the workers were stopped)."""
    return [line for line in stderr.strip().splitlines() if "resource_tracker" not in line][-1]


def _stop_and_resume(kinds, kind, workdir, stop_extra="", resume_extra=""):
    """SIGTERM to process 1 after a random odd step; both stop at the next agreed step,
    saved; then two processes resume to STEPS."""
    signalled = random.Random(kind).choice(range(1, STEPS - 2, 2))
    every = train.preemption.AGREE_EVERY_STEPS
    step = min(-(-signalled // every) * every, STEPS)
    results = _train(kinds, kind, workdir, faults=(None, f"sigterm:{signalled}"),
                     extra=stop_extra)
    assert [rc for rc, _ in results] == [143, 143], results[1][1][-3000:]
    assert [_last_line(err) for _, err in results] == [PREEMPTED.format(step)] * 2
    assert steps_on_disk(workdir)[-1] == step and step % CHECKPOINT_EVERY  # the stop's save
    assert not (workdir / "final_metrics.json").exists()
    resumed = _train(kinds, kind, workdir, extra=resume_extra)
    assert [rc for rc, _ in resumed] == [0, 0], resumed[0][1][-3000:]


def _assert_same_metrics(workdir, reference):
    """Every logged train metric but the timings equal bit for bit at every step (the last
    row of a step: the resumed run logs the steps after its checkpoint again)."""
    def last_rows(run):
        return {row["step"]: {k: v for k, v in row.items() if k not in TIMING}
                for row in read_metrics(run)}

    ours = last_rows(workdir)
    assert sorted(ours) == list(range(1, STEPS + 1))
    assert ours == last_rows(reference)


# Six processes each (straight, stopped, resumed; the straight run is kept for the next test):
# faces 110 s, detection 201 s, device 122 s of wall time on 2 cores beside a nice-15 table
# run, most of it process start-up and compilation (one shared persistent cache).
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["faces", "detection", "device"])
def test_two_processes_stopped_and_resumed_end_like_the_straight_run(kinds, straight, kind,
                                                                     tmp_path):
    reference = straight(kind)
    _stop_and_resume(kinds, kind, tmp_path)
    assert_same_run(tmp_path, reference, STEPS)
    _assert_same_metrics(tmp_path, reference)


# Four processes, each with its Grain workers, beside faces' straight run: 54 s of wall time
# after the faces test (135 s alone) on 2 cores beside a nice-15 table run.
@pytest.mark.slow
def test_stopped_with_two_workers_resumed_with_one_ends_like_the_straight_run(
        kinds, straight, tmp_path):
    """Faces augments on the host, so the workers compute what is trained on; the straight
    run used none (data_workers=0), the stopped run 2 per process, the resumed run 1."""
    reference = straight("faces")
    _stop_and_resume(kinds, "faces", tmp_path, stop_extra=",data_workers=2",
                     resume_extra=",data_workers=1")
    assert_same_run(tmp_path, reference, STEPS)
    _assert_same_metrics(tmp_path, reference)
