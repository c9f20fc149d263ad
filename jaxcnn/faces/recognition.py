"""Verification and one-shot recognition with a threshold: `verify`, `enroll`, `recognize`.

`recognize` gives the nearest enrolled identity, or NOT_RECOGNISED when it is farther than
the threshold. Distances are squared L2 between embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NOT_RECOGNISED = "not recognised"


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """(N, M) squared L2 distances between the rows of (N, D) a and (M, D) b."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be (N, D) and (M, D) with one D; got {a.shape}, "
                         f"{b.shape}")
    return jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)


def verify(emb_a: jax.Array, emb_b: jax.Array, threshold: float) -> jax.Array:
    """True where ||emb_a - emb_b||^2 <= threshold (same person), per row of (B, D) or (D,)."""
    emb_a, emb_b = jnp.asarray(emb_a), jnp.asarray(emb_b)
    if emb_a.shape != emb_b.shape:
        raise ValueError(f"emb_a and emb_b must have one shape; got {emb_a.shape}, {emb_b.shape}")
    return jnp.sum(jnp.square(emb_a - emb_b), axis=-1) <= threshold


@dataclasses.dataclass(frozen=True)
class Database:
    """Enrolled people: one embedding each (one-shot)."""

    embeddings: np.ndarray  # (K, D)
    names: tuple[str, ...]


def enroll(embeddings: Any, names: Sequence[str]) -> Database:
    """A database of one (D,) embedding per person; a name given twice is an error."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(names) != len(embeddings):
        raise ValueError(f"embeddings must be (K, D) with K names; got {embeddings.shape} and "
                         f"{len(names)} names")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ValueError(f"one image per person (one-shot): {repeated} enrolled more than once")
    return Database(embeddings, tuple(names))


def nearest_enrolled(emb: jax.Array, gallery: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(index, squared distance) of the nearest gallery row for each row of (N, D) emb."""
    d = squared_distances(emb, gallery)
    index = jnp.argmin(d, axis=1)
    return index, jnp.take_along_axis(d, index[:, None], axis=1)[:, 0]


def recognize(emb: Any, database: Database, threshold: float):
    """(name, distance) of the nearest enrolled person, name NOT_RECOGNISED beyond threshold.

    A (D,) embedding gives one (str, float); (N, D) gives (list of N names, (N,) distances).
    """
    emb = np.asarray(emb, np.float32)
    single = emb.ndim == 1
    batch = emb[None] if single else emb
    if batch.ndim != 2 or batch.shape[1] != database.embeddings.shape[1]:
        raise ValueError(f"emb must be (D,) or (N, D) with D = {database.embeddings.shape[1]}; "
                         f"got {emb.shape}")
    index, distance = map(np.asarray, nearest_enrolled(batch, database.embeddings))
    names = [database.names[i] if d <= threshold else NOT_RECOGNISED
             for i, d in zip(index, distance, strict=True)]
    return (names[0], float(distance[0])) if single else (names, distance)
