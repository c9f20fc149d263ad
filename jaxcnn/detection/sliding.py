"""Sliding windows: the lecture's 14x14x3 crop classifier, its convolutional form, a detector.

The classifier is 5x5 conv 16 -> 2x2 max pool -> FC 400 -> FC 400 -> softmax 4 (background
+ three classes). Its convolutional form replaces the FC layers with a 5x5x16 conv of 400
filters and two 1x1 convs, the same weights reshaped, so one pass over a larger image
gives the classifier's output on every 14x14 window at stride 2 (the pool's stride).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.detection.ap import average_precision
from jaxcnn.detection.nms import nms
from jaxcnn.models.layers import MaxPool

WINDOW = 14  # the classifier's input side, pixels
STRIDE = 2  # window step of the convolutional form (the max pool's stride)


class CropClassifier(nn.Module):
    """The lecture's 14x14x3 crop classifier; returns (B, num_outputs) logits."""

    num_outputs: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim != 4 or x.shape[1:3] != (WINDOW, WINDOW):
            raise ValueError(f"crop_classifier: x must be (B, {WINDOW}, {WINDOW}, C), "
                             f"got {x.shape}")
        x = nn.relu(nn.Conv(16, (5, 5), padding="VALID", name="conv")(x))
        x = MaxPool(2, 2, name="pool")(x)
        x = x.reshape(x.shape[0], -1)  # 5 * 5 * 16 = 400
        x = nn.relu(nn.Dense(400, name="fc1")(x))
        x = nn.relu(nn.Dense(400, name="fc2")(x))
        return nn.Dense(self.num_outputs, name="fc3")(x)


class ConvCropClassifier(nn.Module):
    """The classifier with FC layers as convs: (B, H, W, C) -> (B, (H-14)/2+1, (W-14)/2+1, K)."""

    num_outputs: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim != 4 or x.shape[1] < WINDOW or x.shape[2] < WINDOW:
            raise ValueError(f"conv_crop_classifier: x must be (B, H, W, C) with H, W >= "
                             f"{WINDOW}, got {x.shape}")
        x = nn.relu(nn.Conv(16, (5, 5), padding="VALID", name="conv")(x))
        x = MaxPool(2, 2, name="pool")(x)
        x = nn.relu(nn.Conv(400, (5, 5), padding="VALID", name="fc1")(x))
        x = nn.relu(nn.Conv(400, (1, 1), name="fc2")(x))
        return nn.Conv(self.num_outputs, (1, 1), name="fc3")(x)


def to_convolutional(params: dict) -> dict:
    """CropClassifier params -> ConvCropClassifier params (Dense kernels reshaped to HWIO)."""
    fc1 = params["fc1"]["kernel"]
    if fc1.shape[0] != 5 * 5 * 16:
        raise ValueError(f"params['fc1']['kernel'] must be (400, n) from a 5x5x16 map, "
                         f"got {fc1.shape}")
    # The classifier flattens its 5x5x16 map in (h, w, c) order, which is HWI for the conv.
    return {
        "conv": params["conv"],
        "fc1": {"kernel": fc1.reshape(5, 5, 16, -1), "bias": params["fc1"]["bias"]},
        "fc2": {"kernel": params["fc2"]["kernel"][None, None], "bias": params["fc2"]["bias"]},
        "fc3": {"kernel": params["fc3"]["kernel"][None, None], "bias": params["fc3"]["bias"]},
    }


def window_crops(images: jax.Array, window: int = WINDOW, stride: int = STRIDE) -> jax.Array:
    """(B, H, W, C) -> (B, H', W', window, window, C): every window at `stride`, row-major."""
    _, height, width, _ = images.shape
    rows = jnp.arange(0, height - window + 1, stride)
    cols = jnp.arange(0, width - window + 1, stride)
    offsets = jnp.arange(window)
    ys = (rows[:, None] + offsets[None, :])[:, None, :, None]  # (H', 1, win, 1)
    xs = (cols[:, None] + offsets[None, :])[None, :, None, :]  # (1, W', 1, win)
    return images[:, ys, xs]


def naive_window_logits(classifier_params: dict, images: jax.Array,
                        num_outputs: int = 4) -> jax.Array:
    """The classifier run on each window separately: (B, H, W, C) -> (B, H', W', K)."""
    crops = window_crops(images)
    b, hh, ww = crops.shape[:3]
    logits = CropClassifier(num_outputs).apply({"params": classifier_params},
                                               crops.reshape(-1, *crops.shape[3:]))
    return logits.reshape(b, hh, ww, -1)


