"""Orbax checkpoints under workdir/checkpoints: atomic, checksummed, fingerprinted, kept K deep.

Each step holds up to four items, committed together by Orbax's rename: `default` (the
state), `checksum` (a SHA-256 of every array), `fingerprint` (the run's, see fingerprint.py)
and `data` (the train-data iterator's Grain state, where the iterator has one), so none can
be lost without the step being incomplete; an incomplete or unreadable step is set aside like
a corrupt one.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcnn.errors import RunError
from jaxcnn.train import fingerprint as fingerprint_lib
from jaxcnn.train.faults import fault_point
from jaxcnn.train.lock import disk_error
from jaxcnn.train.sharding import all_processes_agree

STATE_ITEM = "default"  # the name a single-item manager used: older checkpoints stay readable
CHECKSUM_ITEM = "checksum"
FINGERPRINT_ITEM = "fingerprint"
DATA_ITEM = "data"  # the train iterator's get_state(), restored with set_state()
STEP_METADATA = "_CHECKPOINT_METADATA"  # Orbax's record of the step, naming its items
CORRUPT_DIR = "corrupt"


class CorruptCheckpointError(RunError, RuntimeError):
    """A checkpoint whose arrays do not match the checksum recorded when it was saved."""


def _host_copy(leaf: Any) -> np.ndarray | None:
    """This host's full copy of a leaf (None for an array sharded over other hosts too)."""
    if isinstance(leaf, jax.Array):
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        if not leaf.is_fully_addressable:
            return None
    return np.asarray(leaf)


def array_checksums(tree: Any) -> dict[str, str]:
    """{path: sha256 of dtype, shape and bytes} for every leaf this host holds whole."""
    sums = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = _host_copy(leaf)
        if array is None:
            continue
        digest = hashlib.sha256(f"{array.dtype.name}{list(array.shape)}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
        sums[fingerprint_lib.tree_path(path)] = digest.hexdigest()
    return sums


def verify_checksums(tree: Any, recorded: dict[str, str]) -> None:
    """Raise CorruptCheckpointError naming the arrays whose checksum differs from `recorded`."""
    actual = array_checksums(tree)
    bad = sorted(path for path in actual if recorded.get(path) != actual[path])
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CorruptCheckpointError(
            f"checksum mismatch in {len(bad)} array(s): {', '.join(bad[:5])}{more}")


def saved_steps(directory: str) -> list[int]:
    """The steps with a finished checkpoint under `directory`; creates nothing (no Orbax)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory)
                  if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def step_problem(step_dir: str) -> str | None:
    """Why a finished step directory is incomplete (an item or its metadata missing), or None.

    Orbax's `_CHECKPOINT_METADATA` names the items the step was written with; each must be
    there, and the state item must have its `_METADATA` (the tree it restores).
    """
    try:
        with open(os.path.join(step_dir, STEP_METADATA)) as f:
            items = set(json.load(f).get("item_handlers") or {})
    except FileNotFoundError:
        return f"{STEP_METADATA} is missing"
    except (OSError, ValueError, AttributeError) as error:
        return f"{STEP_METADATA} is unreadable ({type(error).__name__}: {error})"
    missing = sorted(item for item in items | {STATE_ITEM}
                     if not os.path.isdir(os.path.join(step_dir, item)))
    if missing:
        return f"item(s) {', '.join(missing)} missing"
    if not os.path.isfile(os.path.join(step_dir, STATE_ITEM, "_METADATA")):
        return f"{STATE_ITEM}/_METADATA is missing"
    return None


def _items_of(step_dir: str) -> set[str]:
    with open(os.path.join(step_dir, STEP_METADATA)) as f:
        return set(json.load(f).get("item_handlers") or {})


def _retry_vanishing(call: Callable[[], Any], attempts: int = 5) -> Any:
    """`call()`, retried when a step directory vanished under it (a trainer pruning old steps
    while this reader lists them)."""
    for attempt in range(attempts):
        try:
            return call()
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


def _write_error(error: BaseException, path: str, doing: str) -> RunError | None:
    """A RunError for a failed checkpoint write caused by the disk; None for anything else.

    Orbax and TensorStore report a full disk in their own exception types, so the errno or
    its text is looked for along the exception chain.
    """
    texts = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
             errno.EDQUOT: "Disk quota exceeded"}
    seen = error
    while seen is not None:
        code = getattr(seen, "errno", None)
        if code not in texts:
            code = next((c for c, text in texts.items() if text in str(seen)), None)
        if code is not None:
            return disk_error(OSError(code, os.strerror(code)), path, doing)
        seen = seen.__cause__ or seen.__context__
    return None


_DISK_ERROR_TEXTS = ("RESOURCE_EXHAUSTED", "No space left on device", "Read-only file system",
                     "Disk quota exceeded")


# What Orbax's and TensorStore's background work reports after a write failed: the callbacks
# of the other items find Orbax's event loop closed or its executor shut down, and the writes
# of the fragments not yet started are never awaited. Each arrived after the one-line error,
# from a background thread or at interpreter exit, so the error was no longer the last line.
_STRAGGLER_ERRORS = ("Event loop is closed", "cannot schedule new futures after shutdown",
                     "cannot schedule new futures after interpreter shutdown")
_UNAWAITED_WRITE = (r"coroutine '[\w.<>]*\basync_serialize_from_host\.<locals>\.write_fragment' "
                    "was never awaited")


class _DropDiskErrorLogs(logging.Filter):
    """Drops Orbax's and asyncio's tracebacks of a failed write caused by the disk, and of
    its stragglers: the save raises it as one line (`_disk_errors`), and the same failure
    logged from every background thread and task buried that line under hundreds."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return not any(marker in text for marker in _DISK_ERROR_TEXTS + _STRAGGLER_ERRORS)


def _quiet_disk_error_logs() -> None:
    _quiet_stragglers_of_a_failed_write()
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropDiskErrorLogs) for f in logger.filters):
            logger.addFilter(_DropDiskErrorLogs())


