"""Fault injection for recovery tests: kill, signal or fill the disk at a named point of a run.

Set `JAXCNN_FAULT` before starting a training, e.g. `JAXCNN_FAULT=step:7`:

- `step:N`      SIGKILL after step N (between two steps; after its metrics when N is logged);
- `save:N`      SIGKILL inside the checkpoint save of step N, after the host copy and
                checksum and before Orbax writes anything;
- `write:N:S`   SIGKILL S seconds after Orbax started writing step N (an async write);
- `sigterm:N`, `sigint:N`
                send this process SIGTERM (SIGINT) after step N, and the same signal again
                inside the preemption save that follows (a second signal during the save);
- `disk_full:N` the checkpoint save of step N fails with ENOSPC (No space left on device).

Unset (the normal case) every call is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import errno
import os
import signal
import threading

ENV = "JAXCNN_FAULT"
_KINDS = ("step", "save", "write", "sigterm", "sigint", "disk_full")
_SIGNALS = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}


def _kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _planned() -> tuple[str, int, float] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    parts = spec.split(":")
    if parts[0] not in _KINDS or len(parts) not in (2, 3):
        raise ValueError(f"{ENV} must be one of step:N, save:N, write:N:SECONDS, sigterm:N, "
                         f"sigint:N, disk_full:N; got {spec!r}")
    return parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0


def fault_point(point: str, step: int) -> None:
    """Act if JAXCNN_FAULT names `point` at `step`: SIGKILL (a timer for 'write'), a signal
    ('step' also triggers sigterm/sigint), or an ENOSPC OSError ('disk_full')."""
    planned = _planned()
    if planned is None or planned[1] != step:
        return
    kind = planned[0]
    if kind in _SIGNALS and point in ("step", "preempt_save"):
        os.kill(os.getpid(), _SIGNALS[kind])
    elif kind != point:
        return
    elif kind == "write":
        timer = threading.Timer(planned[2], _kill_now)
        timer.daemon = True
        timer.start()
    elif kind == "disk_full":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"(injected by {ENV})")
    else:
        _kill_now()
