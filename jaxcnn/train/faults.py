"""Fault injection for recovery tests: SIGKILL this process at a named point of a run.

Set `JAXCNN_FAULT` before starting a training, e.g. `JAXCNN_FAULT=step:7`:

- `step:N`     after the training metrics of step N are written (between two steps);
- `save:N`     inside the checkpoint save of step N, after the host copy and checksum and
               before Orbax writes anything;
- `write:N:S`  S seconds after Orbax started writing step N (an async write in flight).

Unset (the normal case) every call is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "JAXCNN_FAULT"


def _kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _planned() -> tuple[str, int, float] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    parts = spec.split(":")
    if parts[0] not in ("step", "save", "write") or len(parts) not in (2, 3):
        raise ValueError(f"{ENV} must be step:N, save:N or write:N:SECONDS; got {spec!r}")
    return parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0


def fault_point(point: str, step: int) -> None:
    """SIGKILL this process if JAXCNN_FAULT names `point` at `step` (a timer for 'write')."""
    planned = _planned()
    if planned is None or planned[:2] != (point, step):
        return
    if point == "write":
        timer = threading.Timer(planned[2], _kill_now)
        timer.daemon = True
        timer.start()
    else:
        _kill_now()
