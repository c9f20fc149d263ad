"""Localization and detection: boxes, IoU, NMS, grid targets, anchors, AP, losses, data."""

import csv
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import detection, losses
from jaxcnn.data import detection as detection_data
from jaxcnn.detection import localization, sliding
from jaxcnn.tasks import localization as localization_task


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
    # lambda_coord = 5 on the box: 0.04 + 5 * (0.01 + 0.04) + 0.01 + 0.09 + 0.04 = 0.43.
    np.testing.assert_allclose(losses.localization_loss(y_pred, y_true, box_weight=5.0),
                               (0.43 + 0.09) / 2, rtol=1e-6)
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


# --- synthetic scenes and datasets -----------------------------------------------------


def test_synthetic_scenes_are_deterministic_and_meet_the_spec():
    scenes = [detection_data.synthetic_scene(7, i) for i in range(24)]
    again = detection_data.synthetic_scene(7, 5)
    np.testing.assert_array_equal(again[0], scenes[5][0])
    np.testing.assert_array_equal(again[1], scenes[5][1])
    shared = 0
    for image, boxes, classes in scenes:
        assert image.shape == (96, 96, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert 1 <= len(classes) <= 6 and set(classes) <= {0, 1, 2}
        px = boxes * 96
        corners = np.concatenate([px[:, :2] - px[:, [3, 2]] / 2, px[:, :2] + px[:, [3, 2]] / 2])
        assert corners.min() >= -1e-3 and corners.max() <= 96.001
        longest = px[:, 2:].max(1)
        assert np.all((longest >= 10 - 1e-3) & (longest <= 48 + 1e-3))
        cells = [tuple(c) for c in np.floor(boxes[:, :2] * 6).astype(int)]
        shared += len(set(cells)) < len(cells)
    assert shared >= len(scenes) / 4
    # Pedestrians are tall, cars wide: the class is in the outline, the colour is random.
    sizes = np.concatenate([s[1] for s in scenes])
    labels = np.concatenate([s[2] for s in scenes])
    assert np.all(sizes[labels == 0, 2] > sizes[labels == 0, 3])
    assert np.all(sizes[labels == 1, 2] < sizes[labels == 1, 3])


def test_single_object_scenes_and_localization_targets():
    dataset = detection_data.synthetic_scenes(
        40, 10, seed=3, single_object=True,
        targets_fn=detection_data.localization_targets(3))
    assert dataset.boxes_train.shape == (40, 1, 4)
    empty = dataset.classes_train[:, 0] < 0
    assert 0 < empty.sum() < 20  # ~20 % background scenes
    batch = next(dataset.train_batches(8, seed=0))
    target, classes, boxes = batch["target"], batch["classes"][:, 0], batch["boxes"][:, 0]
    for row, cls, box in zip(target, classes, boxes):
        if cls < 0:
            np.testing.assert_array_equal(row, np.zeros(8))
        else:
            np.testing.assert_allclose(row, [1, *box, *np.eye(3)[cls]])
    evals = list(dataset.eval_batches(4))
    assert [float(b["mask"].sum()) for b in evals] == [4, 4, 2]
    assert np.all(evals[-1]["classes"][2:] == -1) and np.all(evals[-1]["target"][2:] == 0)


def test_flip_augmentation_mirrors_the_boxes():
    dataset = detection_data.synthetic_scenes(8, 2, seed=4)
    flipped = dataclasses.replace(dataset, augment="flip")
    plain, mirrored = next(dataset.train_batches(8, seed=1)), next(flipped.train_batches(8, seed=1))
    for k in range(8):
        if np.array_equal(plain["image"][k], mirrored["image"][k]):
            continue
        np.testing.assert_array_equal(mirrored["image"][k], plain["image"][k][:, ::-1])
        valid = plain["classes"][k] >= 0
        np.testing.assert_allclose(mirrored["boxes"][k][valid, 0], 1 - plain["boxes"][k][valid, 0])


def test_raccoon_voc_folder_split_and_boxes_match_its_csv(shared_data):
    root = os.path.join(shared_data, "raccoon")
    dataset = detection_data.load_detection_folder(root, image_size=(32, 32))
    assert dataset.class_names == ("raccoon",)
    assert (dataset.num_train, dataset.num_eval) == (160, 40) and not dataset.skipped
    # Independent check: the test CSV's pixel corners -> relative (cx, cy, h, w).
    expected = []
    for row in csv.DictReader(open(os.path.join(root, "test_labels.csv"))):
        w, h = float(row["width"]), float(row["height"])
        x1, y1, x2, y2 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        expected.append([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (y2 - y1) / h, (x2 - x1) / w])
    got = dataset.boxes_test[dataset.classes_test >= 0]
    np.testing.assert_allclose(sorted(map(tuple, got)), sorted(map(tuple, expected)), atol=1e-6)


def _write_voc(root, name, size, objects, image=True):
    from PIL import Image
    os.makedirs(root / "images", exist_ok=True)
    os.makedirs(root / "annotations", exist_ok=True)
    if image is True:
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(
            root / "images" / f"{name}.png")
    elif image == "broken":
        (root / "images" / f"{name}.png").write_bytes(b"not an image")
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    (root / "annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.png</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")


def test_voc_reader_reports_bad_files_by_name(tmp_path):
    _write_voc(tmp_path, "good", (40, 20), [("cat", 10, 5, 30, 15)])
    _write_voc(tmp_path, "outside", (40, 20), [("cat", 10, 5, 45, 15)])  # 5 px past the edge
    _write_voc(tmp_path, "broken", (40, 20), [("cat", 1, 1, 5, 5)], image="broken")
    read = detection_data.read_voc_folder(str(tmp_path), image_size=(10, 10),
                                          class_names=["cat", "dog"])
    assert read.files == ["good.png"] and read.images.shape == (1, 10, 10, 3)
    np.testing.assert_allclose(read.boxes[0], [[0.5, 0.5, 0.5, 0.5]])  # resized, still relative
    reasons = dict(read.problems)
    assert "outside the 40x20 image" in reasons["outside.xml"]
    assert "unreadable image" in reasons["broken.png"]
    with pytest.raises(detection_data.AnnotationError, match="broken.png"):  # first in order
        detection_data.read_voc_folder(str(tmp_path), class_names=["cat"], on_error="raise")


def test_unknown_or_misspelled_voc_class_is_an_error_naming_file_name_and_names(tmp_path):
    _write_voc(tmp_path, "a", (40, 20), [("raccoon", 10, 5, 30, 15)])
    _write_voc(tmp_path, "b", (40, 20), [("raccoon", 10, 5, 30, 15)])
    _write_voc(tmp_path, "c", (40, 20), [("racoon", 1, 1, 5, 5)])
    with pytest.raises(detection_data.AnnotationError,
                       match=r"c\.xml: unknown class 'racoon'; declared names: raccoon, dog"):
        detection_data.read_voc_folder(str(tmp_path), class_names=["raccoon", "dog"])
    # No names declared anywhere: the rarer near-duplicate is named, with how to declare.
    with pytest.raises(detection_data.AnnotationError,
                       match=r"c\.xml: class 'racoon' \(1 boxes\) looks like a misspelling of "
                             r"'raccoon' \(2 boxes\).*classes\.txt"):
        detection_data.read_voc_folder(str(tmp_path))
    (tmp_path / "classes.txt").write_text("raccoon\nracoon\n")  # declared: both are classes
    read = detection_data.read_voc_folder(str(tmp_path), image_size=(8, 8))
    assert read.names == ("raccoon", "racoon") and [c.tolist() for c in read.classes] == [
        [0], [0], [1]]


def test_yolo_reader_converts_w_h_order_and_reports_bad_lines(tmp_path):
    from PIL import Image
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.zeros((30, 60, 3), np.uint8)).save(tmp_path / "images" / f"{name}.jpg")
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.25 0.2 0.1\n0 0.1 0.1 0.1 0.1\n")
    (tmp_path / "labels" / "b.txt").write_text("0 0.95 0.5 0.2 0.2\n")  # right edge at 1.05
    read = detection_data.read_yolo_folder(str(tmp_path), ["x", "y"], image_size=(16, 16))
    assert read.files == ["images/a.jpg"] and read.problems[0][0] == "labels/b.txt"
    np.testing.assert_allclose(read.boxes[0], [[0.5, 0.25, 0.1, 0.2], [0.1, 0.1, 0.1, 0.1]])
    np.testing.assert_array_equal(read.classes[0], [1, 0])


