"""Intersection over union: pairwise, batched, finite for zero-area boxes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcnn.detection.boxes import _check_last_axis, center_to_corners

# Union below this counts as empty: IoU of two zero-area boxes is 0, never 0/0.
_TINY = 1e-12


def iou_corners(corners_a: jax.Array, corners_b: jax.Array) -> jax.Array:
    """IoU of every pair: (..., N, 4) x (..., M, 4) corners (x1, y1, x2, y2) -> (..., N, M)."""
    a = jnp.asarray(corners_a, jnp.float32)[..., :, None, :]
    b = jnp.asarray(corners_b, jnp.float32)[..., None, :, :]
    inter_w = jnp.maximum(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0)
    inter_h = jnp.maximum(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0)
    inter = inter_w * inter_h
    area_a = jnp.maximum(a[..., 2] - a[..., 0], 0) * jnp.maximum(a[..., 3] - a[..., 1], 0)
    area_b = jnp.maximum(b[..., 2] - b[..., 0], 0) * jnp.maximum(b[..., 3] - b[..., 1], 0)
    union = area_a + area_b - inter
    return jnp.where(union > _TINY, inter / jnp.maximum(union, _TINY), 0.0)


def iou(boxes_a: jax.Array, boxes_b: jax.Array) -> jax.Array:
    """IoU of every pair: (..., N, 4) x (..., M, 4) boxes (cx, cy, h, w) -> (..., N, M)."""
    boxes_a, boxes_b = jnp.asarray(boxes_a), jnp.asarray(boxes_b)
    _check_last_axis(boxes_a, "boxes_a")
    _check_last_axis(boxes_b, "boxes_b")
    if boxes_a.ndim < 2 or boxes_b.ndim < 2:
        raise ValueError(
            f"boxes_a and boxes_b must be (..., N, 4) and (..., M, 4), got {boxes_a.shape} "
            f"and {boxes_b.shape}")
    return iou_corners(center_to_corners(boxes_a), center_to_corners(boxes_b))


def paired_iou(boxes_a: jax.Array, boxes_b: jax.Array) -> jax.Array:
    """IoU of matching rows: (..., 4) x (..., 4) boxes (cx, cy, h, w) -> (...)."""
    a, b = jnp.asarray(boxes_a), jnp.asarray(boxes_b)
    _check_last_axis(a, "boxes_a")
    _check_last_axis(b, "boxes_b")
    return iou_corners(center_to_corners(a)[..., None, :], center_to_corners(b)[..., None, :])[
        ..., 0, 0]


def shape_iou(sizes_a: jax.Array, sizes_b: jax.Array) -> jax.Array:
    """IoU of boxes sharing a centre, from sizes: (N, 2) x (M, 2) (h, w) -> (N, M)."""
    a = jnp.asarray(sizes_a, jnp.float32)
    b = jnp.asarray(sizes_b, jnp.float32)
    if a.ndim != 2 or a.shape[-1] != 2 or b.ndim != 2 or b.shape[-1] != 2:
        raise ValueError(f"sizes must be (N, 2) and (M, 2) (h, w), got {a.shape} and {b.shape}")
    a, b = jnp.maximum(a[:, None, :], 0), jnp.maximum(b[None, :, :], 0)
    inter = jnp.minimum(a[..., 0], b[..., 0]) * jnp.minimum(a[..., 1], b[..., 1])
    union = a[..., 0] * a[..., 1] + b[..., 0] * b[..., 1] - inter
    return jnp.where(union > _TINY, inter / jnp.maximum(union, _TINY), 0.0)
