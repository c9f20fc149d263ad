"""Orbax checkpoints under workdir/checkpoints: atomic, kept K deep, resumable."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def saved_steps(directory: str) -> list[int]:
    """The steps with a finished checkpoint under `directory`; creates nothing (no Orbax)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory)
                  if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


class Checkpointer:
    """Saves and restores a state pytree; an unreadable checkpoint falls back to the previous.

    Every process must call `save` and `restore` (Orbax coordinates the hosts). Orbax writes
    each step into a temporary directory and renames it when complete, so a run killed while
    saving leaves the previous checkpoints intact.
    """

    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore_latest(self, abstract_state: Any) -> tuple[int | None, Any]:
        """(step, state) of the newest readable checkpoint, or (None, None) if there is none."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
                return step, state
            except Exception as error:  # corrupt or partial files: fall back to an older one
                logging.warning(
                    "checkpoint at step %d in %s is unreadable (%s: %s); trying an older one",
                    step, self.directory, type(error).__name__, error,
                )
        return None, None

    def restore_arrays(self, step: int | None = None) -> Any:
        """The saved tree (nested dicts) at `step` (default: latest) on this host's first device.

        Works whatever mesh wrote the checkpoint, so a run from 8 devices can be read on 1.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda meta: jax.ShapeDtypeStruct(meta.shape, meta.dtype,
                                                                sharding=device),
                              self.manager.item_metadata(step))
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
