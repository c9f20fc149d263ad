"""YOLOv2 dimension clusters: k-means on box sizes with 1 - IoU as the distance."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxcnn.detection.iou import shape_iou


@functools.partial(jax.jit, static_argnames=("k", "num_iters"))
def _kmeans(sizes, key, k, num_iters):
    first = jax.random.choice(key, sizes.shape[0], (k,), replace=False)
    centres = sizes[first]

    def step(_, centres):
        nearest = jnp.argmax(shape_iou(sizes, centres), axis=1)  # max IoU = min 1 - IoU
        member = jax.nn.one_hot(nearest, k, dtype=sizes.dtype)  # (N, k)
        counts = member.sum(0)
        means = (member.T @ sizes) / jnp.maximum(counts, 1)[:, None]
        return jnp.where(counts[:, None] > 0, means, centres)  # an empty cluster stays put

    centres = jax.lax.fori_loop(0, num_iters, step, centres)
    centres = centres[jnp.argsort(centres[:, 0] * centres[:, 1])]
    mean_iou = jnp.mean(jnp.max(shape_iou(sizes, centres), axis=1))
    return centres, mean_iou


def kmeans_anchors(
    box_sizes: jax.Array, k: int, *, key: jax.Array | None = None, num_iters: int = 100,
) -> tuple[jax.Array, jax.Array]:
    """(N, 2) box sizes (h, w) -> (k, 2) anchors sorted by area, and their mean best IoU.

    Centres start at k distinct boxes drawn with `key` (default PRNGKey(0)) and move to
    the mean of their members (YOLOv2, Redmon & Farhadi 2017, section "Dimension Clusters").
    """
    sizes = jnp.asarray(box_sizes, jnp.float32)
    if sizes.ndim != 2 or sizes.shape[1] != 2:
        raise ValueError(f"box_sizes must be (N, 2) (h, w), got {sizes.shape}")
    if not 1 <= k <= sizes.shape[0]:
        raise ValueError(f"k must lie in [1, {sizes.shape[0]}] (the number of boxes), got {k}")
    key = jax.random.PRNGKey(0) if key is None else key
    return _kmeans(sizes, key, int(k), int(num_iters))
