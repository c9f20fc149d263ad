"""Data parallelism: one mesh over every device, batch split, parameters replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """jax.distributed.initialize for multi-process runs (explicit, or SLURM/TPU auto-detect)."""
    if coordinator is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator, num_processes, process_id)


def make_mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, name: str = "batch_size") -> None:
    """The global batch must split evenly over devices (and hence over processes)."""
    devices = mesh.devices.size
    if global_batch % devices:
        raise ValueError(
            f"{name}={global_batch} does not divide over the {devices} devices of the mesh; "
            f"use a multiple of {devices}"
        )


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's slice of a batch -> global arrays sharded along the batch axis."""
    sharding = batch_sharded(mesh)
    return {key: jax.make_array_from_process_local_data(sharding, value)
            for key, value in batch.items()}


def process_max(value: int) -> int:
    """The largest of `value` over all processes (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))


def all_processes_agree(ok: bool) -> bool:
    """True when `ok` is true on every process (a collective: every process must call it)."""
    return process_max(0 if ok else 1) == 0
