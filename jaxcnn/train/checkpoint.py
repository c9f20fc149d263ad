"""Orbax checkpoints under workdir/checkpoints: atomic, checksummed, kept K deep, resumable."""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcnn.train import workdir as workdir_lib
from jaxcnn.train.errors import RunError
from jaxcnn.train.faults import fault_point

STATE_ITEM = "default"  # the name a single-item manager used: older checkpoints stay readable
CHECKSUM_ITEM = "checksum"
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
        sums[workdir_lib.tree_path(path)] = digest.hexdigest()
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


class Checkpointer:
    """Saves and restores a state pytree with a checksum; a bad checkpoint is moved aside.

    Every process must call `save` and `restore_latest` (Orbax coordinates the hosts). Orbax
    writes each step into a temporary directory and renames it when complete, so a run killed
    while saving leaves the previous checkpoints intact; the checksum of the saved arrays is
    an item of the same step, so it is committed with them. A checkpoint that fails to read
    or verify is moved to `corrupt/STEP` (never deleted) and an older one is used; the step
    can then be saved again. `fingerprint` (see `workdir.run_fingerprint`) refuses checkpoints
    of another kind of run. `read_only=True` (evaluation, inspection) moves and writes nothing.
    """

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True, *,
                 fingerprint: dict[str, Any] | None = None, read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.fingerprint = fingerprint
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={STATE_ITEM: ocp.StandardCheckpointHandler(),
                           CHECKSUM_ITEM: ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Save `state` as `step` (asynchronously if so configured) with its checksum."""
        if self.read_only:
            raise ValueError(f"Checkpointer({self.directory!r}) is read-only; cannot save")
        checksum = {"algorithm": "sha256", "arrays": array_checksums(state)}
        fault_point("save", step)
        self.manager.save(step, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state),
            CHECKSUM_ITEM: ocp.args.JsonSave(checksum)}), force=True)
        fault_point("write", step)

    def _restore_verified(self, step: int, target: Any) -> Any:
        """The state at `step`, its checksum verified (a pre-checksum checkpoint: warned)."""
        has_checksum = os.path.isdir(os.path.join(self.directory, str(step), CHECKSUM_ITEM))
        items = {STATE_ITEM: ocp.args.StandardRestore(target)}
        if has_checksum:
            items[CHECKSUM_ITEM] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if has_checksum:
            verify_checksums(restored[STATE_ITEM], restored[CHECKSUM_ITEM]["arrays"])
        else:
            logging.warning("checkpoint at step %d in %s has no checksum (written before "
                            "checksums existed): restored unverified", step, self.directory)
        return restored[STATE_ITEM]

    def _check_layout(self, step: int, abstract_state: Any) -> None:
        """Refuse (not 'corrupt') a readable checkpoint whose arrays have other shapes."""
        try:
            saved = workdir_lib.state_layout(self.manager.item_metadata(step)[STATE_ITEM])
        except Exception:  # unreadable metadata: restoring will fail and say why
            return
        expected = workdir_lib.state_layout(abstract_state)
        if saved != expected:
            raise workdir_lib.FingerprintMismatchError(
                f"refusing to resume: the checkpoint at step {step} in {self.directory} holds "
                f"a differently shaped state (another model, dataset or optimiser?):\n"
                + workdir_lib.describe_difference("state_layout", saved, expected) + "\n"
                "Nothing was changed or deleted. Resume with the original config, use another "
                f"--workdir, or start over deliberately by moving {self.directory} away.")

    def restore_latest(self, abstract_state: Any) -> tuple[int | None, Any]:
        """(step, state) of the newest checkpoint that reads and verifies, or (None, None)."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if self.fingerprint is not None:
            workdir_lib.check_fingerprint(self.directory, self.fingerprint, bool(steps))
        for step in steps:
            self._check_layout(step, abstract_state)
            state, problem = None, None
            try:
                state = self._restore_verified(step, abstract_state)
            except Exception as error:  # corrupt or partial files
                problem = f"{type(error).__name__}: {error}"
            if workdir_lib.all_processes_agree(problem is None):
                self._store_fingerprint()
                return step, state
            self._set_aside(step, problem or "failed on another process")
        self._store_fingerprint()
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

    def _store_fingerprint(self) -> None:
        if self.read_only or self.fingerprint is None or jax.process_index() != 0:
            return
        if workdir_lib.read_fingerprint(self.directory) != self.fingerprint:
            workdir_lib.write_fingerprint(self.directory, self.fingerprint)

    def restore_arrays(self, step: int | None = None) -> Any:
        """The saved tree (nested dicts) at `step` (default: latest) on this host's first device.

        Works whatever mesh wrote the checkpoint, so a run from 8 devices can be read on 1.
        Raises CorruptCheckpointError if the arrays do not match their recorded checksum.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda meta: jax.ShapeDtypeStruct(meta.shape, meta.dtype,
                                                                sharding=device),
                              self.manager.item_metadata(step)[STATE_ITEM])
        return self._restore_verified(step, target)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
