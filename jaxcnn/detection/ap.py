"""Average precision over a set of images: VOC AP@0.5 (all-point) and COCO AP@[.5:.95].

Evaluation runs once over the whole held-out set on the host (a sort over every
detection of a class across all images), so this module is numpy, not jit: the per-image
work that matters for speed (decode, NMS) stays in jax. Each protocol follows its
reference code: VOC (devkit `voc_eval.py`, use_07_metric=False) matches a detection to
the gt of highest IoU and counts it a true positive when IoU > 0.5 and that gt is not yet
taken; COCO (`pycocotools.cocoeval`, area "all", maxDets 100) matches to the best
untaken gt with IoU >= t, for t in 0.50, 0.55, ..., 0.95, and averages the precision at
101 recall points. Boxes are (cx, cy, h, w) in any consistent unit; classes < 0 are padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
METRICS = ("voc", "coco")


def _corners(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx, cy, h, w = boxes.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) corner boxes in float64."""
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2])
                    - np.maximum(a[:, None, 0], b[None, :, 0]), 0)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3])
                    - np.maximum(a[:, None, 1], b[None, :, 1]), 0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP: area under the monotone precision envelope."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def coco_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """101-point interpolated AP as pycocotools accumulates it (0 beyond the last recall)."""
    envelope = np.maximum.accumulate(np.asarray(precision, np.float64)[::-1])[::-1]
    index = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
    sampled = np.where(index < len(envelope), envelope[np.minimum(index, len(envelope) - 1)]
                       if len(envelope) else 0.0, 0.0)
    return float(np.mean(sampled))


def _as_images(name: str, values, expected_tail: tuple[int, ...]) -> list[np.ndarray]:
    images = [np.asarray(v) for v in values]
    for i, v in enumerate(images):
        if v.shape[1:] != expected_tail and not (v.size == 0 and expected_tail == (4,)):
            tail = ", ".join(map(str, expected_tail))
            raise ValueError(f"{name}[{i}] must have shape (n, {tail}) per image, got {v.shape}")
    return images


def _match_class(dets, gts, threshold: float, metric: str):
    """True-positive flags (sorted by score) and the gt count for one class and threshold."""
    order_images, order_scores, order_boxes = [], [], []
    for image, (boxes, scores) in enumerate(dets):
        if metric == "coco":  # pycocotools keeps each image's 100 best (maxDets)
            keep = np.argsort(-scores, kind="mergesort")[:100]
            boxes, scores = boxes[keep], scores[keep]
        order_images.append(np.full(len(scores), image))
        order_scores.append(scores)
        order_boxes.append(boxes)
    images = np.concatenate(order_images) if order_images else np.zeros(0, int)
    scores = np.concatenate(order_scores) if order_scores else np.zeros(0)
    boxes = np.concatenate(order_boxes) if order_boxes else np.zeros((0, 4))
    order = np.argsort(-scores, kind="mergesort")
    taken = [np.zeros(len(g), bool) for g in gts]
    tp = np.zeros(len(order), bool)
    if metric == "coco":
        # pycocotools matches image by image in score order; the global order only ranks.
        for image in range(len(gts)):
            rows = np.where(images == image)[0]
            rows = rows[np.argsort(-scores[rows], kind="mergesort")]
            if not len(rows) or not len(gts[image]):
                continue
            ious = _iou_matrix(_corners(boxes[rows]), _corners(gts[image]))
            for r, det in enumerate(rows):
                best, best_iou = -1, min(threshold, 1 - 1e-10)
                for g in range(len(gts[image])):
                    if taken[image][g] or ious[r, g] < best_iou:
                        continue
                    best, best_iou = g, ious[r, g]
                if best >= 0:
                    taken[image][best] = True
                    tp[det] = True
        tp = tp[order]
    else:
        for rank, det in enumerate(order):
            g_boxes = gts[images[det]]
            if not len(g_boxes):
                continue
            ious = _iou_matrix(_corners(boxes[det][None]), _corners(g_boxes))[0]
            best = int(np.argmax(ious))
            if ious[best] > threshold and not taken[images[det]][best]:
                taken[images[det]][best] = True
                tp[rank] = True
    return tp, sum(len(g) for g in gts)


def _precision_recall(tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    tp_sum = np.cumsum(tp).astype(np.float64)
    fp_sum = np.cumsum(~tp).astype(np.float64)
    recall = tp_sum / num_gt
    precision = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).eps)
    return recall, precision


def average_precision(
    pred_boxes: Sequence[np.ndarray], pred_scores: Sequence[np.ndarray],
    pred_classes: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
    gt_classes: Sequence[np.ndarray], num_classes: int, metric: str = "voc",
) -> dict[str, np.ndarray | float]:
    """AP per class and its mean over classes that have ground truth.

    Inputs are per image (lists, or padded arrays with class -1 for padding): boxes (n, 4)
    (cx, cy, h, w), scores (n,), int classes (n,). metric "voc": AP@0.5 all-point;
    "coco": AP@[.5:.95] 101-point, plus "ap50" and "ap75". Returns {"ap": mean,
    "per_class": (num_classes,) with NaN for classes without ground truth, ...}.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    lengths = [len(x) for x in (pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes)]
    if len(set(lengths)) != 1:
        raise ValueError("pred_boxes, pred_scores, pred_classes, gt_boxes and gt_classes must "
                         f"list the same number of images, got {lengths}")
    p_boxes = _as_images("pred_boxes", pred_boxes, (4,))
    g_boxes = _as_images("gt_boxes", gt_boxes, (4,))
    p_scores = [np.asarray(s, np.float64).reshape(-1) for s in pred_scores]
    p_classes = [np.asarray(c).reshape(-1) for c in pred_classes]
    g_classes = [np.asarray(c).reshape(-1) for c in gt_classes]
    thresholds = COCO_IOU_THRESHOLDS if metric == "coco" else np.array([0.5])
    table = np.full((len(thresholds), num_classes), np.nan)
    for k in range(num_classes):
        dets = [(b.reshape(-1, 4)[c == k], s[c == k])
                for b, s, c in zip(p_boxes, p_scores, p_classes)]
        gts = [b.reshape(-1, 4)[c == k] for b, c in zip(g_boxes, g_classes)]
        for t, threshold in enumerate(thresholds):
            tp, num_gt = _match_class(dets, gts, float(threshold), metric)
            if num_gt == 0:
                continue
            recall, precision = _precision_recall(tp, num_gt)
            table[t, k] = (coco_ap if metric == "coco" else voc_ap)(recall, precision)
    per_class = np.mean(table, axis=0)
    has_gt = ~np.isnan(per_class)
    result: dict[str, np.ndarray | float] = {
        "ap": float(np.mean(per_class[has_gt])) if has_gt.any() else float("nan"),
        "per_class": per_class,
    }
    if metric == "coco":
        for name, t in (("ap50", 0), ("ap75", 5)):
            row = table[t]
            result[name] = float(np.mean(row[has_gt])) if has_gt.any() else float("nan")
    return result
