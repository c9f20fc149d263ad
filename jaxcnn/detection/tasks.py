"""The lecture's first detectors as jaxcnn.train tasks, and their evaluation on scenes.

Both train through `jaxcnn.train.train_and_evaluate`: classification with localization
(LocalizationNet + the y1-masked loss on single-object scenes) and the sliding-window
crop classifier (14x14 crops cut from scenes, background = class 0).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import counting, losses
from jaxcnn.data.arrays import ArrayDataset
from jaxcnn.detection import sliding
from jaxcnn.detection.ap import _iou_matrix, average_precision
from jaxcnn.detection.localization import LocalizationNet, localization_eval_sums
from jaxcnn.train import Task


def localization_task(dataset, model=None, logistic: bool = False,
                      box_weight: float = 1.0) -> Task:
    """Classification with localization on a dataset whose batches carry "target" (B, 5+K)."""
    model = model or LocalizationNet(num_classes=dataset.num_classes)
    base = losses.localization_loss_logistic if logistic else losses.localization_loss

    def loss(outputs, targets):
        return base(outputs, targets, box_weight)

    def loss_fn(outputs, batch):
        value = loss(outputs, batch["target"])
        return value, {"loss": value}

    def eval_fn(outputs, batch):
        sums = localization_eval_sums(outputs, batch["target"], batch["mask"], logits=logistic)
        per_example = jax.vmap(lambda o, t: loss(o[None], t[None]))(outputs, batch["target"])
        return {**sums, "loss": jnp.sum(per_example * batch["mask"])}

    return Task(model=model, dataset=dataset, loss_fn=loss_fn, eval_fn=eval_fn)


def _square_corners(boxes_px: np.ndarray, margin: float) -> np.ndarray:
    """Squares of side margin * the longer box side around (cx, cy, h, w) pixel boxes."""
    side = margin * np.maximum(boxes_px[:, 2], boxes_px[:, 3])
    return np.stack([boxes_px[:, 0] - side / 2, boxes_px[:, 1] - side / 2,
                     boxes_px[:, 0] + side / 2, boxes_px[:, 1] + side / 2], axis=1)


def _scene_crops(image, boxes, classes, rng, margin, jitter, positives_per_object,
                 negatives_per_image, side_range):
    height, width = image.shape[:2]
    valid = classes >= 0
    boxes_px = boxes[valid] * np.array([width, height, height, width])
    labels = classes[valid] + 1
    corners, targets = [], []
    for _ in range(positives_per_object):
        shift = rng.uniform(-jitter, jitter, (len(boxes_px), 3))
        side = np.maximum(boxes_px[:, 2], boxes_px[:, 3]) * (1 + shift[:, 2])
        moved = boxes_px.copy()
        moved[:, 0] += shift[:, 0] * side
        moved[:, 1] += shift[:, 1] * side
        moved[:, 2] = moved[:, 3] = side
        corners.append(_square_corners(moved, margin))
        targets.append(labels)
    objects = _square_corners(boxes_px, margin)
    found = 0
    for _ in range(negatives_per_image * 20):
        if found == negatives_per_image:
            break
        side = rng.uniform(*side_range)
        x, y = rng.uniform(0, width - side), rng.uniform(0, height - side)
        candidate = np.array([[x, y, x + side, y + side]])
        if len(objects) and _iou_matrix(candidate, objects).max() >= 0.3:
            continue
        corners.append(candidate)
        targets.append(np.zeros(1, np.int64))
        found += 1
    corners = np.concatenate(corners) if corners else np.zeros((0, 4))
    return sliding.crop_and_resize(image, corners), np.concatenate(targets).astype(np.int32)


def crop_dataset(
    detection_dataset, *, seed: int = 0, margin: float = 1.1, jitter: float = 0.08,
    positives_per_object: int = 2, negatives_per_image: int = 4,
    side_range: tuple[float, float] = (11.0, 53.0),
) -> ArrayDataset:
    """14x14 crops from a DetectionDataset: squares around each object (label class + 1,
    jittered by `jitter` of the side) and background squares (label 0, IoU < 0.3 with objects).
    """
    splits = []
    for split, x, b, c in (("train", detection_dataset.x_train, detection_dataset.boxes_train,
                            detection_dataset.classes_train),
                           ("test", detection_dataset.x_test, detection_dataset.boxes_test,
                            detection_dataset.classes_test)):
        rng = np.random.default_rng([seed, split == "test"])
        crops, labels = zip(*(_scene_crops(x[i], b[i], c[i], rng, margin, jitter,
                                           positives_per_object, negatives_per_image,
                                           side_range) for i in range(len(x))))
        splits.append((np.concatenate(crops), np.concatenate(labels)))
    (x_tr, y_tr), (x_te, y_te) = splits
    return ArrayDataset("scene_crops", x_tr, y_tr, x_te, y_te,
                        detection_dataset.num_classes + 1, "flip")


def crop_classifier_task(dataset: ArrayDataset) -> Task:
    """The lecture's 14x14 crop classifier (softmax over background + classes)."""
    return Task(
        model=sliding.CropClassifier(dataset.num_classes), dataset=dataset,
        loss_fn=lambda out, batch: losses.classification_loss(out, batch["label"]),
        eval_fn=lambda out, batch: losses.classification_eval_sums(
            out, batch["label"], batch["mask"]),
    )


