"""Metrics to workdir/metrics.jsonl, TensorBoard event files, and console progress."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import numpy as np

from jaxcnn.train.faults import fault_point


def _scalar(value: Any) -> float:
    return float(np.asarray(value))


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
            import tensorflow as tf

            tf.config.set_visible_devices([], "GPU")
            self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        """One JSON line {"step", "split", **metrics} and one TensorBoard scalar per metric."""
        if not self.enabled:
            return
        values = {key: _scalar(value) for key, value in metrics.items()}
        self._jsonl.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default(step=step):
                for key, value in values.items():
                    tf.summary.scalar(f"{split}/{key}", value)
            self._tb.flush()
        if split == "train":
            fault_point("step", step)

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class Progress:
    """Console lines with step, rate (images/s) and ETA."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True):
        self.total, self.start, self.enabled = total_steps, start_step, enabled
        self.t0 = time.perf_counter()

    def line(self, step: int, global_batch: int, metrics: dict[str, float]) -> str:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        steps_done = max(step - self.start, 1)
        rate = steps_done * global_batch / elapsed
        eta = (self.total - step) * elapsed / steps_done
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        return f"step {step}/{self.total}  {shown}  {rate:,.0f} img/s  ETA {_duration(eta)}"

    def show(self, step: int, global_batch: int, metrics: dict[str, float]) -> None:
        if self.enabled:
            print(self.line(step, global_batch, metrics), file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
