"""A YOLO-style detector's maths: a grid head on any trunk, the YOLOv2 loss, decode, and mAP.

The task (config -> model, data, anchors, loss, evaluation) is `jaxcnn.tasks.detector`.

Per cell of an S x S grid and per anchor the head predicts the lecture's vector as raw values
t = (t_o, t_x, t_y, t_h, t_w, class logits): objectness sigmoid(t_o), centre offset inside the
cell sigmoid(t_x), sigmoid(t_y), size anchor * exp(t_h), anchor * exp(t_w) (Redmon & Farhadi
2017, YOLOv2). Targets are `detection.encode`'s y' = (y, y, ...), built inside the jit-compiled
step from each batch's padded boxes, so the data pipeline stays task-agnostic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection.ap import average_precision
from jaxcnn.detection.grid import encode
from jaxcnn.detection.iou import iou
from jaxcnn.detection.nms import nms


class YOLODetector(nn.Module):
    """trunk -> stride-2 3x3 conv blocks down to the grid -> 1x1 conv to A x (5 + K) per cell."""

    trunk: nn.Module
    trunk_stride: int
    grid: int
    num_anchors: int
    num_classes: int
    head_channels: int = 128
    dtype: Any = jnp.float32

    def extra_downsamplings(self, side: int) -> int:
        """How many stride-2 blocks take the trunk's map for a side x side input to the grid."""
        if side % self.grid:
            raise ValueError(f"input side {side} is not a multiple of the grid {self.grid}")
        ratio, stride = side // self.grid, self.trunk_stride
        if ratio % stride or (ratio // stride) & (ratio // stride - 1):
            raise ValueError(
                f"input side {side} / grid {self.grid} = {ratio} px per cell must be the trunk's "
                f"stride {stride} times a power of two; use a side of grid x {stride} x 2^n")
        return (ratio // stride).bit_length() - 1

    def _objectness_prior(self, key, shape, dtype=jnp.float32):
        """Bias 0 except t_o = -log(99): every anchor starts at objectness 0.01, so the many
        empty anchors do not swamp the first steps (the prior of Lin et al. 2017)."""
        del key
        bias = jnp.zeros((self.num_anchors, 5 + self.num_classes), dtype)
        return bias.at[:, 0].set(-jnp.log(99.0)).reshape(shape)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if x.ndim != 4 or x.shape[1] != x.shape[2]:
            raise ValueError(f"expected square NHWC images, got shape {x.shape}")
        blocks = self.extra_downsamplings(x.shape[1])
        features = self.trunk(x, train=train)
        layer = {"dtype": self.dtype, "param_dtype": jnp.float32}
        for i in range(blocks):
            features = nn.Conv(self.head_channels, (3, 3), strides=2, padding=1, use_bias=False,
                               name=f"head_down{i}", **layer)(features)
            features = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                    name=f"head_bn{i}", **layer)(features)
            features = nn.relu(features)
        features = nn.Conv(self.head_channels, (3, 3), padding=1, name="head_conv", **layer)(
            features)
        features = nn.relu(features)
        out = nn.Conv(self.num_anchors * (5 + self.num_classes), (1, 1), name="head_out",
                      bias_init=self._objectness_prior, **layer)(features).astype(jnp.float32)
        n, h, w, _ = out.shape
        return out.reshape(n, h, w, self.num_anchors, 5 + self.num_classes)


def decode_predictions(raw: jax.Array, anchors: jax.Array
                       ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Raw head output (B, S, S, A, 5+K) -> boxes (B, S*S*A, 4) relative (cx, cy, h, w),
    scores sigmoid(t_o) x max class probability, classes, and objectness, each (B, S*S*A)."""
    rows, cols = raw.shape[1], raw.shape[2]
    row = jnp.arange(rows, dtype=jnp.float32)[:, None, None]
    col = jnp.arange(cols, dtype=jnp.float32)[None, :, None]
    cx = (jax.nn.sigmoid(raw[..., 1]) + col) / cols
    cy = (jax.nn.sigmoid(raw[..., 2]) + row) / rows
    h = anchors[:, 0] * jnp.exp(jnp.clip(raw[..., 3], -10.0, 10.0))
    w = anchors[:, 1] * jnp.exp(jnp.clip(raw[..., 4], -10.0, 10.0))
    probs = jax.nn.softmax(raw[..., 5:], axis=-1)
    objectness = jax.nn.sigmoid(raw[..., 0])
    batch = raw.shape[0]
    return (jnp.stack([cx, cy, h, w], -1).reshape(batch, -1, 4),
            (objectness * probs.max(-1)).reshape(batch, -1),
            probs.argmax(-1).astype(jnp.int32).reshape(batch, -1),
            objectness.reshape(batch, -1))


def _bce(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def yolo_loss(raw: jax.Array, boxes: jax.Array, classes: jax.Array, anchors: jax.Array, *,
              coord_weight: float = 5.0, noobj_weight: float = 0.5, ignore_iou: float = 0.6
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """YOLOv2's loss, summed over cells and anchors, averaged over images, with its parts.

    raw (B, S, S, A, 5+K); boxes (B, M, 4) relative (cx, cy, h, w), classes (B, M) (-1 pad).
    Responsible anchor (the one `encode` assigns): coord_weight x squared error of the
    sigmoid centre offsets and of the log size ratios to the anchor, objectness BCE towards
    1, class cross-entropy. Every other anchor: noobj_weight x objectness BCE towards 0,
    unless its decoded box overlaps some object with IoU >= ignore_iou (not penalised).
    """
    grid = (raw.shape[1], raw.shape[2])
    num_classes = raw.shape[-1] - 5
    target, _ = encode(boxes, classes, grid, anchors, num_classes)  # (B, S, S, A, 5+K)
    responsible = target[..., 0]
    rows, cols = grid
    anchor_cells = anchors * jnp.array([rows, cols], jnp.float32)  # (A, 2) in cell units
    safe = jnp.where(responsible[..., None] > 0, target[..., 3:5], anchor_cells)
    log_ratio = jnp.log(safe / anchor_cells)
    centre_err = jnp.sum((jax.nn.sigmoid(raw[..., 1:3]) - target[..., 1:3]) ** 2, -1)
    size_err = jnp.sum((raw[..., 3:5] - log_ratio) ** 2, -1)
    box = coord_weight * jnp.sum(responsible * (centre_err + size_err), axis=(1, 2, 3))
    obj = jnp.sum(responsible * _bce(raw[..., 0], 1.0), axis=(1, 2, 3))
    pred_boxes, _, _, _ = decode_predictions(jax.lax.stop_gradient(raw), anchors)
    overlaps = iou(pred_boxes, boxes)  # (B, S*S*A, M)
    overlaps = jnp.where((classes >= 0)[:, None, :], overlaps, 0.0)
    best = overlaps.max(-1, initial=0.0).reshape(responsible.shape)
    ignore = (responsible == 0) & (best < ignore_iou)
    noobj = noobj_weight * jnp.sum(ignore * _bce(raw[..., 0], 0.0), axis=(1, 2, 3))
    log_probs = jax.nn.log_softmax(raw[..., 5:], axis=-1)
    cls = -jnp.sum(responsible * jnp.sum(target[..., 5:] * log_probs, -1), axis=(1, 2, 3))
    parts = {"box_loss": jnp.mean(box), "obj_loss": jnp.mean(obj),
             "noobj_loss": jnp.mean(noobj), "class_loss": jnp.mean(cls)}
    loss = sum(parts.values())
    return loss, {"loss": loss, **parts}


def detect(raw: jax.Array, anchors: jax.Array, *, iou_threshold: float, score_threshold: float,
           max_detections: int) -> dict[str, jax.Array]:
    """Decode, then per-class greedy NMS: fixed-size (B, max_detections) boxes, scores, classes
    (class -1 where no box was kept)."""
    boxes, scores, classes, _ = decode_predictions(raw, anchors)
    kept, _ = nms(boxes, scores, iou_threshold, max_detections,
                  score_threshold=score_threshold, classes=classes)
    valid = kept >= 0
    index = jnp.maximum(kept, 0)
    take = jax.vmap(lambda a, i: a[i])
    return {"det_boxes": take(boxes, index), "det_scores": jnp.where(valid, take(scores, index), 0),
            "det_classes": jnp.where(valid, take(classes, index), -1)}


def map_metrics(outputs: dict[str, np.ndarray], class_names: Sequence[str]
                ) -> dict[str, float]:
    """VOC AP@0.5 and COCO AP@[.5:.95], overall and per class, of gathered detections."""
    args = (outputs["det_boxes"], outputs["det_scores"], outputs["det_classes"],
            outputs["boxes"], outputs["classes"], len(class_names))
    voc = average_precision(*args, metric="voc")
    coco = average_precision(*args, metric="coco")
    result = {"mAP50": voc["ap"], "mAP50_95": coco["ap"]}
    for k, name in enumerate(class_names):
        result[f"AP50/{name}"] = float(voc["per_class"][k])
        result[f"AP50_95/{name}"] = float(coco["per_class"][k])
    return result


def training_box_sizes(dataset: Any) -> np.ndarray:
    """(N, 2) (h, w) of every training box of a detection dataset."""
    valid = dataset.classes_train >= 0
    return np.asarray(dataset.boxes_train[valid][:, 2:4], np.float32)


def constant_baseline(dataset: Any, class_names: Sequence[str]) -> dict[str, float]:
    """mAP of predicting the mean training box, with full confidence and the most common
    training class, on every test image (the floor a detector must beat)."""
    valid = dataset.classes_train >= 0
    mean_box = dataset.boxes_train[valid].mean(0)
    common = int(np.bincount(dataset.classes_train[valid]).argmax())
    n = dataset.num_eval
    return map_metrics({"det_boxes": np.tile(mean_box, (n, 1, 1)), "det_scores": np.ones((n, 1)),
                        "det_classes": np.full((n, 1), common), "boxes": dataset.boxes_test,
                        "classes": dataset.classes_test}, class_names)
