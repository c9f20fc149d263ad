"""Per-pixel segmentation of the synthetic scenes: background + the 3 lecture classes.

A registry trunk, a 1x1 conv to class scores, bilinear upsampling to the input size. The eval
sum is the K x K confusion matrix (rows: true class, columns: predicted); mean IoU from it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import losses, models, train
from jaxcnn.data import detection as detection_data

NAME = "segmentation"
DEFAULTS: dict[str, Any] = {"backbone": "resnet20_cifar", "backbone_kwargs": {},
                            "num_train": 2000, "num_test": 500, "scenes_seed": 0}
HELP: dict[str, str] = {
    "backbone": "registry model whose trunk computes the features",
    "backbone_kwargs": "keyword arguments of the backbone (e.g. widths)",
    "num_train": "generated scenes for training", "num_test": "generated scenes for evaluation",
    "scenes_seed": "seed of the generated scenes",
}


class SegmentationNet(nn.Module):
    """trunk -> 1x1 conv to num_classes -> bilinear resize to the input's height and width."""

    trunk: nn.Module
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        scores = nn.Conv(self.num_classes, (1, 1), name="head")(self.trunk(x, train=train))
        return jax.image.resize(scores.astype(jnp.float32), (*x.shape[:3], self.num_classes),
                                "bilinear")


def mean_iou(totals: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over classes present (true or predicted) of IoU = TP / (TP + FP + FN); and
    pixel accuracy, from the summed confusion matrix."""
    confusion = totals["confusion"]
    tp, union = np.diag(confusion), confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    return {"mean_iou": float(np.mean(tp[union > 0] / union[union > 0])),
            "pixel_accuracy": float(tp.sum() / max(confusion.sum(), 1.0))}


def build(config: ml_collections.ConfigDict) -> train.Task:
    """The segmentation net on generated scenes of side config.image_size (default 96)."""
    s = train.task_settings(config, DEFAULTS)
    side = (config.image_size or (96, 96))[0]
    dataset = detection_data.synthetic_scenes(
        s.num_train, s.num_test, seed=s.scenes_seed, image_size=side,
        targets_fn=lambda boxes, classes: {
            "pixels": detection_data.scene_labels(boxes, classes, side)})
    k = dataset.num_classes + 1
    trunk = models.get_trunk(s.backbone, conv_impl=config.conv_impl,
                             dtype=jnp.dtype(config.dtype), **s.backbone_kwargs)

    def loss_fn(scores, batch):
        loss = jnp.mean(losses.cross_entropy(scores.reshape(-1, k), batch["pixels"].ravel()))
        return loss, {"loss": loss}

    def eval_fn(scores, batch):
        weight = jnp.broadcast_to(batch["mask"][:, None, None], batch["pixels"].shape)
        truth = jax.nn.one_hot(batch["pixels"], k) * weight[..., None]
        pixel_loss = losses.cross_entropy(scores.reshape(-1, k), batch["pixels"].ravel())
        return {"confusion": jnp.einsum("bhwi,bhwj->ij", truth,
                                        jax.nn.one_hot(scores.argmax(-1), k)),
                "loss": jnp.sum(pixel_loss * weight.ravel()) / (side * side),
                "count": jnp.sum(batch["mask"])}

    return train.Task(model=SegmentationNet(trunk, k), dataset=dataset, loss_fn=loss_fn,
                      eval_fn=eval_fn, eval_metrics=mean_iou, task_defaults=DEFAULTS)
