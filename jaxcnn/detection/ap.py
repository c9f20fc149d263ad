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


def _flat(values: Sequence[np.ndarray], width: int | None, dtype) -> np.ndarray:
    """Per-image arrays (or one padded array) -> their rows concatenated."""
    if isinstance(values, np.ndarray) and values.ndim == (3 if width else 2):
        return values.reshape(-1, width).astype(dtype) if width else values.reshape(-1).astype(
            dtype)
    rows = [np.asarray(v, dtype).reshape(-1, width) if width else np.asarray(v, dtype).reshape(-1)
            for v in values]
    return np.concatenate(rows) if rows else np.zeros((0, width) if width else 0, dtype)


def _image_index(values: Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return np.repeat(np.arange(values.shape[0]), values.shape[1])
    return np.repeat(np.arange(len(values)), [np.asarray(v).size for v in values])


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) (cx, cy, h, w) -> (n, 4) (x, y, w, h), the arithmetic pycocotools is given."""
    cx, cy, h, w = boxes.T
    return np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)


def _iou_xywh(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(..., D, 4) x (..., G, 4) (x, y, w, h) -> (..., D, G) IoU; a crowd gt's union is the
    detection's area (pycocotools' maskApi bbIou, same operations in float64)."""
    d, g = dets[..., :, None, :], gts[..., None, :, :]
    iw = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0],
                                                                            g[..., 0])
    ih = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1],
                                                                            g[..., 1])
    inter = iw * ih
    det_area, gt_area = d[..., 2] * d[..., 3], g[..., 2] * g[..., 3]
    union = np.where(crowd[..., None, :], det_area, det_area + gt_area - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((iw > 0) & (ih > 0), inter / union, 0.0)


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted keys -> (unique keys, first row of each, row count of each)."""
    unique, start, count = np.unique(keys, return_index=True, return_counts=True)
    return unique, start, count


def _chunks(count_d: np.ndarray, count_g: np.ndarray, budget: int = 1 << 22):
    """Row ranges of groups (sorted by detection count, descending) whose padded IoU
    tensors stay under `budget` elements."""
    start = 0
    gmax = int(count_g.max()) if len(count_g) else 1
    while start < len(count_d):
        size = max(1, budget // max(1, int(count_d[start]) * gmax))
        yield start, min(len(count_d), start + size)
        start += size


def _match(det_box, det_rows, gt_box, gt_crowd, gt_rows, thresholds, metric):
    """Greedy matching of padded groups (one image and class each).

    det_rows (P, D) / gt_rows (P, G): row indices, -1 = padding; detections in score order
    (ties: input order), gts with crowd regions last. Returns (P, T, D) true-positive and
    ignored flags. COCO: best IoU >= t among untaken objects (ties: the later gt), else a
    crowd region with IoU >= t makes it ignored. VOC: the gt of highest IoU (ties: the first),
    a true positive if IoU > t and untaken, ignored if it is a crowd region.
    """
    det_valid, gt_valid = det_rows >= 0, gt_rows >= 0
    crowd = gt_crowd[np.maximum(gt_rows, 0)] & gt_valid
    ious = _iou_xywh(det_box[np.maximum(det_rows, 0)], gt_box[np.maximum(gt_rows, 0)],
                     crowd if metric == "coco" else np.zeros_like(crowd))
    ious = np.where(gt_valid[:, None, :], ious, -1.0)
    num_groups, depth, width = ious.shape
    taken = np.zeros((num_groups, len(thresholds), width), bool)
    tp = np.zeros((num_groups, len(thresholds), depth), bool)
    ignored = np.zeros_like(tp)
    limit = np.minimum(thresholds, 1 - 1e-10)[None, :, None]
    for r in range(depth):
        iou_r = ious[:, r, :]  # (P, G)
        live = det_valid[:, r][:, None]  # (P, 1)
        if metric == "coco":
            above = iou_r[:, None, :] >= limit  # (P, T, G)
            free = above & ~taken & ~crowd[:, None, :]
            candidates = np.where(free, iou_r[:, None, :], -np.inf)
            best = width - 1 - np.argmax(candidates[..., ::-1], axis=-1)  # (P, T): last max
            hit = free.any(-1) & live
            ignored[:, :, r] = ~hit & (above & crowd[:, None, :]).any(-1) & live
        else:
            best = np.broadcast_to(np.argmax(iou_r, axis=-1)[:, None], (num_groups,
                                                                       len(thresholds)))
            best_iou = np.take_along_axis(iou_r, best, axis=1)
            over = (best_iou > thresholds[None, :]) & live
            to_crowd = np.take_along_axis(crowd, best, axis=1)
            ignored[:, :, r] = over & to_crowd
            hit = over & ~to_crowd & ~np.take_along_axis(taken, best[..., None], 2)[..., 0]
        tp[:, :, r] = hit
        rows, cols = np.nonzero(hit)
        taken[rows, cols, best[rows, cols]] = True
    return tp, ignored


def _precision_recall(tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    tp_sum = np.cumsum(tp).astype(np.float64)
    fp_sum = np.cumsum(~tp).astype(np.float64)
    recall = tp_sum / num_gt
    precision = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).eps)
    return recall, precision


def _table(d_img, d_cls, d_score, d_box, g_img, g_cls, g_crowd, g_box, num_classes: int,
           thresholds: np.ndarray, metric: str) -> np.ndarray:
    """(T, K) AP per threshold and class; NaN where a class has no (non-crowd) gt."""
    # Detections by (image, class), each group by score (stable: ties keep input order).
    order = np.lexsort((-d_score, d_cls, d_img))
    d_img, d_cls, d_score, d_box = d_img[order], d_cls[order], d_score[order], d_box[order]
    d_key = d_img * num_classes + d_cls
    keys_d, start_d, count_d = _groups(d_key)
    if metric == "coco":  # pycocotools keeps each image's 100 best per class (maxDets)
        rank = np.arange(len(d_key)) - np.repeat(start_d, count_d)
        keep = rank < 100
        d_img, d_cls, d_score, d_box, d_key = (a[keep] for a in (d_img, d_cls, d_score, d_box,
                                                                 d_key))
        keys_d, start_d, count_d = _groups(d_key)
    order = np.lexsort((g_crowd, g_cls, g_img))  # objects before crowd regions
    g_cls, g_crowd, g_box = g_cls[order], g_crowd[order], g_box[order]
    keys_g, start_g, count_g = _groups(g_img[order] * num_classes + g_cls)
    tp = np.zeros((len(thresholds), len(d_key)), bool)
    ignored = np.zeros_like(tp)
    common, in_d, in_g = np.intersect1d(keys_d, keys_g, assume_unique=True,
                                        return_indices=True)
    by_size = np.argsort(-count_d[in_d], kind="stable")
    in_d, in_g = in_d[by_size], in_g[by_size]
    for lo, hi in _chunks(count_d[in_d], count_g[in_g]):
        sd, cd, sg, cg = start_d[in_d[lo:hi]], count_d[in_d[lo:hi]], start_g[in_g[lo:hi]], \
            count_g[in_g[lo:hi]]
        d_span, g_span = np.arange(cd.max()), np.arange(cg.max())
        det_rows = np.where(d_span < cd[:, None], sd[:, None] + d_span, -1)
        gt_rows = np.where(g_span < cg[:, None], sg[:, None] + g_span, -1)
        hit, skip = _match(d_box, det_rows, g_box, g_crowd, gt_rows, thresholds, metric)
        valid = det_rows >= 0
        tp[:, det_rows[valid]] = np.moveaxis(hit, 1, 0)[:, valid]
        ignored[:, det_rows[valid]] = np.moveaxis(skip, 1, 0)[:, valid]
    num_gt = np.bincount(g_cls[~g_crowd], minlength=num_classes)
    table = np.full((len(thresholds), num_classes), np.nan)
    eps = np.spacing(1)
    for k in np.flatnonzero(num_gt):
        rows = np.flatnonzero(d_cls == k)
        rows = rows[np.argsort(-d_score[rows], kind="mergesort")]  # images in order on ties
        for t in range(len(thresholds)):
            hits = tp[t, rows][~ignored[t, rows]]
            if metric == "voc":
                table[t, k] = voc_ap(*_precision_recall(hits, num_gt[k]))
                continue
            tp_sum = np.cumsum(hits).astype(np.float64)
            fp_sum = np.cumsum(~hits).astype(np.float64)
            table[t, k] = coco_ap(tp_sum / num_gt[k], tp_sum / (fp_sum + tp_sum + eps))
    return table


def average_precision(
    pred_boxes: Sequence[np.ndarray], pred_scores: Sequence[np.ndarray],
    pred_classes: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
    gt_classes: Sequence[np.ndarray], num_classes: int, metric: str = "voc",
) -> dict[str, np.ndarray | float]:
    """AP per class and its mean over classes that have ground truth.

    Inputs are per image (lists, or padded arrays with class -1 for padding): boxes (n, 4)
    (cx, cy, h, w), scores (n,), int classes (n,). A gt class -2 - k is a crowd region of
    class k (COCO iscrowd): it counts as no object, and a detection it covers is ignored.
    metric "voc": AP@0.5 all-point; "coco": AP@[.5:.95] 101-point, plus "ap50" and "ap75".
    Returns {"ap": mean, "per_class": (num_classes,) with NaN for classes without ground
    truth, ...}.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    lengths = [len(x) for x in (pred_boxes, pred_scores, pred_classes, gt_boxes, gt_classes)]
    if len(set(lengths)) != 1:
        raise ValueError("pred_boxes, pred_scores, pred_classes, gt_boxes and gt_classes must "
                         f"list the same number of images, got {lengths}")
    if not isinstance(pred_boxes, np.ndarray):
        _as_images("pred_boxes", pred_boxes, (4,))
    if not isinstance(gt_boxes, np.ndarray):
        _as_images("gt_boxes", gt_boxes, (4,))
    d_box, d_score = _flat(pred_boxes, 4, np.float64), _flat(pred_scores, None, np.float64)
    d_cls, d_img = _flat(pred_classes, None, np.int64), _image_index(pred_classes)
    g_box, g_cls = _flat(gt_boxes, 4, np.float64), _flat(gt_classes, None, np.int64)
    g_img = _image_index(gt_classes)
    if len({len(d_box), len(d_score), len(d_cls)}) != 1 or len(g_box) != len(g_cls):
        raise ValueError(f"per image, boxes, scores and classes must have one row per object; "
                         f"got {len(d_box)} boxes, {len(d_score)} scores, {len(d_cls)} classes "
                         f"(predictions), {len(g_box)} boxes, {len(g_cls)} classes (gt)")
    det = (d_cls >= 0) & (d_cls < num_classes)
    g_crowd = g_cls <= -2
    gt = (g_cls != -1) & (np.where(g_crowd, -2 - g_cls, g_cls) < num_classes)
    g_cls = np.where(g_crowd, -2 - g_cls, g_cls)
    thresholds = COCO_IOU_THRESHOLDS if metric == "coco" else np.array([0.5])
    table = _table(d_img[det], d_cls[det], d_score[det], _xywh(d_box[det]), g_img[gt],
                   g_cls[gt], g_crowd[gt], _xywh(g_box[gt]), num_classes, thresholds, metric)
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
