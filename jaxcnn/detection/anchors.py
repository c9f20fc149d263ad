"""YOLOv2 dimension clusters: k-means on box sizes with 1 - IoU as the distance."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxcnn.detection.iou import shape_iou

UPDATES = ("mean", "median")


def _centre_update(sizes, member, centres, update):
    """New centres: the mean (YOLOv2) or the coordinate-wise median of each cluster's
    members; an empty cluster stays put."""
    counts = member.sum(0)
    if update == "mean":
        new = (member.T @ sizes) / jnp.maximum(counts, 1)[:, None]
    else:
        masked = jnp.where(member.T[:, :, None] > 0, sizes[None], jnp.nan)  # (k, N, 2)
        new = jnp.nanmedian(masked, axis=1)
    return jnp.where(counts[:, None] > 0, new, centres)


def _kmeans(sizes, key, k, num_iters, update):
    first = jax.random.choice(key, sizes.shape[0], (k,), replace=False)
    centres = sizes[first]

    def step(_, centres):
        nearest = jnp.argmax(shape_iou(sizes, centres), axis=1)  # max IoU = min 1 - IoU
        member = jax.nn.one_hot(nearest, k, dtype=sizes.dtype)  # (N, k)
        return _centre_update(sizes, member, centres, update)

    centres = jax.lax.fori_loop(0, num_iters, step, centres)
    centres = centres[jnp.argsort(centres[:, 0] * centres[:, 1])]
    mean_iou = jnp.mean(jnp.max(shape_iou(sizes, centres), axis=1))
    return centres, mean_iou


@functools.partial(jax.jit, static_argnames=("k", "num_iters", "update"))
def _best_of(sizes, keys, k, num_iters, update):
    centres, mean_iou = jax.vmap(lambda key: _kmeans(sizes, key, k, num_iters, update))(keys)
    best = jnp.argmax(mean_iou)  # ties: the earliest start
    return centres[best], mean_iou[best]


def kmeans_anchors(
    box_sizes: jax.Array, k: int, *, key: jax.Array | None = None, num_iters: int = 100,
    restarts: int = 1, update: str = "mean",
) -> tuple[jax.Array, jax.Array]:
    """(N, 2) box sizes (h, w) -> (k, 2) anchors sorted by area, and their mean best IoU.

    Centres start at k distinct boxes drawn with `key` (default PRNGKey(0)) and move to the
    mean of their members (update="mean", YOLOv2, Redmon & Farhadi 2017, "Dimension
    Clusters") or their coordinate-wise median (update="median", k-medians: less pulled by
    a few huge boxes). restarts > 1 runs that many starts (the first from `key` itself, the
    others from fold_in(key, i)) and keeps the one of highest mean IoU, so it is never worse
    than one start.
    """
    sizes = jnp.asarray(box_sizes, jnp.float32)
    if sizes.ndim != 2 or sizes.shape[1] != 2:
        raise ValueError(f"box_sizes must be (N, 2) (h, w), got {sizes.shape}")
    if not 1 <= k <= sizes.shape[0]:
        raise ValueError(f"k must lie in [1, {sizes.shape[0]}] (the number of boxes), got {k}")
    if update not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    key = jax.random.PRNGKey(0) if key is None else key
    others = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(1, restarts))
    keys = jnp.concatenate([key[None], others]) if restarts > 1 else key[None]
    return _best_of(sizes, keys, int(k), int(num_iters), update)
