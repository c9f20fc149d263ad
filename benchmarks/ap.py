"""COCO AP@[.5:.95]: jaxcnn.detection.average_precision vs pycocotools' COCOeval, same process.

PYTHONPATH=. .venv/bin/python benchmarks/ap.py [--images=500] [--classes=20] [--dets=50]
    [--rounds=7] [--json=runs/ap.json]

One random detector-like case (per image 0-10 objects, `--dets` detections: jittered copies
of the objects and random boxes, random scores and classes; seed 0) is scored by both;
the script checks the mAP and every class's AP agree to 1e-9. pycocotools is timed twice:
COCOeval.evaluate() + accumulate() on ready COCO objects (its matching and accumulation,
the part jaxcnn replaces), and end to end from the same arrays (building the ground-truth
COCO, loadRes, evaluate, accumulate), which is what a caller holding arrays pays. The two
take turns with jaxcnn, one call each per round; the table shows best (median) seconds
and the ratio pycocotools / jaxcnn of the best times (> 1: jaxcnn faster).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time

import numpy as np
from absl import app, flags

from jaxcnn import detection

_IMAGES = flags.DEFINE_integer("images", 500, "Images in the random case.")
_CLASSES = flags.DEFINE_integer("classes", 20, "Classes.")
_DETS = flags.DEFINE_integer("dets", 50, "Detections per image (the detector keeps 50).")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Timed rounds (one call of each per round).")
_JSON = flags.DEFINE_string("json", None, "Also write the figures as JSON here.")


def random_case(num_images: int, num_classes: int, dets: int, seed: int = 0):
    """Per-image (boxes, scores, classes) predictions and (boxes, classes) ground truth,
    boxes (cx, cy, h, w) in [0, 1]; classes -2 - k mark crowd regions (5 % of objects).
    Detections near objects score in [0.3, 1], the random ones in [0, 0.6]."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 11))
        gt_boxes = np.concatenate([rng.uniform(0.1, 0.9, (n, 2)), rng.uniform(0.05, 0.4, (n, 2))],
                                  1)
        gt_classes = rng.integers(0, num_classes, n)
        gt_classes = np.where(rng.random(n) < 0.05, -2 - gt_classes, gt_classes)
        near = min(dets // 2, 3 * n)
        owner = rng.integers(0, max(n, 1), near)
        boxes = np.concatenate([
            gt_boxes[owner] * rng.normal(1, 0.08, (near, 4)) if n else np.zeros((0, 4)),
            np.concatenate([rng.uniform(0.1, 0.9, (dets - near, 2)),
                            rng.uniform(0.05, 0.4, (dets - near, 2))], 1)])
        owner_class = np.where(gt_classes <= -2, -2 - gt_classes, gt_classes)[owner] if n else 0
        classes = np.concatenate([
            np.where(rng.random(near) < 0.8, owner_class, rng.integers(0, num_classes, near)),
            rng.integers(0, num_classes, dets - near)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, near), rng.uniform(0.0, 0.6, dets - near)])
        preds.append((np.abs(boxes), scores, classes))
        gts.append((gt_boxes, gt_classes))
    return preds, gts


def _xywh(box) -> list[float]:
    cx, cy, h, w = (float(v) for v in box)
    return [cx - w / 2, cy - h / 2, w, h]


def coco_objects(preds, gts, num_classes: int):
    """pycocotools' ground-truth COCO and its loadRes of the predictions (bbox = xywh,
    category k + 1, crowd where the gt class is -2 - k)."""
    from pycocotools.coco import COCO

    images, anns, results = [], [], []
    for i, (g_boxes, g_classes) in enumerate(gts):
        images.append({"id": i + 1, "width": 1000, "height": 1000})
        for box, cls in zip(g_boxes, g_classes):
            crowd = int(cls <= -2)
            bbox = _xywh(box)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "bbox": bbox,
                         "category_id": int(-2 - cls if crowd else cls) + 1,
                         "area": bbox[2] * bbox[3], "iscrowd": crowd})
    for i, (boxes, scores, classes) in enumerate(preds):
        for box, score, cls in zip(boxes, scores, classes):
            results.append({"image_id": i + 1, "category_id": int(cls) + 1,
                            "bbox": _xywh(box), "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": k + 1, "name": str(k)} for k in range(num_classes)]}
        coco.createIndex()
        return coco, coco.loadRes(results)


def coco_eval(coco, results):
    """COCOeval (bbox) evaluate + accumulate; its precision (T, R, K) at area all, 100 dets."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, results, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, 2]


def pycocotools_ap(preds, gts, num_classes: int):
    """(mAP, per-class AP (NaN without gt), AP50, AP75) as pycocotools computes them."""
    precision = coco_eval(*coco_objects(preds, gts, num_classes))
    valid = precision > -1
    per_t = np.where(valid.all(1), precision.mean(1), np.nan)  # (T, K)
    return (float(precision[valid].mean()), np.mean(per_t, 0),
            float(np.nanmean(per_t[0])), float(np.nanmean(per_t[5])))


def ours(preds, gts, num_classes: int):
    return detection.average_precision(*(list(x) for x in zip(*preds)),
                                       *(list(x) for x in zip(*gts)), num_classes, "coco")


def main(argv):
    del argv
    preds, gts = random_case(_IMAGES.value, _CLASSES.value, _DETS.value)
    k = _CLASSES.value
    coco, results = coco_objects(preds, gts, k)
    mine, theirs = ours(preds, gts, k), pycocotools_ap(preds, gts, k)
    difference = max(abs(mine["ap"] - theirs[0]),
                     float(np.nanmax(np.abs(mine["per_class"] - theirs[1]))))
    if not difference <= 1e-9:
        raise SystemExit(f"jaxcnn and pycocotools disagree by {difference}")
    runs = {"jaxcnn": lambda: ours(preds, gts, k),
            "pycocotools evaluate+accumulate": lambda: coco_eval(coco, results),
            "pycocotools from arrays": lambda: pycocotools_ap(preds, gts, k)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(_ROUNDS.value):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    figures = {
        "images": _IMAGES.value, "classes": k, "detections": _IMAGES.value * _DETS.value,
        "objects": int(sum(len(g[1]) for g in gts)), "mAP": mine["ap"],
        "max_difference": difference, "load_average": os.getloadavg()[0],
        "best_s": best, "median_s": {n: float(np.median(t)) for n, t in times.items()},
        "ratio_evaluate": best["pycocotools evaluate+accumulate"] / best["jaxcnn"],
        "ratio_from_arrays": best["pycocotools from arrays"] / best["jaxcnn"],
    }
    print(f"{figures['images']} images, {k} classes, {figures['detections']} detections, "
          f"{figures['objects']} objects; mAP {mine['ap']:.4f} (largest difference to "
          f"pycocotools {difference:.1e}); load average {figures['load_average']:.1f}")
    print("| implementation | best s (median) | pycocotools / jaxcnn |\n|---|---|---|")
    for name in runs:
        print(f"| {name} | {best[name]:.3f} ({figures['median_s'][name]:.3f}) | "
              f"{best[name] / best['jaxcnn']:.1f}x |")
    if _JSON.value:
        os.makedirs(os.path.dirname(_JSON.value) or ".", exist_ok=True)
        with open(_JSON.value, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    app.run(main)
