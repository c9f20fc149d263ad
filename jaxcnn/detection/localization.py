"""Classification with localization: a small conv net with the lecture's 5+K output head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.detection.iou import paired_iou
from jaxcnn.models.layers import MaxPool, check_image


class LocalizationNet(nn.Module):
    """A 5x5 stride-2 stem, then per width 3x3 conv + BN + ReLU (+ 2x2 max pool); dense; the head.

    The head is (pc, bx, by, bh, bw, c1..cK) = 5 + K outputs (8 for the lecture's 3 classes).
    `pools` max pools follow the first convs; with coord_channels the input gets two more
    channels holding each pixel's relative x and y (CoordConv, Liu et al. 2018), which
    lets a pooled net regress absolute positions.

    Outputs are raw: pc and the classes are scores the loss compares with 0/1 targets
    (or logits for `losses.localization_loss_logistic`), the box is relative (cx, cy, h, w).
    """

    num_classes: int = 3
    widths: Sequence[int] = (16, 32, 64, 64)
    pools: int = 3
    hidden: int = 256
    coord_channels: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_image(x, "localization_net", 2 ** (self.pools + 1))
        if self.coord_channels:
            b, h, w, _ = x.shape
            ys, xs = jnp.meshgrid((jnp.arange(h) + 0.5) / h, (jnp.arange(w) + 0.5) / w,
                                  indexing="ij")
            coords = jnp.broadcast_to(jnp.stack([xs, ys], -1), (b, h, w, 2)).astype(x.dtype)
            x = jnp.concatenate([x, coords], axis=-1)
        for i, width in enumerate(self.widths, start=1):
            # The stem's stride 2 divides the cost of the whole net by ~3 at 96x96.
            kernel, stride = ((5, 5), 2) if i == 1 else ((3, 3), 1)
            x = nn.Conv(width, kernel, strides=stride, padding="SAME", use_bias=False,
                        name=f"conv{i}", dtype=self.dtype)(x)
            x = nn.BatchNorm(use_running_average=not train, name=f"bn{i}", dtype=self.dtype)(x)
            x = nn.relu(x)
            if i <= self.pools:
                x = MaxPool(2, 2, name=f"pool{i}")(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden, name="fc", dtype=self.dtype)(x))
        return nn.Dense(5 + self.num_classes, name="head", dtype=self.dtype)(x).astype(
            jnp.float32)


def localization_eval_sums(
    y_pred: jax.Array, y_true: jax.Array, mask: jax.Array, *, logits: bool = False,
) -> dict[str, jax.Array]:
    """Masked sums over an eval batch of (B, 5+K) vectors.

    pc_correct: (pc > 0.5, or logit > 0) agrees with y1; objects: images with y1 = 1;
    class_correct and iou: summed over those images only, so class accuracy on object
    images is class_correct / objects and the mean IoU is iou / objects.
    """
    mask = mask.astype(jnp.float32)
    present = (y_true[:, 0] == 1).astype(jnp.float32) * mask
    said_present = y_pred[:, 0] > (0.0 if logits else 0.5)
    pc_correct = (said_present == (y_true[:, 0] == 1)).astype(jnp.float32)
    class_correct = (jnp.argmax(y_pred[:, 5:], -1) == jnp.argmax(y_true[:, 5:], -1)).astype(
        jnp.float32)
    overlap = paired_iou(y_pred[:, 1:5], y_true[:, 1:5])
    return {
        "pc_correct": jnp.sum(pc_correct * mask),
        "objects": jnp.sum(present),
        "class_correct": jnp.sum(class_correct * present),
        "iou": jnp.sum(overlap * present),
        "count": jnp.sum(mask),
    }


def localization_summary(metrics: dict[str, float]) -> dict[str, float]:
    """Eval means (sum / count) -> pc accuracy, class accuracy and mean IoU on object images."""
    objects = max(metrics["objects"], 1e-12)
    return {"pc_accuracy": metrics["pc_correct"],
            "class_accuracy_on_objects": metrics["class_correct"] / objects,
            "mean_iou_on_objects": metrics["iou"] / objects}
