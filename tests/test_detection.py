"""Localization and detection: boxes, IoU, NMS, grid targets, anchors, AP, losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import detection, losses


def _random_boxes(rng, n, lo=0.02, hi=0.4):
    """(n, 4) random (cx, cy, h, w) boxes inside [0, 1]."""
    h, w = rng.uniform(lo, hi, n), rng.uniform(lo, hi, n)
    cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
    return np.stack([cx, cy, h, w], axis=1).astype(np.float32)


def _brute_iou(a, b):
    out = np.zeros((len(a), len(b)))
    for i, (cx, cy, h, w) in enumerate(np.asarray(a, np.float64)):
        for j, (dx, dy, g, v) in enumerate(np.asarray(b, np.float64)):
            iw = max(0.0, min(cx + w / 2, dx + v / 2) - max(cx - w / 2, dx - v / 2))
            ih = max(0.0, min(cy + h / 2, dy + g / 2) - max(cy - h / 2, dy - g / 2))
            union = h * w + g * v - iw * ih
            out[i, j] = iw * ih / union if union > 0 else 0.0
    return out


# --- boxes --------------------------------------------------------------------------


def test_lecture_box_to_pixel_corners_and_back():
    # The lecture's car (bx, by, bh, bw) = (0.5, 0.7, 0.3, 0.4) on a 100 (h) x 200 (w) image.
    box = jnp.array([0.5, 0.7, 0.3, 0.4])
    np.testing.assert_allclose(detection.center_to_corners(box), [0.3, 0.55, 0.7, 0.85], atol=1e-6)
    np.testing.assert_allclose(detection.to_pixels(box, 100, 200), [60, 55, 140, 85], atol=1e-4)
    np.testing.assert_allclose(detection.from_pixels(jnp.array([60.0, 55, 140, 85]), 100, 200),
                               box, atol=1e-6)
    boxes = _random_boxes(np.random.default_rng(0), 50)
    np.testing.assert_allclose(
        detection.corners_to_center(detection.center_to_corners(boxes)), boxes, atol=1e-6)


def test_box_shape_is_checked():
    with pytest.raises(ValueError, match="boxes must have shape"):
        detection.center_to_corners(jnp.zeros((3, 5)))


# --- IoU ----------------------------------------------------------------------------


def test_iou_hand_values():
    # Corners [0,0,2,2] and [1,1,3,3]: intersection 1, union 4 + 4 - 1 = 7.
    a = jnp.array([[1.0, 1.0, 2.0, 2.0]])
    b = jnp.array([[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [10.0, 10.0, 1.0, 1.0]])
    np.testing.assert_allclose(detection.iou(a, b), [[1 / 7, 1.0, 0.0]], rtol=1e-6)


def test_iou_pairwise_batched_matches_brute_force():
    rng = np.random.default_rng(1)
    a = np.stack([_random_boxes(rng, 7) for _ in range(3)])
    b = np.stack([_random_boxes(rng, 5) for _ in range(3)])
    got = jax.jit(detection.iou)(a, b)
    assert got.shape == (3, 7, 5)
    for k in range(3):
        np.testing.assert_allclose(got[k], _brute_iou(a[k], b[k]), atol=1e-5)


def test_iou_zero_area_is_finite_with_finite_gradient():
    point = jnp.array([[0.5, 0.5, 0.0, 0.0]])
    line = jnp.array([[0.5, 0.5, 0.2, 0.0]])
    values = detection.iou(jnp.concatenate([point, line]), jnp.concatenate([point, line]))
    np.testing.assert_array_equal(values, np.zeros((2, 2)))
    grad = jax.grad(lambda x: detection.iou(x, point).sum())(point)
    assert np.all(np.isfinite(grad))


def test_shape_iou_same_centre():
    # (h, w) = (2, 1) vs (1, 2): intersection 1, union 3.
    np.testing.assert_allclose(detection.shape_iou(jnp.array([[2.0, 1.0]]),
                                                   jnp.array([[1.0, 2.0], [2.0, 1.0]])),
                               [[1 / 3, 1.0]], rtol=1e-6)


# --- NMS ----------------------------------------------------------------------------


def _kept(indices, count):
    return np.asarray(indices)[: int(count)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_numpy_loop_on_random_boxes(seed):
    rng = np.random.default_rng(seed)
    boxes, scores = _random_boxes(rng, 300, 0.05, 0.3), rng.random(300).astype(np.float32)
    for threshold in (0.3, 0.5, 0.7):
        indices, count = detection.nms(boxes, scores, threshold, max_out=300)
        expected = detection.nms_numpy(boxes, scores, threshold, 300)
        np.testing.assert_array_equal(_kept(indices, count), expected)
        assert np.all(np.asarray(indices)[int(count):] == -1)
        assert 0 < len(expected) < 300  # the threshold actually suppressed something


def test_nms_batched_per_class_and_score_threshold_match_numpy():
    rng = np.random.default_rng(3)
    boxes = np.stack([_random_boxes(rng, 120, 0.1, 0.4) for _ in range(4)])
    scores = rng.random((4, 120)).astype(np.float32)
    classes = rng.integers(0, 3, (4, 120))
    indices, counts = detection.nms(boxes, scores, 0.4, 40, score_threshold=0.2, classes=classes)
    assert indices.shape == (4, 40) and counts.shape == (4,)
    for k in range(4):
        expected = detection.nms_numpy(boxes[k], scores[k], 0.4, 40, 0.2, classes[k])
        np.testing.assert_array_equal(_kept(indices[k], counts[k]), expected)
    plain, _ = detection.nms(boxes, scores, 0.4, 40, score_threshold=0.2)
    assert not np.array_equal(plain, indices)  # per-class keeps overlapping boxes of other classes


def test_nms_ties_go_to_lower_index_and_padding():
    boxes = jnp.array([[0.5, 0.5, 0.2, 0.2]] * 3 + [[0.1, 0.1, 0.1, 0.1]])
    scores = jnp.array([0.5, 0.9, 0.9, 0.1])
    indices, count = detection.nms(boxes, scores, 0.5, max_out=4)
    np.testing.assert_array_equal(indices, [1, 3, -1, -1])
    assert int(count) == 2
    indices, count = detection.nms(boxes, scores, 0.5, max_out=4, score_threshold=0.1)
    np.testing.assert_array_equal(indices, [1, -1, -1, -1])  # 0.1 is not above 0.1


# --- grid encode / decode -------------------------------------------------------------


def test_encode_lecture_example_one_anchor():
    # 3x3 grid, the car (0.5, 0.7, 0.3, 0.4) sits in row 2, column 1: offsets (0.5, 0.1)
    # in the cell, size (0.9, 1.2) cells (bh, bw may exceed 1).
    y, dropped = detection.encode(jnp.array([[0.5, 0.7, 0.3, 0.4]]), jnp.array([1]), 3,
                                  jnp.array([[0.3, 0.3]]), num_classes=3)
    assert y.shape == (3, 3, 1, 8) and int(dropped) == 0
    np.testing.assert_allclose(y[2, 1, 0], [1, 0.5, 0.1, 0.9, 1.2, 0, 1, 0], atol=1e-6)
    assert float(jnp.abs(y).sum() - jnp.abs(y[2, 1, 0]).sum()) == 0.0


def test_encode_two_anchors_share_a_cell_and_collisions_keep_the_larger():
    anchors = jnp.array([[0.3, 0.1], [0.1, 0.3]])  # tall (pedestrian), wide (car)
    boxes = jnp.array([[0.5, 0.5, 0.3, 0.12], [0.52, 0.48, 0.12, 0.3],
                       [0.45, 0.55, 0.08, 0.2], [0.9, 0.9, 0.1, 0.1]])
    classes = jnp.array([0, 1, 2, -1])  # the last row is padding
    y, dropped = detection.encode(boxes, classes, 3, anchors, num_classes=3)
    assert int(dropped) == 1  # the small wide box loses anchor 1 of cell (1, 1) to the car
    np.testing.assert_allclose(y[1, 1, 0, [0, 5, 6, 7]], [1, 1, 0, 0])
    np.testing.assert_allclose(y[1, 1, 1, [0, 5, 6, 7]], [1, 0, 1, 0])
    assert float(y[..., 0].sum()) == 2.0


def test_encode_then_decode_returns_every_kept_box():
    rng = np.random.default_rng(4)
    boxes = np.stack([_random_boxes(rng, 12) for _ in range(5)])
    classes = rng.integers(-1, 3, (5, 12))
    anchors = jnp.array([[0.1, 0.1], [0.3, 0.15], [0.15, 0.3]])
    y, dropped = detection.encode(boxes, classes, (6, 5), anchors, num_classes=3)
    out_boxes, scores, out_classes = detection.decode(y)
    assign = jax.jit(jax.vmap(lambda b, c: detection.assign(b, c, (6, 5), anchors)[3]))
    kept_all = np.asarray(assign(jnp.asarray(boxes), jnp.asarray(classes)))
    for k in range(5):
        kept = kept_all[k]
        assert int(dropped[k]) == int((classes[k] >= 0).sum() - kept.sum())
        found = np.asarray(scores[k]) == 1
        assert found.sum() == kept.sum()
        got = sorted(map(tuple, np.round(np.c_[out_boxes[k][found], out_classes[k][found]], 5)))
        want = sorted(map(tuple, np.round(np.c_[boxes[k][kept], classes[k][kept]], 5)))
        np.testing.assert_allclose(got, want, atol=1e-5)


# --- anchors ------------------------------------------------------------------------


def test_kmeans_anchors_finds_two_shape_clusters():
    rng = np.random.default_rng(5)
    tall = np.array([0.4, 0.1]) * rng.uniform(0.95, 1.05, (40, 2))
    wide = np.array([0.1, 0.3]) * rng.uniform(0.95, 1.05, (60, 2))
    sizes = np.concatenate([tall, wide]).astype(np.float32)
    anchors, mean_iou = detection.kmeans_anchors(sizes, 2)
    expected = np.array([tall.mean(0), wide.mean(0)])
    expected = expected[np.argsort(expected.prod(1))]
    np.testing.assert_allclose(anchors, expected, rtol=1e-4)
    best = _brute_shape_iou(sizes, np.asarray(anchors)).max(1).mean()
    np.testing.assert_allclose(mean_iou, best, rtol=1e-5)
    assert 0.85 < float(mean_iou) < 1.0


def _brute_shape_iou(a, b):
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    return inter / (a[:, None].prod(-1) + b[None].prod(-1) - inter)


def test_kmeans_with_k_equal_n_distinct_sizes_has_mean_iou_one():
    sizes = jnp.array([[0.1, 0.2], [0.3, 0.3], [0.5, 0.1]])
    anchors, mean_iou = detection.kmeans_anchors(sizes, 3)
    np.testing.assert_allclose(mean_iou, 1.0, rtol=1e-6)
    np.testing.assert_allclose(anchors, sizes[jnp.array([0, 2, 1])], rtol=1e-6)


# --- average precision -----------------------------------------------------------------


def test_average_precision_hand_computed():
    # One class, two objects; detections at 0.9 (hit), 0.8 (miss), 0.7 (hit):
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    gt = [np.array([[0.2, 0.2, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])]
    pred = [np.array([[0.2, 0.2, 0.2, 0.2], [0.5, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2]])]
    scores, classes = [np.array([0.9, 0.8, 0.7])], [np.zeros(3, int)]
    voc = detection.average_precision(pred, scores, classes, gt, [np.zeros(2, int)], 1)
    # All-point: 0.5 * 1 + 0.5 * 2/3.
    np.testing.assert_allclose(voc["ap"], 0.5 + 1 / 3, rtol=1e-9)
    coco = detection.average_precision(pred, scores, classes, gt, [np.zeros(2, int)], 1, "coco")
    # 101 points: recall 0, .01, ..., .50 (51 points) at precision 1, the other 50 at 2/3.
    np.testing.assert_allclose(coco["ap"], (51 + 50 * 2 / 3) / 101, rtol=1e-9)


def test_voc_ap_duplicate_is_false_positive_and_missing_class_is_nan():
    gt = [np.array([[0.5, 0.5, 0.4, 0.4]])]
    pred = [np.array([[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]])]
    result = detection.average_precision(pred, [np.array([0.9, 0.8])], [np.array([0, 0])], gt,
                                         [np.array([0])], num_classes=2)
    assert result["per_class"][0] == 1.0  # the duplicate comes after full recall
    assert np.isnan(result["per_class"][1]) and result["ap"] == 1.0
    # IoU exactly 0.5 is not > 0.5 under VOC: (0.2 x 0.1 inside 0.2 x 0.2) -> a miss.
    half = detection.average_precision([np.array([[0.5, 0.45, 0.2, 0.1]])], [np.array([1.0])],
                                       [np.array([0])], [np.array([[0.5, 0.5, 0.2, 0.2]])],
                                       [np.array([0])], 1)
    assert half["ap"] == 0.0


def test_coco_ap_matches_pycocotools():
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(6)
    size = 200.0
    gt_b, gt_c, p_b, p_s, p_c = [], [], [], [], []
    for _ in range(8):
        g = _random_boxes(rng, int(rng.integers(1, 7)), 0.05, 0.4)
        c = rng.integers(0, 3, len(g))
        jitter = g[rng.integers(0, len(g), 10)] + rng.normal(0, 0.03, (10, 4)).astype(np.float32)
        jitter[:, 2:] = np.abs(jitter[:, 2:]) + 0.01
        p = np.concatenate([jitter, _random_boxes(rng, 5)])
        gt_b.append(g * size), gt_c.append(c), p_b.append(p * size)
        p_s.append(rng.random(len(p))), p_c.append(rng.integers(0, 3, len(p)))
    ours = detection.average_precision(p_b, p_s, p_c, gt_b, gt_c, 3, "coco")

    def xywh(b):
        return [float(b[0] - b[3] / 2), float(b[1] - b[2] / 2), float(b[3]), float(b[2])]

    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "height": 200, "width": 200} for i in range(len(gt_b))],
        "categories": [{"id": k} for k in range(3)],
        "annotations": [
            {"id": len(gt_b) * 100 + i * 10 + j, "image_id": i, "category_id": int(c),
             "bbox": xywh(b), "area": float(b[2] * b[3]), "iscrowd": 0}
            for i, (bs, cs) in enumerate(zip(gt_b, gt_c)) for j, (b, c) in enumerate(zip(bs, cs))],
    }
    coco.createIndex()
    dets = coco.loadRes([
        {"image_id": i, "category_id": int(c), "bbox": xywh(b), "score": float(s)}
        for i, (bs, ss, cs) in enumerate(zip(p_b, p_s, p_c)) for b, s, c in zip(bs, ss, cs)])
    evaluator = COCOeval(coco, dets, "bbox")
    evaluator.evaluate(), evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, 2]  # (T, R, K), area all, 100 dets
    theirs = np.array([precision[:, :, k].mean() for k in range(3)])
    np.testing.assert_allclose(ours["per_class"], theirs, atol=1e-9)
    np.testing.assert_allclose(ours["ap50"], precision[0].mean(), atol=1e-9)
    assert 0.05 < ours["ap"] < 0.95


# --- losses -------------------------------------------------------------------------


def test_localization_loss_lecture_example_and_masked_gradients():
    y_true = jnp.array([[1, 0.5, 0.7, 0.3, 0.4, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0]])
    y_pred = jnp.array([[0.8, 0.4, 0.7, 0.3, 0.6, 0.1, 0.7, 0.2],
                        [0.3, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]])
    # First: 0.04 + 0.01 + 0.04 + 0.01 + 0.09 + 0.04 = 0.23; second: only 0.3^2 = 0.09.
    np.testing.assert_allclose(losses.localization_loss(y_pred, y_true), (0.23 + 0.09) / 2,
                               rtol=1e-6)
    grad = jax.grad(losses.localization_loss)(y_pred, y_true)
    assert np.all(np.asarray(grad[1, 1:]) == 0.0) and float(grad[1, 0]) == pytest.approx(0.3)
    np.testing.assert_allclose(grad[0], (y_pred[0] - y_true[0]), atol=1e-6)  # 2 e / batch 2
    grad = jax.grad(losses.localization_loss_logistic)(y_pred, y_true)
    assert np.all(np.asarray(grad[1, 1:]) == 0.0)
    # Logistic variant, object row by hand: -log sigmoid(0.8) + box 0.01+0+0+0.04 + CE.
    row = (np.log1p(np.exp(-0.8)) + 0.05
           - np.log(np.exp(0.7) / np.exp([0.1, 0.7, 0.2]).sum()) + np.log1p(np.exp(0.3)))
    np.testing.assert_allclose(losses.localization_loss_logistic(y_pred, y_true), row / 2,
                               rtol=1e-5)
