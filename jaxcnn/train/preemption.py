"""Preemption: SIGTERM or SIGINT ends a run cleanly at a step boundary, every process alike.

A scheduler (SLURM, preemptible TPU/GPU VMs) sends SIGTERM some time before it kills; Ctrl-C
sends SIGINT. While `catch_signals()` is active the first such signal only raises a flag
(later ones are ignored, so a second signal cannot interrupt the save); the loop checks the
flag after every step (multi-process runs: every AGREE_EVERY_STEPS steps and the last, with a
collective, so every process stops after the same step), saves that step, verifies it and
raises `Preempted`, whose exit code is 128 + the signal number (143 for SIGTERM,
130 for SIGINT), the shell's convention for "terminated by this signal".
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import jax

from jaxcnn.train.errors import RunError
from jaxcnn.train.sharding import process_max

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# A collective each step would cost a host round trip (1.3 ms on two CPU processes) and stall
# the asynchronous dispatch of the next step; schedulers warn minutes ahead (SLURM: 120 s).
AGREE_EVERY_STEPS = 10


class Preempted(RunError):
    """The run stopped on a signal after saving and verifying the checkpoint of `step`."""

    def __init__(self, step: int, signum: int):
        super().__init__(f"preempted at step {step}; saved; rerun the same command to resume")
        self.step, self.signum = step, signum
        self.exit_code = 128 + signum


class SignalFlag:
    """The first SIGTERM/SIGINT received (0: none) and how many came after it."""

    def __init__(self) -> None:
        self.signum = 0
        self.repeats = 0

    def _handle(self, signum: int, frame) -> None:
        del frame
        if self.signum:
            self.repeats += 1  # ignored: the run is already stopping at a step boundary
        else:
            self.signum = signum

    def stop_after(self, step: int, is_last: bool) -> int:
        """The signal to stop on after `step` (0: go on). Multi-process: a collective, asked
        only every AGREE_EVERY_STEPS steps and at the last, the same answer everywhere."""
        if jax.process_count() == 1:
            return self.signum
        if step % AGREE_EVERY_STEPS and not is_last:
            return 0
        return process_max(self.signum)


@contextlib.contextmanager
def catch_signals() -> Iterator[SignalFlag]:
    """Turn SIGTERM and SIGINT into a flag for the block (main thread only; elsewhere the
    flag never rises and signals keep their handlers)."""
    flag = SignalFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {signum: signal.signal(signum, flag._handle) for signum in SIGNALS}
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