def class_aspects(dataset) -> np.ndarray:
    """Mean box height / width of each class over the training boxes."""
    boxes, classes = dataset.boxes_train, dataset.classes_train
    return np.array([np.mean(boxes[classes == k][:, 2] / boxes[classes == k][:, 3]
                             * dataset.image_shape[0] / dataset.image_shape[1])
                     for k in range(dataset.num_classes)], np.float32)


def evaluate_sliding_windows(
    classifier_params: dict, dataset, window_sizes: Sequence[float], *, batch_size: int = 50,
    margin: float = 1.1, use_class_aspects: bool = True, **detect_kwargs,
) -> dict[str, float]:
    """VOC mAP@0.5 and COCO mAP@[.5:.95] of the sliding-window detector on the test scenes."""
    conv_params = sliding.to_convolutional(classifier_params)
    aspects = class_aspects(dataset) if use_class_aspects else None
    detect = jax.jit(lambda p, x: sliding.sliding_window_detect(
        p, x, tuple(window_sizes), class_aspects=aspects, crop_margin=margin,
        num_outputs=dataset.num_classes + 1, **detect_kwargs))
    preds = []
    for start in range(0, dataset.num_eval, batch_size):
        preds.append(jax.device_get(detect(conv_params,
                                           dataset.x_test[start:start + batch_size])))
    boxes, scores, classes, _ = (np.concatenate(p) for p in zip(*preds))
    gt_boxes, gt_classes = dataset.boxes_test, dataset.classes_test
    voc = average_precision(boxes, scores, classes, gt_boxes, gt_classes, dataset.num_classes)
    coco = average_precision(boxes, scores, classes, gt_boxes, gt_classes, dataset.num_classes,
                             "coco")
    result = {"voc_map50": voc["ap"], "coco_map": coco["ap"], "coco_ap50": coco["ap50"]}
    for name, ap in zip(dataset.class_names, voc["per_class"]):
        result[f"voc_ap50_{name}"] = float(ap)
    return result


def _best_time(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def benchmark_sliding_windows(classifier_params: dict, image: np.ndarray,
                              num_outputs: int = 4, repeats: int = 5) -> dict[str, float]:
    """Naive (classifier per 14x14 window) vs convolutional form on one (H, W, C) image.

    Returns seconds (best of `repeats`, jit-compiled) and MACs (jaxcnn.counting) of each,
    and the largest difference between their outputs.
    """
    images = jnp.asarray(image)[None]
    conv_params = sliding.to_convolutional(classifier_params)
    naive = jax.jit(lambda p, x: sliding.naive_window_logits(p, x, num_outputs))
    conv_model = sliding.ConvCropClassifier(num_outputs)
    conv = jax.jit(lambda p, x: conv_model.apply({"params": p}, x))
    out_naive, out_conv = naive(classifier_params, images), conv(conv_params, images)
    windows = out_naive.shape[1] * out_naive.shape[2]
    crop_macs = counting.total_macs(counting.summary(
        sliding.CropClassifier(num_outputs), (sliding.WINDOW, sliding.WINDOW, image.shape[-1])))
    conv_macs = counting.total_macs(counting.summary(conv_model, images.shape[1:]))
    naive_s = _best_time(naive, classifier_params, images, repeats=repeats)
    conv_s = _best_time(conv, conv_params, images, repeats=repeats)
    return {"windows": windows, "naive_seconds": naive_s, "conv_seconds": conv_s,
            "speedup": naive_s / conv_s, "naive_macs": windows * crop_macs,
            "conv_macs": conv_macs, "mac_ratio": windows * crop_macs / conv_macs,
            "max_abs_difference": float(jnp.max(jnp.abs(out_naive - out_conv)))}
