"""detection.average_precision against pycocotools' COCOeval and a plain VOC devkit loop."""

import numpy as np
import pytest

from jaxcnn import detection

pytest.importorskip("pycocotools")
from benchmarks.ap import pycocotools_ap  # noqa: E402  (COCOeval on the same arrays)


def voc_reference(preds, gts, num_classes):
    """The devkit loop: global score order; best-IoU gt; > 0.5 and untaken; crowd ignored."""
    aps = np.full(num_classes, np.nan)
    for k in range(num_classes):
        dets = [(s, i, b) for i, (boxes, scores, classes) in enumerate(preds)
                for b, s, c in zip(boxes, scores, classes) if c == k]
        dets = [dets[j] for j in np.argsort([-d[0] for d in dets], kind="mergesort")]
        gt = [[(b, c <= -2) for b, c in zip(*g) if c == k or c == -2 - k] for g in gts]
        npos = sum(not crowd for g in gt for _, crowd in g)
        if not npos:
            continue
        taken = [[False] * len(g) for g in gt]
        tp, fp = [], []
        for _, i, box in dets:
            ious = [float(detection.ap._iou_matrix(detection.ap._corners(box),
                                                   detection.ap._corners(b))[0, 0])
                    for b, _ in gt[i]]
            best = int(np.argmax(ious)) if ious else -1
            if best >= 0 and ious[best] > 0.5:
                if gt[i][best][1]:
                    continue
                if not taken[i][best]:
                    taken[i][best] = True
                    tp.append(1), fp.append(0)
                    continue
            tp.append(0), fp.append(1)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps[k] = detection.voc_ap(rec, prec)
    return aps


def _case(seed, num_images=40, num_classes=3, grid=False, crowd=0.0, ties=False,
          max_dets=12, max_gts=6):
    rng = np.random.default_rng(seed)
    preds, gts = [], []

    def boxes(n):
        if grid:  # half-integer corners: IoUs land exactly on 0.5, 0.75, ... and tie
            return np.stack([rng.integers(2, 8, n) / 2 + 2, rng.integers(2, 8, n) / 2 + 2,
                             rng.integers(1, 4, n), rng.integers(1, 4, n)], 1).astype(float)
        c = rng.uniform(0.1, 0.9, (n, 2))
        return np.concatenate([c, rng.uniform(0.05, 0.4, (n, 2))], 1)

    for _ in range(num_images):
        n_gt = rng.integers(0, max_gts + 1)
        g_boxes, g_classes = boxes(n_gt), rng.integers(0, num_classes, n_gt)
        g_classes = np.where(rng.random(n_gt) < crowd, -2 - g_classes, g_classes)
        n_det = rng.integers(0, max_dets + 1)
        d_boxes = boxes(n_det)
        if n_gt and not grid:  # detections near the objects, so matches happen
            near = rng.integers(0, n_gt, n_det)
            d_boxes = g_boxes[near] + rng.normal(0, 0.03, (n_det, 4))
            d_boxes[:, 2:] = np.abs(d_boxes[:, 2:]) + 1e-3
        scores = (rng.integers(1, 4, n_det) / 4 if ties else rng.random(n_det))
        d_classes = rng.integers(0, num_classes, n_det)
        preds.append((d_boxes, scores, d_classes))
        gts.append((g_boxes, g_classes))
    return preds, gts


def _ours(preds, gts, num_classes, metric):
    return detection.average_precision(*(list(x) for x in zip(*preds)),
                                       *(list(x) for x in zip(*gts)), num_classes, metric)


def test_benchmark_case_equals_pycocotools():
    from benchmarks.ap import ours, random_case

    preds, gts = random_case(30, 5, 20, seed=3)
    mine, theirs = ours(preds, gts, 5), pycocotools_ap(preds, gts, 5)
    assert abs(mine["ap"] - theirs[0]) <= 1e-9 and 0.05 < mine["ap"] < 0.95
    np.testing.assert_allclose(mine["per_class"], theirs[1], atol=1e-9, rtol=0)