def test_tfds_bbox_order_converts_to_center():
    # (ymin, xmin, ymax, xmax) = (0.1, 0.2, 0.5, 0.6) -> centre (0.4, 0.3), size 0.4 x 0.4.
    got = detection_data.tfds_boxes_to_center(np.array([[0.1, 0.2, 0.5, 0.6]]))
    np.testing.assert_allclose(got, [[0.4, 0.3, 0.4, 0.4]], atol=1e-6)


# --- sliding windows ------------------------------------------------------------------


def test_convolutional_form_equals_the_classifier_on_every_window():
    classifier = sliding.CropClassifier()
    params = classifier.init(jax.random.PRNGKey(0), jnp.zeros((1, 14, 14, 3)))["params"]
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda p: np.asarray(p) + 0.05 * rng.standard_normal(p.shape,
                                                                            np.float32),
                          params)  # non-zero biases too
    conv_params = sliding.to_convolutional(params)
    conv_apply = jax.jit(sliding.ConvCropClassifier().apply)
    for side, cells in ((16, 2), (28, 8)):
        image = jnp.asarray(rng.random((1, side, side, 3), np.float32))
        out = conv_apply({"params": conv_params}, image)
        assert out.shape == (1, cells, cells, 4)
        crops = jnp.stack([image[0, 2 * i:2 * i + 14, 2 * j:2 * j + 14]
                           for i in range(cells) for j in range(cells)])
        expected = jax.jit(classifier.apply)({"params": params}, crops).reshape(cells, cells, 4)
        np.testing.assert_allclose(out[0], expected, atol=1e-5, rtol=1e-5)


