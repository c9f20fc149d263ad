"""Who may write a workdir: one training at a time.

`writer_lock(workdir)`: process 0 holds `WORKDIR/writer.lock` (host, pid, start time, command)
for the whole run; a second writer fails at once naming the holder; a lock left by a dead
process on this host is taken over with a warning. Readers (evaluation, inspection,
prediction) never lock. Which run a workdir's checkpoints belong to is `fingerprint.py`'s.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

import jax

from jaxcnn.errors import RunError
from jaxcnn.train.sharding import all_processes_agree

LOCK_NAME = "writer.lock"


class WorkdirLockedError(RunError, RuntimeError):
    """Another training holds the workdir."""


DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def is_disk_error(error: BaseException) -> bool:
    """A write that failed because the disk is full or read-only (not a bug of ours)."""
    return isinstance(error, OSError) and error.errno in DISK_ERRNOS


def disk_error(error: OSError, path: str, doing: str) -> RunError:
    """A one-line RunError for a failed write: full disk, read-only file system, or other."""
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only",
              errno.EACCES: "permission denied"}.get(error.errno, error.strerror or str(error))
    fix = ("free some space (older checkpoints are kept) and rerun the same command to resume"
           if error.errno in (errno.ENOSPC, errno.EDQUOT) else
           "use a --workdir on a writable file system and rerun")
    return RunError(f"cannot {doing}: {reason} ({path}); {fix}")


def make_workdir(directory: str) -> None:
    """Create `directory` (and parents), or raise a one-line RunError saying why not."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise RunError(f"workdir {directory} is a file, not a directory; pass another "
                       "--workdir (or move that file away)")
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise RunError(f"cannot create workdir {directory}: {error.filename or directory} is a "
                       "file, not a directory; pass another --workdir") from error
    except OSError as error:
        raise disk_error(error, directory, "create the workdir") from error


def _process_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":  # a zombie has exited; only its parent has not collected it yet
        return -1
    return int(fields[19])


def _holder_alive(holder: dict[str, Any]) -> bool | None:
    """True/False for a holder on this host; None when it runs elsewhere (cannot tell)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    ticks = _process_start_ticks(pid)
    if ticks == -1:
        return False
    recorded = holder.get("pid_start")
    return ticks is None or recorded is None or ticks == recorded


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
            f"{holder.get('started')} ({holder.get('command', '?')})")


def _this_process() -> dict[str, Any]:
    return {
        "host": socket.gethostname(), "pid": os.getpid(),
        "pid_start": _process_start_ticks(os.getpid()),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


@contextlib.contextmanager
def _directory_guard(directory: str) -> Iterator[None]:
    """An flock on the directory itself: serialises lock take-overs (freed if we die)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class WorkdirLock:
    """`WORKDIR/writer.lock` held by this process; `release()` (or `with`) frees it."""

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
        self.holder = _this_process()
        self.held = False
        self.created_workdir = False  # removed again on release if the run wrote nothing

    def acquire(self) -> WorkdirLock:
        """Take the lock, or raise WorkdirLockedError naming the process that holds it."""
        directory = os.path.dirname(self.path)
        self.created_workdir = not os.path.isdir(directory)
        make_workdir(directory)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.holder, f)
                f.flush()
                os.fsync(f.fileno())  # a full disk fails here, not later in os.link
        except OSError as error:
            with contextlib.suppress(OSError):
                os.remove(tmp)  # leave no half-written lock behind
            raise disk_error(error, self.path, "take the writer lock") from error
        try:
            with _directory_guard(directory):
                try:
                    os.link(tmp, self.path)  # atomic: fails if the lock exists, never half-written
                except FileExistsError:
                    self._take_over_if_stale(tmp)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.held = True
        return self

    def _take_over_if_stale(self, tmp: str) -> None:
        try:
            with open(self.path) as f:
                holder = json.load(f)
        except (OSError, ValueError) as error:
            raise WorkdirLockedError(
                f"{self.path} exists but cannot be read ({error}); if no training is running "
                "in this workdir, delete that file and start again") from error
        alive = _holder_alive(holder)
        if alive is False:
            logging.warning("taking over the stale lock %s: its holder (%s) is no longer "
                            "running", self.path, _describe(holder))
            os.replace(tmp, self.path)
            return
        where = "" if alive else (
            "; it runs on another host, so if it has died, delete the lock file")
        raise WorkdirLockedError(
            f"workdir {os.path.dirname(self.path)} is in use by another training: "
            f"{_describe(holder)} holds {self.path}{where}. Wait for it to finish or use "
            "another --workdir.")

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if not self.held:
            return
        self.held = False
        try:
            with open(self.path) as f:
                current = json.load(f)
        except (OSError, ValueError):
            return
        if (current.get("host"), current.get("pid")) == (self.holder["host"], self.holder["pid"]):
            os.remove(self.path)
        if self.created_workdir:  # a run that failed before writing anything leaves no trace
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(self.path))  # only if empty

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


@contextlib.contextmanager
def writer_lock(workdir: str) -> Iterator[WorkdirLock | None]:
    """Hold the workdir's writer lock on process 0 for the block; every process fails if not."""
    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(workdir).acquire()
        except WorkdirLockedError as locked:
            error = locked
    if not all_processes_agree(error is None):
        raise error or WorkdirLockedError(
            f"process 0 could not lock workdir {workdir} (its log names the holder)")
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()