CASES = {
    "random": dict(),
    "random_many_classes": dict(num_classes=7, num_images=60),
    "score_ties": dict(ties=True),
    "grid_iou_ties": dict(grid=True, ties=True),
    "crowd": dict(crowd=0.3),
    "crowd_grid_ties": dict(crowd=0.3, grid=True, ties=True),
    "over_100_detections_per_image": dict(num_images=4, num_classes=1, max_dets=260,
                                          ties=True, grid=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_coco_ap_equals_pycocotools(name):
    preds, gts = _case(sum(map(ord, name)), **CASES[name])
    num_classes = CASES[name].get("num_classes", 3) + 1  # the last class has no gt at all
    ours = _ours(preds, gts, num_classes, "coco")
    ap, per_class, ap50, ap75 = pycocotools_ap(preds, gts, num_classes)
    assert np.isnan(ours["per_class"][-1]) and np.isnan(per_class[-1])
    np.testing.assert_allclose(ours["per_class"], per_class, atol=1e-9, rtol=0)
    for got, want in ((ours["ap"], ap), (ours["ap50"], ap50), (ours["ap75"], ap75)):
        assert abs(got - want) <= 1e-9
    assert 0 < ours["ap"] < 1  # a case where matching decides the value


@pytest.mark.parametrize("name", ["random", "score_ties", "grid_iou_ties", "crowd_grid_ties"])
def test_voc_ap_equals_the_devkit_loop(name):
    preds, gts = _case(sum(map(ord, name)) + 1, **CASES[name])
    ours = _ours(preds, gts, 4, "voc")
    np.testing.assert_allclose(ours["per_class"], voc_reference(preds, gts, 4), atol=1e-12,
                               rtol=0)


def test_ap_edge_cases_by_hand():
    box = np.array([[0.5, 0.5, 0.2, 0.2]])
    none = np.zeros((0, 4))
    # No detections at all: AP 0 for the class with gt, NaN for the other.
    result = detection.average_precision([none, none], [np.zeros(0)] * 2, [np.zeros(0, int)] * 2,
                                         [box, none], [np.array([0]), np.zeros(0, int)], 2, "coco")
    assert result["ap"] == 0.0 and np.isnan(result["per_class"][1])
    # Only a crowd region: the class has no gt (NaN), the detection on it is ignored.
    crowd = detection.average_precision([box], [np.array([0.9])], [np.array([0])], [box],
                                        [np.array([-2])], 1, "coco")
    assert np.isnan(crowd["ap"])
    # A detection inside a crowd region is ignored, not a false positive: AP stays 1.
    big = np.array([[0.5, 0.5, 0.8, 0.8], [0.2, 0.2, 0.1, 0.1]])
    preds = np.array([[0.5, 0.5, 0.3, 0.3], [0.2, 0.2, 0.1, 0.1]])
    ignored = detection.average_precision([preds], [np.array([0.9, 0.5])], [np.array([0, 0])],
                                          [big], [np.array([-2, 0])], 1, "coco")
    assert ignored["ap"] == pytest.approx(1.0, abs=1e-12)


def test_equal_iou_goes_to_the_later_gt_as_in_pycocotools():
    # Detection A (0.9) overlaps gts 0 and 1 equally (IoU 5/7); B (0.8) is gt 1 exactly and
    # overlaps gt 0 with IoU 0.5. COCO scans gts in order and keeps the last best: A takes
    # gt 1, so B is left gt 0 (IoU 0.5); taking the first best would leave B gt 1 (IoU 1).
    def box(x1, x2):
        return [(x1 + x2) / 2, 0.5, 1.0, x2 - x1]

    gts = [(np.array([box(0, 3), box(1, 4)]), np.array([0, 0]))]
    preds = [(np.array([box(0.5, 3.5), box(1, 4)]), np.array([0.9, 0.8]), np.array([0, 0]))]
    ours = _ours(preds, gts, 1, "coco")
    ap, *_ = pycocotools_ap(preds, gts, 1)
    assert abs(ours["ap"] - ap) <= 1e-9
    # By hand, 101 recall points: t = 0.50: both TP -> 1; t = 0.55..0.70: A TP, B FP ->
    # precision 1 up to recall 0.5 = 51/101; t = 0.75..0.95: A FP, B takes gt 1 -> 0.5 x 51/101.
    # (The first-best rule would give (5 + 5 x 0.5 x 51/101) / 10 = 0.626.)
    assert ours["ap"] == pytest.approx((1 + 4 * 51 / 101 + 5 * 0.5 * 51 / 101) / 10, abs=1e-12)
