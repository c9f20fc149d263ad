"""Helpers for tests that run `python -m experiments.train` processes and compare their runs:
two processes joined by jax.distributed, the steps on disk, and bit-identical runs."""

import json
import os
import random
import subprocess
import sys

import jax
import numpy as np
from conftest import ROOT
from test_train import read_metrics

from jaxcnn import train


def train_two_processes(config: str, overrides: str, workdir, env: dict | None = None,
                        faults=(None, None), timeout: int = 300) -> list[tuple[int, str]]:
    """`experiments.train --config=CONFIG:OVERRIDES` as two jax.distributed processes (one
    CPU device each) on `workdir`, with extra environment `env`; `faults[i]` is process i's
    JAXCNN_FAULT. Returns each process's (returncode, stderr)."""
    port = 20000 + (os.getpid() + random.randrange(10000)) % 20000
    procs = []
    for index in range(2):
        proc_env = {**os.environ, "PYTHONPATH": ROOT, **(env or {}),
                    "JAXCNN_COORDINATOR": f"127.0.0.1:{port}", "JAXCNN_NUM_PROCESSES": "2",
                    "JAXCNN_PROCESS_ID": str(index),
                    "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
        proc_env.pop("JAXCNN_FAULT", None)
        if faults[index]:
            proc_env["JAXCNN_FAULT"] = faults[index]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "experiments.train", f"--config={config}:{overrides}",
             f"--workdir={workdir}"], cwd=ROOT, env=proc_env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:  # one hung process (its peer died) must not outlive the test
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [(proc.returncode, err) for proc, (_, err) in zip(procs, outputs, strict=True)]


def steps_on_disk(workdir) -> list[int]:
    """The checkpoint steps in workdir/checkpoints, ascending."""
    return sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())


def assert_same_run(workdir, reference, steps: int) -> None:
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