def test_window_boxes_and_crops_sample_the_same_pixels():
    rng = np.random.default_rng(8)
    image = rng.random((40, 60, 3)).astype(np.float32)
    resized = np.asarray(sliding.resize_image(jnp.asarray(image)[None], 20, 30))[0]
    # Resized by 1/2: cell (3, 5) covers original pixels x 20..48, y 12..40.
    box = sliding.window_boxes(4, 9, 2.0, 2.0, 40, 60)[3 * 9 + 5]
    np.testing.assert_allclose(box, [34 / 60, 26 / 40, 28 / 40, 28 / 60], rtol=1e-6)
    crop = sliding.crop_and_resize(image, np.array([[20, 12, 48, 40]]))[0]
    np.testing.assert_allclose(crop, resized[6:20, 10:24], atol=1e-5)


# --- localization metrics ---------------------------------------------------------------


def test_localization_eval_sums_by_hand():
    y_true = jnp.array([[1, 0.5, 0.5, 0.2, 0.2, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0],
                        [1, 0.5, 0.5, 0.2, 0.2, 1, 0, 0]])
    # Row 0: right class, box shifted by half its width (IoU 1/3); row 1: pc 0.7 says
    # object on a background image; row 2 is padding.
    y_pred = jnp.array([[0.9, 0.6, 0.5, 0.2, 0.2, 0, 1, 0], [0.7, 0, 0, 0, 0, 0, 0, 0],
                        [1, 0.5, 0.5, 0.2, 0.2, 1, 0, 0]])
    sums = localization.localization_eval_sums(y_pred, y_true, jnp.array([1.0, 1.0, 0.0]))
    assert {k: round(float(v), 5) for k, v in sums.items()} == {
        "pc_correct": 1.0, "objects": 1.0, "class_correct": 1.0, "iou": round(1 / 3, 5),
        "count": 2.0}
    summary = localization.localization_summary({k: float(v) / 2 for k, v in sums.items()})
    np.testing.assert_allclose(summary["mean_iou_on_objects"], 1 / 3, rtol=1e-5)
    assert summary["pc_accuracy"] == 0.5 and summary["class_accuracy_on_objects"] == 1.0


def test_localization_task_eval_through_train_and_evaluate_matches_direct_sums(tmp_path):
    from jaxcnn import train
    dataset = detection_data.synthetic_scenes(
        16, 6, seed=5, single_object=True, image_size=32, min_px=8, max_px=16,
        targets_fn=detection_data.localization_targets(3))
    model = localization.LocalizationNet(widths=(4,), hidden=8)
    config = train.default_config()
    config.update({"train_steps": 1, "batch_size": 8, "eval_batch_size": 4, "normalize": False,
                   "progress": False, "tensorboard": False, "async_checkpoints": False})
    task = localization_task.make_task(dataset, model)
    result = train.train_and_evaluate(config, str(tmp_path), task)
    variables = {"params": result.state.params, "batch_stats": result.state.batch_stats}
    out = model.apply(variables, jnp.asarray(dataset.x_test))
    target = detection_data.localization_targets(3)(dataset.boxes_test, dataset.classes_test)
    direct = localization.localization_eval_sums(out, jnp.asarray(target["target"]), jnp.ones(6))
    for key in ("pc_correct", "objects", "class_correct", "iou"):
        np.testing.assert_allclose(result.metrics[key], float(direct[key]) / 6, rtol=1e-5)
    np.testing.assert_allclose(result.metrics["loss"],
                               float(losses.localization_loss(out, target["target"])), rtol=1e-5)


def test_annotated_folder_without_a_usable_image_names_the_folder_and_its_problems(tmp_path):
    """Every label file skipped (here: a malformed line) is one clear error, not numpy's."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2\n")
    (tmp_path / "images" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no usable annotated image in .*expected 'class cx"):
        detection_data.read_yolo_folder(str(tmp_path), ["raccoon"])
    (tmp_path / "labels" / "a.txt").write_text("3 0.5 0.5 0.2 0.2\n")
    with pytest.raises(detection_data.AnnotationError,
                       match=r"a\.txt: line 1: unknown class 3; the 1 declared names"):
        detection_data.read_yolo_folder(str(tmp_path), ["raccoon"])