def crop_and_resize(image: np.ndarray, corners: np.ndarray, size: int = WINDOW) -> np.ndarray:
    """Bilinear (n, size, size, C) samples of (x1, y1, x2, y2) pixel regions of an (H, W, C) image.

    Samples sit at the region's pixel centres on a size x size grid, the same points
    `resize_image` samples, so training crops match the detector's scaled windows.
    """
    height, width = image.shape[:2]
    corners = np.asarray(corners, np.float64).reshape(-1, 4)
    steps = (np.arange(size) + 0.5) / size
    xs = corners[:, 0:1] + steps[None] * (corners[:, 2:3] - corners[:, 0:1]) - 0.5
    ys = corners[:, 1:2] + steps[None] * (corners[:, 3:4] - corners[:, 1:2]) - 0.5
    xs, ys = np.clip(xs, 0, width - 1), np.clip(ys, 0, height - 1)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    fx, fy = (xs - x0)[:, None, :, None], (ys - y0)[:, :, None, None]
    y0, y1, x0, x1 = y0[:, :, None], y1[:, :, None], x0[:, None, :], x1[:, None, :]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def resize_image(images: jax.Array, height: int, width: int) -> jax.Array:
    """(B, H, W, C) -> (B, height, width, C), bilinear at pixel centres, no antialiasing."""
    return jax.image.resize(images, (images.shape[0], height, width, images.shape[3]),
                            method="linear", antialias=False)


def window_boxes(out_height: int, out_width: int, scale_y: float, scale_x: float,
                 image_height: int, image_width: int) -> np.ndarray:
    """Relative (cx, cy, h, w) of each output cell's window, row-major: (out_h * out_w, 4).

    The image was resized by 1 / scale (scale = original pixels per resized pixel); cell
    (i, j) covers the 14 resized pixels from (2i, 2j).
    """
    cy = (np.arange(out_height) * STRIDE + WINDOW / 2) * scale_y / image_height
    cx = (np.arange(out_width) * STRIDE + WINDOW / 2) * scale_x / image_width
    cy, cx = np.meshgrid(cy, cx, indexing="ij")
    return np.stack([cx.ravel(), cy.ravel(),
                     np.full(cx.size, WINDOW * scale_y / image_height),
                     np.full(cx.size, WINDOW * scale_x / image_width)], axis=1).astype(np.float32)


def sliding_window_detect(
    conv_params: dict, images: jax.Array, window_sizes: Sequence[float], *,
    class_aspects: Sequence[float] | None = None, crop_margin: float = 1.0,
    iou_threshold: float = 0.3, max_out: int = 20, score_threshold: float = 0.05,
    num_outputs: int = 4,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Multi-scale sliding windows -> per-class NMS: boxes (B, max_out, 4), scores, classes, count.

    Each window size (original pixels) rescales the images so it becomes 14 px; the
    convolutional classifier scores every window; a window's score is its largest object
    class probability (class 0 is background). The box is the window shrunk by crop_margin;
    with class_aspects (h / w per object class) it takes that class's shape, its longer
    side the window's.
    """
    images = jnp.asarray(images)
    _, height, width, _ = images.shape
    model = ConvCropClassifier(num_outputs)
    all_boxes, all_probs = [], []
    for window_px in window_sizes:
        h = max(WINDOW, int(round(height * WINDOW / window_px)))
        w = max(WINDOW, int(round(width * WINDOW / window_px)))
        logits = model.apply({"params": conv_params}, resize_image(images, h, w))
        probs = jax.nn.softmax(logits, axis=-1)
        all_probs.append(probs.reshape(probs.shape[0], -1, num_outputs))
        all_boxes.append(window_boxes(probs.shape[1], probs.shape[2], height / h, width / w,
                                      height, width))
    probs = jnp.concatenate(all_probs, axis=1)
    boxes = jnp.asarray(np.concatenate(all_boxes))
    classes = jnp.argmax(probs[..., 1:], axis=-1).astype(jnp.int32)
    scores = jnp.max(probs[..., 1:], axis=-1)
    sides = boxes[:, 2:4] / crop_margin
    if class_aspects is not None:
        aspect = jnp.asarray(class_aspects, jnp.float32)[classes]  # (B, N) h / w
        longest = jnp.maximum(sides[:, 0] * height, sides[:, 1] * width)  # pixels
        box_h = jnp.where(aspect >= 1, longest, longest * aspect) / height
        box_w = jnp.where(aspect >= 1, longest / aspect, longest) / width
        sized = jnp.stack([box_h, box_w], axis=-1)
    else:
        sized = jnp.broadcast_to(sides, (*classes.shape, 2))
    boxes = jnp.concatenate([jnp.broadcast_to(boxes[:, :2], sized.shape), sized], axis=-1)
    keep, count = nms(boxes, scores, iou_threshold, max_out, score_threshold, classes)
    safe = jnp.maximum(keep, 0)
    take = jax.vmap(lambda a, i: a[i])
    valid = keep >= 0
    return (jnp.where(valid[..., None], take(boxes, safe), 0.0),
            jnp.where(valid, take(scores, safe), 0.0),
            jnp.where(valid, take(classes, safe), -1), count)


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
    conv_params = to_convolutional(classifier_params)
    aspects = class_aspects(dataset) if use_class_aspects else None
    detect = jax.jit(lambda p, x: sliding_window_detect(
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
