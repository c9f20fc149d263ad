"""Who may write a workdir, and which run its checkpoints belong to.

- `writer_lock(workdir)`: one training per workdir. Process 0 holds `WORKDIR/writer.lock`
  (host, pid, start time, command) for the whole run; a second writer fails at once naming
  the holder; a lock left by a dead process on this host is taken over with a warning.
  Readers (evaluation, inspection, prediction) never lock.
- `run_fingerprint(program)`: the config keys that shape the
  training state, stored as `WORKDIR/checkpoints/fingerprint.json`; `check_fingerprint`
  refuses to resume checkpoints written under another one, naming the keys that differ.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxcnn.train.errors import RunError

LOCK_NAME = "writer.lock"
FINGERPRINT_NAME = "fingerprint.json"


class WorkdirLockedError(RunError, RuntimeError):
    """Another training holds the workdir."""


class FingerprintMismatchError(RunError, ValueError):
    """The checkpoints in a workdir were written by a run with a different state layout."""


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
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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
        os.makedirs(directory, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.holder, f)
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


def all_processes_agree(ok: bool) -> bool:
    """True when `ok` is true on every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok, np.int32))))


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


def _canonical(value: Any) -> Any:
    """JSON-comparable form: tuples become lists, ConfigDicts dicts."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def tree_path(path: tuple) -> str:
    """'params/conv1/kernel' for a jax key path (dict keys, attributes and indices alike)."""
    names = []
    for key in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                names.append(str(getattr(key, attribute)))
                break
        else:
            names.append(str(key))
    return "/".join(names)


def state_layout(tree: Any) -> dict[str, str]:
    """{path: 'dtype[shape]'} of every array leaf (arrays or ShapeDtypeStructs)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tree_path(path): f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}"
            for path, leaf in leaves}


def run_fingerprint(program: Any) -> dict[str, Any]:
    """The config keys (and derived facts) that shape a Program's training state, JSON-ready.

    model, model_kwargs, dataset, image size and shape, classes, optimiser, parameter dtypes,
    the task's keys (defaults with config.task on top) and the layout of every state array
    (which catches what no key names, e.g. a model whose code changed).
    """
    config, dataset, abstract_state = program.config, program.task.dataset, program.abstract_state
    params = getattr(abstract_state, "params", abstract_state)
    task_keys = dict(getattr(program.task, "task_defaults", {}) or {})
    task_keys.update((config.get("task") or {}).items())
    return _canonical({
        "model": config.model,
        "model_kwargs": config.get("model_kwargs", {}),
        "dataset": config.dataset,
        "image_size": config.get("image_size"),
        "image_shape": tuple(dataset.image_shape),
        "num_classes": int(dataset.num_classes),
        "optimizer": config.optimizer,
        "param_dtypes": sorted({np.dtype(leaf.dtype).name for leaf in jax.tree.leaves(params)}),
        "task": task_keys,
        "state_layout": state_layout(abstract_state),
    })


def differing_keys(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ (or that only one of the fingerprints has), sorted."""
    return sorted(key for key in set(stored) | set(current)
                  if stored.get(key, "<absent>") != current.get(key, "<absent>"))


def read_fingerprint(checkpoint_dir: str) -> dict[str, Any] | None:
    path = os.path.join(checkpoint_dir, FINGERPRINT_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_fingerprint(checkpoint_dir: str, fingerprint: dict[str, Any]) -> None:
    """Atomically (temporary file + rename) store the fingerprint beside the checkpoints."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    path = os.path.join(checkpoint_dir, FINGERPRINT_NAME)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(fingerprint, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def describe_difference(key: str, stored: Any, current: Any, limit: int = 5) -> str:
    """One line per differing key; for nested dicts (the state layout) the first few leaves."""
    if isinstance(stored, dict) and isinstance(current, dict) and key == "state_layout":
        paths = differing_keys(stored, current)
        shown = [f"{p} {stored.get(p, '<absent>')} vs {current.get(p, '<absent>')}"
                 for p in paths[:limit]]
        more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
        return f"  {key}: {len(paths)} arrays differ: " + "; ".join(shown) + more
    return f"  {key}: {stored!r} in the checkpoints, {current!r} in this config"


def check_fingerprint(checkpoint_dir: str, fingerprint: dict[str, Any],
                      has_checkpoints: bool) -> None:
    """Raise FingerprintMismatchError if existing checkpoints belong to another kind of run."""
    stored = read_fingerprint(checkpoint_dir)
    if stored is None or not has_checkpoints:
        return
    keys = differing_keys(stored, fingerprint)
    if not keys:
        return
    lines = [describe_difference(key, stored.get(key, "<absent>"), fingerprint.get(key, "<absent>"))
             for key in keys]
    workdir = os.path.dirname(os.path.abspath(checkpoint_dir))
    raise FingerprintMismatchError(
        f"refusing to resume: the checkpoints in {checkpoint_dir} were written by a run that "
        f"differs in {', '.join(keys)}:\n" + "\n".join(lines) + "\n"
        f"Nothing was changed or deleted. Resume with the original config "
        f"({os.path.join(workdir, 'config.json')}), use another --workdir, or start over "
        f"deliberately by moving {checkpoint_dir} away.")
