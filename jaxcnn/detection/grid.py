"""The lecture's grid targets: y' = (y, y, ...) per cell and anchor, and back to boxes.

A target is (Sh, Sw, A, 5 + K): for cell (row, col) and anchor a the lecture's vector
(pc, bx, by, bh, bw, c1..cK) with bx, by the centre's offset inside the cell (0..1) and
bh, bw the box size in cell units (may exceed 1). An object belongs to the cell holding
its centre and to the anchor whose shape best matches it (highest IoU of the two sizes
placed on one centre); anchors are (A, 2) (h, w) relative to the image.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxcnn.detection.iou import shape_iou


def _grid_shape(grid: int | tuple[int, int]) -> tuple[int, int]:
    rows, cols = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if rows < 1 or cols < 1:
        raise ValueError(f"grid must be a positive int or (rows, cols), got {grid}")
    return int(rows), int(cols)


def assign(boxes: jax.Array, classes: jax.Array, grid: int | tuple[int, int],
           anchors: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Cell row, column and anchor of each (N, 4) box, and whether it is kept.

    Rows with class < 0 are padding. Two objects claiming one cell and anchor: the larger
    (ties: the lower index) is kept.
    """
    rows, cols = _grid_shape(grid)
    valid = classes >= 0
    row = jnp.clip(jnp.floor(boxes[:, 1] * rows), 0, rows - 1).astype(jnp.int32)
    col = jnp.clip(jnp.floor(boxes[:, 0] * cols), 0, cols - 1).astype(jnp.int32)
    anchor = jnp.argmax(shape_iou(boxes[:, 2:4], anchors), axis=1).astype(jnp.int32)
    slot = (row * cols + col) * anchors.shape[0] + anchor
    size = boxes[:, 2] * boxes[:, 3]
    index = jnp.arange(boxes.shape[0])
    beats = (size[None, :] > size[:, None]) | (
        (size[None, :] == size[:, None]) & (index[None, :] < index[:, None]))
    # beaten[i]: another valid object j in i's slot is larger (or as large, lower index).
    beaten = jnp.any(valid[None, :] & (slot[None, :] == slot[:, None]) & beats, axis=1)
    return row, col, anchor, valid & ~beaten


@functools.partial(jax.jit, static_argnames=("grid", "num_classes"))
def _encode(boxes, classes, anchors, grid, num_classes):
    rows, cols = _grid_shape(grid)
    num_anchors = anchors.shape[0]
    row, col, anchor, kept = assign(boxes, classes, grid, anchors)
    vectors = jnp.concatenate([
        jnp.ones_like(boxes[:, :1]),
        (boxes[:, 0:1] * cols - col[:, None]),
        (boxes[:, 1:2] * rows - row[:, None]),
        boxes[:, 2:3] * rows,
        boxes[:, 3:4] * cols,
        jax.nn.one_hot(classes, num_classes, dtype=boxes.dtype),
    ], axis=1)
    flat_slot = (row * cols + col) * num_anchors + anchor
    flat_slot = jnp.where(kept, flat_slot, rows * cols * num_anchors)  # out of range: dropped
    target = jnp.zeros((rows * cols * num_anchors, 5 + num_classes), boxes.dtype)
    target = target.at[flat_slot].set(vectors, mode="drop")
    dropped = jnp.sum((classes >= 0) & ~kept).astype(jnp.int32)
    return target.reshape(rows, cols, num_anchors, 5 + num_classes), dropped


def encode(
    boxes: jax.Array, classes: jax.Array, grid: int | tuple[int, int], anchors: jax.Array,
    num_classes: int,
) -> tuple[jax.Array, jax.Array]:
    """(N, 4) boxes (cx, cy, h, w) + (N,) int classes (-1 = padding) -> y (Sh, Sw, A, 5+K), dropped.

    Batched inputs (B, N, 4) / (B, N) give (B, Sh, Sw, A, 5+K) and (B,) dropped counts.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    classes = jnp.asarray(classes, jnp.int32)
    anchors = jnp.asarray(anchors, jnp.float32)
    if boxes.ndim not in (2, 3) or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (N, 4) or (B, N, 4), got {boxes.shape}")
    if classes.shape != boxes.shape[:-1]:
        raise ValueError(f"classes must have shape {boxes.shape[:-1]}, got {classes.shape}")
    if anchors.ndim != 2 or anchors.shape[1] != 2:
        raise ValueError(f"anchors must be (A, 2) (h, w), got {anchors.shape}")
    grid = _grid_shape(grid)
    run = functools.partial(_encode, anchors=anchors, grid=grid, num_classes=int(num_classes))
    if boxes.ndim == 3:
        return jax.vmap(lambda b, c: run(b, c))(boxes, classes)
    return run(boxes, classes)


def decode(y: jax.Array, *, logits: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(..., Sh, Sw, A, 5+K) grid vectors -> boxes (..., Sh*Sw*A, 4), scores, classes.

    Scores are pc (with logits=True: sigmoid(pc) * the largest softmax class probability);
    classes are the argmax of c1..cK. Boxes are (cx, cy, h, w) relative to the image.
    """
    y = jnp.asarray(y)
    if y.ndim < 4 or y.shape[-1] < 6:
        raise ValueError(f"y must be (..., Sh, Sw, A, 5+K) with K >= 1, got {y.shape}")
    rows, cols = y.shape[-4], y.shape[-3]
    row = jnp.arange(rows, dtype=y.dtype)[:, None, None]
    col = jnp.arange(cols, dtype=y.dtype)[None, :, None]
    cx = (y[..., 1] + col) / cols
    cy = (y[..., 2] + row) / rows
    boxes = jnp.stack([cx, cy, y[..., 3] / rows, y[..., 4] / cols], axis=-1)
    class_scores = y[..., 5:]
    scores = y[..., 0]
    if logits:
        class_scores = jax.nn.softmax(class_scores, axis=-1)
        scores = jax.nn.sigmoid(scores) * jnp.max(class_scores, axis=-1)
    classes = jnp.argmax(class_scores, axis=-1).astype(jnp.int32)
    lead = y.shape[:-4]
    return (boxes.reshape(*lead, -1, 4), scores.reshape(*lead, -1), classes.reshape(*lead, -1))
