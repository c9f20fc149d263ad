"""The YOLO-style detector task: a registry trunk + grid head, YOLOv2's loss, mAP evaluation.

config.dataset: 'synthetic_scenes', 'voc_folder:DIR', 'yolo_folder:DIR' or 'voc' (TFDS).
`build` records the anchors it resolved (k-means of the training boxes when config.task.anchors
is empty) and the dataset's class names in config.task, so config.json holds them and
evaluation and prediction reuse them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import models, train, weights
from jaxcnn.data.detection import DetectionDataset, get_detection_dataset
from jaxcnn.detection.anchors import kmeans_anchors
from jaxcnn.detection.yolo import (
    YOLODetector,
    constant_baseline,
    detect,
    map_metrics,
    training_box_sizes,
    yolo_loss,
)

NAME = "detector"
DEFAULTS: dict[str, Any] = {
    "backbone": "resnet20_cifar",
    "backbone_kwargs": {},
    "grid": 6,
    "num_anchors": 3,
    "anchors": (),
    "coord_weight": 5.0,
    "noobj_weight": 0.5,
    "ignore_iou": 0.6,
    "head_channels": 128,
    "iou_threshold": 0.45,
    "score_threshold": 0.01,
    "max_detections": 50,
    "init_weights": "",
    "class_names": (),
    "synthetic_train": 4000,
    "synthetic_test": 1000,
}
HELP: dict[str, str] = {
    "backbone": "registry model whose trunk the detector uses (config.model is only recorded)",
    "backbone_kwargs": "keyword arguments of the backbone (e.g. widths)",
    "grid": "S: the head predicts on an S x S grid",
    "num_anchors": "anchors per cell (k of the k-means dimension clusters)",
    "anchors": "((h, w), ...) relative to the image; empty: k-means of the training boxes",
    "coord_weight": "YOLO's lambda_coord: weight of the box terms",
    "noobj_weight": "YOLO's lambda_noobj: weight of objectness on empty anchors",
    "ignore_iou": "empty anchors whose box overlaps an object this much are not penalised",
    "head_channels": "channels of the head's convolutions",
    "iou_threshold": "NMS: a box overlapping a kept one this much is dropped",
    "score_threshold": "detections scoring below this are dropped",
    "max_detections": "detections kept per image",
    "init_weights": "trunk's starting weights: a torchvision .pth of the backbone, for VGG "
                    "also a Keras .h5 or 'hed'; '' = from scratch",
    "class_names": "a YOLO-txt folder's class names (VOC folders name their classes)",
    "synthetic_train": "scenes generated for dataset 'synthetic_scenes' (train split)",
    "synthetic_test": "scenes generated for dataset 'synthetic_scenes' (test split)",
}


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """The settings a detector needs at inference: anchors, thresholds, class names."""

    anchors: np.ndarray
    class_names: tuple[str, ...]
    iou_threshold: float
    score_threshold: float
    max_detections: int

    def detect(self, raw: Any) -> dict[str, Any]:
        """Raw head output -> fixed-size detections (yolo.detect with these settings)."""
        return detect(raw, jnp.asarray(self.anchors), iou_threshold=self.iou_threshold,
                      score_threshold=self.score_threshold, max_detections=self.max_detections)


def dataset_from_config(config: ml_collections.ConfigDict, settings: Any) -> DetectionDataset:
    """The detection dataset config.dataset names, resized to config.image_size."""
    dataset = get_detection_dataset(
        config.dataset, image_size=config.image_size, data_dir=config.data_dir,
        class_names=tuple(settings.class_names) or None, augment=config.augment or "flip",
        download=config.download, num_train=settings.synthetic_train,
        num_test=settings.synthetic_test,
        validation_fraction=config.get("validation_fraction", 0.0))
    if dataset.num_train == 0 or dataset.num_eval == 0:
        raise ValueError(f"detection dataset {config.dataset!r} has {dataset.num_train} train and "
                         f"{dataset.num_eval} test images; both splits need images")
    return dataset


def resolve_anchors(settings: Any, dataset: DetectionDataset) -> np.ndarray:
    """config.task.anchors when given, else YOLOv2's k-means dimension clusters of the
    training boxes (deterministic)."""
    if settings.anchors:
        anchors = np.asarray(settings.anchors, np.float32)
        if anchors.ndim != 2 or anchors.shape[1] != 2 or (anchors <= 0).any():
            raise ValueError(f"config.task.anchors must be ((h, w), ...) of positive relative "
                             f"sizes, got {settings.anchors}")
    else:
        sizes = training_box_sizes(dataset)
        if len(sizes) < settings.num_anchors:
            raise ValueError(f"{len(sizes)} training boxes cannot make {settings.num_anchors} "
                             f"anchors")
        anchors = np.asarray(kmeans_anchors(sizes, settings.num_anchors)[0], np.float32)
    if len(anchors) != settings.num_anchors:
        raise ValueError(f"{len(anchors)} anchors given but config.task.num_anchors is "
                         f"{settings.num_anchors}")
    return anchors


def build_model(config: ml_collections.ConfigDict, settings: Any, num_classes: int
                ) -> YOLODetector:
    """The trunk of registry model settings.backbone + the grid head."""
    kwargs = {"conv_impl": config.conv_impl, **settings.backbone_kwargs}
    trunk = models.get_trunk(settings.backbone, dtype=jnp.dtype(config.dtype), **kwargs)
    return YOLODetector(trunk=trunk, trunk_stride=models.trunk_info(settings.backbone, **kwargs)
                        .stride, grid=settings.grid, num_anchors=settings.num_anchors,
                        num_classes=num_classes, head_channels=settings.head_channels,
                        dtype=jnp.dtype(config.dtype))


def spec(config: ml_collections.ConfigDict, dataset: DetectionDataset) -> DetectorSpec:
    """The inference settings of a detector config on `dataset`."""
    settings = train.task_settings(config, DEFAULTS)
    return DetectorSpec(resolve_anchors(settings, dataset), tuple(dataset.class_names),
                        settings.iou_threshold, settings.score_threshold,
                        settings.max_detections)


def make_task(config: ml_collections.ConfigDict, dataset: DetectionDataset) -> train.Task:
    """The detector on `dataset` (loss: yolo_loss; eval: gathered detections -> mAP, and the
    constant baseline's mAP as baseline_*)."""
    settings = train.task_settings(config, DEFAULTS)
    found = spec(config, dataset)
    model = build_model(config, settings, dataset.num_classes)
    model.extra_downsamplings(dataset.image_shape[0])  # a clear error now, not in the step
    anchors = jnp.asarray(found.anchors)
    loss_weights = {"coord_weight": settings.coord_weight,
                    "noobj_weight": settings.noobj_weight, "ignore_iou": settings.ignore_iou}

    def loss_fn(raw, batch):
        return yolo_loss(raw, batch["boxes"], batch["classes"], anchors, **loss_weights)

    def output_fn(raw, batch):
        return {**found.detect(raw), "boxes": batch["boxes"], "classes": batch["classes"]}

    def metrics(outputs):
        baseline = constant_baseline(dataset, found.class_names)
        return {**map_metrics(outputs, found.class_names),
                **{f"baseline_{key}": value for key, value in baseline.items()}}

    init_variables = (weights.pretrained_trunk(settings.backbone, settings.init_weights)
                      if settings.init_weights else None)
    return train.Task(model=model, dataset=dataset, loss_fn=loss_fn, output_fn=output_fn,
                      init_variables=init_variables,
                      make_evaluator=lambda: train.GatherAll(metrics), task_defaults=DEFAULTS)


def build(config: ml_collections.ConfigDict) -> train.Task:
    """The detector of config.task on config.dataset; records anchors and class names."""
    settings = train.task_settings(config, DEFAULTS)
    dataset = dataset_from_config(config, settings)
    if not settings.anchors:
        config.task.anchors = tuple(tuple(float(v) for v in a)
                                    for a in resolve_anchors(settings, dataset))
    if not settings.class_names:
        config.task.class_names = tuple(dataset.class_names)
    return make_task(config, dataset)
