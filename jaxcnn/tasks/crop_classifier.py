"""The sliding-window crop classifier: the lecture's 14x14 net on crops cut from scenes.

config.dataset is "scene_crops": squares around each object of generated multi-object scenes
(label class + 1) and background squares (label 0). The keys window_sizes .. use_class_aspects
configure the sliding-window detector that experiments/localize.py runs with the trained
classifier on the scenes (`scenes`, `detect_settings`).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from jaxcnn import losses, train
from jaxcnn.data import detection as detection_data
from jaxcnn.data.arrays import ArrayDataset
from jaxcnn.detection.ap import _iou_matrix as iou_matrix
from jaxcnn.detection.sliding import CropClassifier, crop_and_resize

NAME = "crop_classifier"
DEFAULTS: dict[str, Any] = {
    "num_train": 1500, "num_test": 300, "scenes_seed": 1, "margin": 1.1,
    "window_sizes": (12, 16, 22, 30, 40, 53), "iou_threshold": 0.3, "score_threshold": 0.05,
    "max_out": 30, "use_class_aspects": True,
}
HELP: dict[str, str] = {
    "num_train": "multi-object scenes the training crops are cut from",
    "num_test": "held-out scenes (test crops; the sliding-window detector's mAP)",
    "scenes_seed": "seed of the generated scenes and of the crops",
    "margin": "crop side / longer object side (also the detector's window margin)",
    "window_sizes": "sliding windows' sides in scene pixels",
    "iou_threshold": "the detector's per-class NMS IoU",
    "score_threshold": "the detector drops windows scoring below this",
    "max_out": "detections kept per scene",
    "use_class_aspects": "boxes take each class's mean training aspect ratio",
}


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
        if len(objects) and iou_matrix(candidate, objects).max() >= 0.3:
            continue
        corners.append(candidate)
        targets.append(np.zeros(1, np.int64))
        found += 1
    corners = np.concatenate(corners) if corners else np.zeros((0, 4))
    return crop_and_resize(image, corners), np.concatenate(targets).astype(np.int32)


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


def scenes(config: ml_collections.ConfigDict) -> detection_data.DetectionDataset:
    """The generated scenes the crops come from (and the detector is evaluated on)."""
    settings = train.task_settings(config, DEFAULTS)
    return detection_data.synthetic_scenes(settings.num_train, settings.num_test,
                                           seed=settings.scenes_seed)


def detect_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Keyword arguments of detection.sliding.evaluate_sliding_windows for this config."""
    s = train.task_settings(config, DEFAULTS)
    return {"window_sizes": tuple(s.window_sizes), "margin": s.margin,
            "use_class_aspects": s.use_class_aspects, "iou_threshold": s.iou_threshold,
            "score_threshold": s.score_threshold, "max_out": s.max_out}


def make_task(dataset: ArrayDataset) -> train.Task:
    """The lecture's 14x14 crop classifier (softmax over background + classes)."""
    return train.Task(
        model=CropClassifier(dataset.num_classes), dataset=dataset,
        loss_fn=lambda out, batch: losses.classification_loss(out, batch["label"]),
        eval_fn=lambda out, batch: losses.classification_eval_sums(
            out, batch["label"], batch["mask"]),
        task_defaults=DEFAULTS,
    )


def build(config: ml_collections.ConfigDict) -> train.Task:
    """The crop classifier on crops of config.task's generated scenes."""
    if config.dataset != "scene_crops":
        raise ValueError(f"the crop_classifier task trains on config.dataset='scene_crops'; "
                         f"received {config.dataset!r}")
    settings = train.task_settings(config, DEFAULTS)
    return make_task(crop_dataset(scenes(config), seed=settings.scenes_seed,
                                  margin=settings.margin))
