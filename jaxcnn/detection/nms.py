"""Greedy non-max suppression under jax.jit, with fixed-size outputs.

Greedy NMS keeps the highest-scoring box still alive, removes every alive box whose IoU
with it exceeds `iou_threshold`, and repeats. Equal scores go to the lower index (argmax
returns the first maximum). Each round is O(N), so N boxes cost O(max_out * N) time and
O(N) memory (no N x N IoU matrix: 10k boxes would need 400 MB for it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection.boxes import center_to_corners
from jaxcnn.detection.iou import iou_corners


def _nms_one(corners, scores, classes, iou_threshold, score_threshold, max_out):
    alive = scores > score_threshold  # NaN scores compare False: never kept
    keep = jnp.full((max_out,), -1, jnp.int32)

    def go_on(state):
        count, alive, _ = state
        return (count < max_out) & jnp.any(alive)

    def pick(state):
        count, alive, keep = state
        best = jnp.argmax(jnp.where(alive, scores, -jnp.inf)).astype(jnp.int32)
        keep = keep.at[count].set(best)
        overlap = iou_corners(corners[best][None], corners)[0]
        suppressed = overlap > iou_threshold
        if classes is not None:
            suppressed = suppressed & (classes == classes[best])
        alive = alive & ~suppressed
        alive = alive.at[best].set(False)
        return count + 1, alive, keep

    count, _, keep = jax.lax.while_loop(go_on, pick, (jnp.int32(0), alive, keep))
    return keep, count


@functools.partial(jax.jit, static_argnames=("max_out",))
def _nms_jit(boxes, scores, classes, iou_threshold, score_threshold, max_out):
    corners = center_to_corners(boxes.astype(jnp.float32))
    scores = scores.astype(jnp.float32)
    single = functools.partial(_nms_one, iou_threshold=iou_threshold,
                               score_threshold=score_threshold, max_out=max_out)
    if boxes.ndim == 2:
        return single(corners, scores, classes)
    if classes is None:
        return jax.vmap(lambda c, s: single(c, s, None))(corners, scores)
    return jax.vmap(single)(corners, scores, classes)


def nms(
    boxes: jax.Array, scores: jax.Array, iou_threshold: float, max_out: int,
    score_threshold: float = -np.inf, classes: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Greedy NMS of (N, 4) or batched (B, N, 4) (cx, cy, h, w) boxes with (…, N) scores.

    Returns (kept indices (…, max_out) int32 in selection order, padded with -1; count (…,)).
    Boxes scoring <= score_threshold are never kept. With `classes` (…, N) int, a box only
    suppresses boxes of its own class (per-class NMS in one pass).
    """
    boxes, scores = jnp.asarray(boxes), jnp.asarray(scores)
    if boxes.ndim not in (2, 3) or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (N, 4) or (B, N, 4), got {boxes.shape}")
    if scores.shape != boxes.shape[:-1]:
        raise ValueError(f"scores must have shape {boxes.shape[:-1]} to match boxes, "
                         f"got {scores.shape}")
    if classes is not None:
        classes = jnp.asarray(classes)
        if classes.shape != scores.shape:
            raise ValueError(f"classes must have shape {scores.shape}, got {classes.shape}")
    if int(max_out) < 1:
        raise ValueError(f"max_out must be a positive int, got {max_out}")
    return _nms_jit(boxes, scores, classes, jnp.float32(iou_threshold),
                    jnp.float32(score_threshold), int(max_out))


def nms_numpy(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_out: int,
    score_threshold: float = -np.inf, classes: np.ndarray | None = None,
) -> np.ndarray:
    """The plain-loop reference: greedy NMS of (N, 4) (cx, cy, h, w) boxes -> kept indices."""
    boxes = np.asarray(boxes, np.float64)
    x1, y1 = boxes[:, 0] - boxes[:, 3] / 2, boxes[:, 1] - boxes[:, 2] / 2
    x2, y2 = boxes[:, 0] + boxes[:, 3] / 2, boxes[:, 1] + boxes[:, 2] / 2
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept: list[int] = []
    for i in order:
        if len(kept) == max_out:
            break
        if not scores[i] > score_threshold:
            continue
        suppressed = False
        for j in kept:
            if classes is not None and classes[i] != classes[j]:
                continue
            iw = max(min(x2[i], x2[j]) - max(x1[i], x1[j]), 0.0)
            ih = max(min(y2[i], y2[j]) - max(y1[i], y1[j]), 0.0)
            inter = iw * ih
            union = areas[i] + areas[j] - inter
            if union > 1e-12 and inter / union > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(int(i))
    return np.asarray(kept, np.int64)
