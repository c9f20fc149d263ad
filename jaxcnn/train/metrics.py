"""Metrics to workdir/metrics.jsonl, TensorBoard event files, and console progress."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from typing import Any

import numpy as np


def _scalar(value: Any) -> float:
    return float(np.asarray(value))


def _event_file(directory: str):
    """A new TensorBoard event file in `directory`, written without importing TensorFlow.

    TensorBoard's EventFileWriter would import TensorFlow (with its start-up banners) for its
    file system layer; its RecordWriter only frames records around a plain file.
    """
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    os.makedirs(directory, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    writer = RecordWriter(open(os.path.join(directory, name), "wb"))  # noqa: SIM115
    writer.write(event_pb2.Event(wall_time=time.time(),
                                 file_version="brain.Event:2").SerializeToString())
    return writer


class MetricWriter:
    """Writes on process 0 only; other processes get a silent writer."""

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115
        if tensorboard:
            self._tb = _event_file(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        """One JSON line {"step", "split", **metrics} and one TensorBoard scalar per metric."""
        if not self.enabled:
            return
        values = {key: _scalar(value) for key, value in metrics.items()}
        self._jsonl.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            from tensorboard.compat.proto import event_pb2, summary_pb2

            summary = summary_pb2.Summary(value=[
                summary_pb2.Summary.Value(tag=f"{split}/{key}", simple_value=value)
                for key, value in values.items()])
            self._tb.write(event_pb2.Event(wall_time=time.time(), step=step,
                                           summary=summary).SerializeToString())
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class Progress:
    """Console lines with step, rate (images/s) and ETA; `label` prefixes each line as
    `[label] ` so the parts of a multi-part run (config.progress_label) can be told apart."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True,
                 label: str = ""):
        self.total, self.start, self.enabled = total_steps, start_step, enabled
        self.prefix = f"[{label}] " if label else ""
        self.t0 = time.perf_counter()

    def line(self, step: int, global_batch: int, metrics: dict[str, float]) -> str:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        steps_done = max(step - self.start, 1)
        rate = steps_done * global_batch / elapsed
        eta = (self.total - step) * elapsed / steps_done
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        return (f"{self.prefix}step {step}/{self.total}  {shown}  {rate:,.0f} img/s  "
                f"ETA {_duration(eta)}")

    def show(self, step: int, global_batch: int, metrics: dict[str, float]) -> None:
        if self.enabled:
            print(self.line(step, global_batch, metrics), file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def images_per_second(step: Any, calls: int, batch: int) -> float:
    """Images/s of `calls` calls of `step()` (compiled already) at `batch` images each, timed
    until the last call's output is ready (jax dispatch is asynchronous)."""
    import jax

    start = time.perf_counter()
    for _ in range(calls):
        out = step()
    jax.block_until_ready(out)
    return calls * batch / (time.perf_counter() - start)
