"""Localization and detection: boxes, IoU, NMS, grid encode/decode, anchors, mAP."""

from jaxcnn.detection.anchors import kmeans_anchors
from jaxcnn.detection.ap import average_precision, coco_ap, voc_ap
from jaxcnn.detection.boxes import (
    area,
    center_to_corners,
    corners_to_center,
    from_pixels,
    to_pixels,
)
from jaxcnn.detection.grid import assign, decode, encode
from jaxcnn.detection.iou import iou, iou_corners, paired_iou, shape_iou
from jaxcnn.detection.localization import (
    LocalizationNet,
    localization_eval_sums,
    localization_summary,
)
from jaxcnn.detection.nms import nms, nms_numpy
from jaxcnn.detection.sliding import (
    ConvCropClassifier,
    CropClassifier,
    evaluate_sliding_windows,
    sliding_window_detect,
    to_convolutional,
)

# The trainable tasks built on these (localization, crop_classifier, detector) live in
# jaxcnn.tasks; this package is maths only.

__all__ = [
    "ConvCropClassifier", "CropClassifier", "LocalizationNet", "evaluate_sliding_windows",
    "localization_eval_sums",
    "localization_summary", "sliding_window_detect", "to_convolutional",
    "area", "assign", "average_precision", "center_to_corners", "coco_ap", "corners_to_center",
    "decode", "encode", "from_pixels", "iou", "iou_corners", "kmeans_anchors", "nms",
    "nms_numpy", "paired_iou", "shape_iou", "to_pixels", "voc_ap",
]