def _drop_stragglers_from(owner: Any, hook_name: str) -> None:
    """Wrap `owner.hook_name` (sys.unraisablehook, threading.excepthook: their reports both
    carry exc_type and exc_value) so that it drops the straggler errors, once."""
    previous = getattr(owner, hook_name)
    if getattr(previous, "drops_stragglers", False):
        return

    def hook(report):
        if not (report.exc_type is RuntimeError
                and str(report.exc_value) in _STRAGGLER_ERRORS):
            previous(report)

    hook.drops_stragglers = True
    setattr(owner, hook_name, hook)


def _quiet_stragglers_of_a_failed_write() -> None:
    """Drop (only) those reports, wherever they surface: unraisable, thread or warning."""
    warnings.filterwarnings("ignore", message=_UNAWAITED_WRITE, category=RuntimeWarning)
    _drop_stragglers_from(sys, "unraisablehook")
    _drop_stragglers_from(threading, "excepthook")


ORBAX_SETTLE_SECONDS = 60.0


def _join_orbax_threads(timeout_s: float) -> None:
    """Wait (at most `timeout_s` in all) for Orbax's background threads of a failed save.

    `wait_until_finished` returns at the first failed item, while the other items' threads
    (e.g. `write_metadata_after_commits`) may still be writing into the step's tmp folder:
    removed under them, a half-written file came back, and at exit they logged errors below
    the one-line message."""
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and \
                type(thread).__module__.startswith("orbax."):
            # The base join: Orbax's own re-raises the thread's error, reported already.
            threading.Thread.join(thread, max(deadline - time.monotonic(), 0.0))


class Checkpointer:
    """Saves and restores a state pytree with its checksum and fingerprint; bad steps set aside.

    Every process must call `save` and `restore_latest` (Orbax coordinates the hosts). Orbax
    writes each step into a temporary directory and renames it when complete, so a run killed
    while saving leaves the previous checkpoints intact. A step that is incomplete, fails to
    read or to verify is moved to `corrupt/STEP` (never deleted) and an older one is used; the
    step can then be saved again. `fingerprint` (see `fingerprint.run_fingerprint`) refuses
    checkpoints of another kind of run. `read_only=True` (evaluation, inspection) moves and
    writes nothing and tolerates steps vanishing while it reads (a trainer pruning them).
    """

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True, *,
                 fingerprint: dict[str, Any] | None = None, read_only: bool = False,
                 ignore_keys: tuple[str, ...] = ()):
        self.directory = os.path.abspath(directory)
        self.fingerprint = fingerprint
        self.ignore_keys = ignore_keys  # fingerprint keys not compared (see fingerprint.DATA_KEYS)
        self.read_only = read_only
        self._pending = 0  # the step of the last save started (async: maybe still writing)
        _quiet_disk_error_logs()
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise RunError(f"{self.directory} is a file, not a checkpoint directory; move it "
                           "away (or pass another --workdir) and rerun")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
        )
        handlers = {STATE_ITEM: ocp.StandardCheckpointHandler(),
                    CHECKSUM_ITEM: ocp.JsonCheckpointHandler(),
                    FINGERPRINT_ITEM: ocp.JsonCheckpointHandler(),
                    DATA_ITEM: ocp.JsonCheckpointHandler()}
        try:
            self.manager = _retry_vanishing(lambda: ocp.CheckpointManager(
                self.directory, options=options, item_handlers=handlers))
        except OSError as error:
            raise disk_error(error, self.directory, "create the checkpoint directory") from error

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data: dict[str, Any] | None = None) -> None:
        """Save `state` as `step` (async if so configured) with its checksum and fingerprint,
        and `data`, the train iterator's state (JSON), when given."""
        if self.read_only:
            raise ValueError(f"Checkpointer({self.directory!r}) is read-only; cannot save")
        items = {STATE_ITEM: ocp.args.StandardSave(state),
                 CHECKSUM_ITEM: ocp.args.JsonSave(
                     {"algorithm": "sha256", "arrays": array_checksums(state)})}
        if self.fingerprint is not None:
            items[FINGERPRINT_ITEM] = ocp.args.JsonSave(self.fingerprint)
        if data is not None:
            items[DATA_ITEM] = ocp.args.JsonSave(data)
        fault_point("save", step)
        self.wait()  # the previous async save: a full disk is reported with its own step
        with self._disk_errors(step):
            fault_point("disk_full", step)
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        self._pending = step
        fault_point("write", step)

    @contextlib.contextmanager
    def _disk_errors(self, step: int):
        """Turn a full or read-only disk under a save into a one-line RunError; remove the
        half-written step (the older steps stay) so a rerun with space resumes cleanly."""
        try:
            yield
        except Exception as error:
            problem = _write_error(error, os.path.join(self.directory, str(step)),
                                   f"save the checkpoint of step {step}")
            if problem is not None:
                with contextlib.suppress(Exception):  # let the other items' writes settle
                    self.manager.wait_until_finished()
                _join_orbax_threads(ORBAX_SETTLE_SECONDS)
            if problem is None:
                raise
            self._remove_unfinished(step)
            raise problem from None

    def _remove_unfinished(self, step: int) -> None:
        if jax.process_index() != 0:
            return
        for path in glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*")):
            shutil.rmtree(path, ignore_errors=True)

    def _read_json_item(self, step: int, item: str) -> Any:
        return self.manager.restore(step, args=ocp.args.Composite(
            **{item: ocp.args.JsonRestore()}))[item]

    def stored_fingerprint(self, step: int) -> dict[str, Any] | None:
        """The fingerprint saved with `step` (or the legacy fingerprint.json; None if neither)."""
        if FINGERPRINT_ITEM in _items_of(os.path.join(self.directory, str(step))):
            return self._read_json_item(step, FINGERPRINT_ITEM)
        return fingerprint_lib.read_legacy(self.directory)

    def data_state(self, step: int) -> dict[str, Any] | None:
        """The train iterator state saved with `step` (None: saved without one)."""
        if DATA_ITEM not in _items_of(os.path.join(self.directory, str(step))):
            return None
        return self._read_json_item(step, DATA_ITEM)

    def _restore_verified(self, step: int, target: Any) -> Any:
        """The state at `step`, its checksum verified (a pre-checksum checkpoint: warned)."""
        step_dir = os.path.join(self.directory, str(step))
        problem = step_problem(step_dir)
        if problem is not None:
            raise CorruptCheckpointError(f"incomplete checkpoint: {problem}")
        has_checksum = CHECKSUM_ITEM in _items_of(step_dir)
        items = {STATE_ITEM: ocp.args.StandardRestore(target)}
        if has_checksum:
            items[CHECKSUM_ITEM] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if has_checksum:
            verify_checksums(restored[STATE_ITEM], restored[CHECKSUM_ITEM]["arrays"])
        else:
            logging.warning("checkpoint at step %d in %s was written without checksums (by a "
                            "version before them): restored unverified", step, self.directory)
        return restored[STATE_ITEM]

    def _check_layout(self, step: int, abstract_state: Any) -> None:
        """Refuse (not 'corrupt') a readable checkpoint whose arrays have other shapes."""
        saved = fingerprint_lib.state_layout(self.manager.item_metadata(step)[STATE_ITEM])
        expected = fingerprint_lib.state_layout(abstract_state)
        if saved != expected:
            raise fingerprint_lib.mismatch_error(
                self.directory, f"the checkpoint at step {step} holds a differently shaped "
                "state (another model, dataset or optimiser?)",
                [fingerprint_lib.describe_difference("state_layout", saved, expected)])

    def _check_run(self, step: int, abstract_state: Any) -> None:
        """Refuse a step written by another kind of run (its fingerprint, else its shapes)."""
        if self.fingerprint is None:
            return
        stored = self.stored_fingerprint(step)
        if stored is None:
            self._check_layout(step, abstract_state)
        else:
            fingerprint_lib.check_fingerprint(self.directory, stored, self.fingerprint,
                                              self.ignore_keys)

    def _try_step(self, step: int, abstract_state: Any) -> tuple[Any, str | None]:
        """(state, None) if `step` is usable, else (None, why). Another run's step raises."""
        problem = step_problem(os.path.join(self.directory, str(step)))
        if problem is not None:
            return None, f"incomplete checkpoint: {problem}"
        try:
            self._check_run(step, abstract_state)
        except fingerprint_lib.FingerprintMismatchError:
            raise
        except Exception as error:  # an unreadable fingerprint item or state metadata
            return None, f"{type(error).__name__}: {error}"
        try:
            return self._restore_verified(step, abstract_state), None
        except Exception as error:  # corrupt or partial files
            return None, f"{type(error).__name__}: {error}"

    def restore_latest(self, abstract_state: Any) -> tuple[int | None, Any]:
        """(step, state) of the newest checkpoint that is complete, reads and verifies, or
        (None, None). Raises FingerprintMismatchError for another run's checkpoints."""
        if self.read_only:
            _retry_vanishing(self.manager.reload)
        for step in sorted(self.manager.all_steps(), reverse=True):
            state, problem = self._try_step(step, abstract_state)
            if all_processes_agree(problem is None):
                return step, state
            if self.read_only and not os.path.isdir(os.path.join(self.directory, str(step))):
                continue  # pruned by a running trainer while we read it: not a problem
            self._set_aside(step, problem or "failed on another process")
        return None, None

    def _set_aside(self, step: int, problem: str) -> None:
        """Move a bad step to corrupt/STEP (read-only: only warn) so it can be saved again."""
        if self.read_only:
            logging.warning("checkpoint at step %d in %s is unusable (%s); trying an older one",
                            step, self.directory, problem)
            return
        if jax.process_index() == 0:
            corrupt = os.path.join(self.directory, CORRUPT_DIR)
            os.makedirs(corrupt, exist_ok=True)
            target, copy = os.path.join(corrupt, str(step)), 0
            while os.path.exists(target):
                copy += 1
                target = os.path.join(corrupt, f"{step}.{copy}")
            os.rename(os.path.join(self.directory, str(step)), target)
            with open(os.path.join(target, "WHY.txt"), "w") as f:
                f.write(problem + "\n")
            logging.warning(
                "checkpoint at step %d in %s is unusable (%s); moved it to %s (kept for "
                "inspection, delete it when done) and trying an older one",
                step, self.directory, problem, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxcnn checkpoint {step} set aside")
        self.manager.reload()

    def restore_arrays(self, step: int | None = None) -> Any:
        """The saved tree (nested dicts) at `step` (default: latest) on this host's first device.

        Works whatever mesh wrote the checkpoint, so a run from 8 devices can be read on 1.
        Raises CorruptCheckpointError if the step is incomplete or its arrays do not match
        their recorded checksum.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        problem = step_problem(os.path.join(self.directory, str(step)))
        if problem is not None:
            raise CorruptCheckpointError(f"checkpoint at step {step} in {self.directory} is "
                                         f"incomplete: {problem}")
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda meta: jax.ShapeDtypeStruct(meta.shape, meta.dtype,
                                                                sharding=device),
                              self.manager.item_metadata(step)[STATE_ITEM])
        return self._restore_verified(step, target)

    def verify(self, step: int, abstract_state: Any) -> None:
        """Read `step` back and check it against its checksums (raises CorruptCheckpointError)."""
        self.manager.reload()
        self._restore_verified(step, abstract_state)

    def wait(self) -> None:
        """Block until the pending save is on disk (a full disk raises a one-line RunError)."""
        with self._disk_errors(self._pending):
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                self.manager.close()
            raise
        self.manager.close()
