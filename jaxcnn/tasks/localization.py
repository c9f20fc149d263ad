"""Classification with localization (the lecture's y1-masked loss) on single-object scenes.

config.dataset is "synthetic_single": 0 or 1 object per generated scene; config.model is
recorded only (the net is a LocalizationNet, configured by config.model_kwargs).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import losses, train
from jaxcnn.data import detection as detection_data
from jaxcnn.detection.localization import (
    LocalizationNet,
    localization_eval_sums,
    localization_summary,
)

NAME = "localization"
DEFAULTS: dict[str, Any] = {
    "num_train": 8000, "num_test": 1000, "scenes_seed": 0, "min_px": 20.0, "max_px": 48.0,
    "logistic": False, "box_weight": 1.0,
}
HELP: dict[str, str] = {
    "num_train": "single-object scenes generated for training",
    "num_test": "single-object scenes generated for evaluation (another stream)",
    "scenes_seed": "seed of the generated scenes",
    "min_px": "smallest object side, pixels",
    "max_px": "largest object side, pixels",
    "logistic": "logistic pc + softmax classes variant of the loss",
    "box_weight": "weight of the four box terms (1 = the lecture's loss; YOLO's lambda_coord 5)",
}


def summary_from_sums(totals: dict[str, np.ndarray]) -> dict[str, float]:
    """pc accuracy, class accuracy and mean IoU on object images from the summed eval sums."""
    count = max(float(totals["count"]), 1.0)
    return localization_summary({key: float(value) / count for key, value in totals.items()})


def make_task(dataset: Any, model: Any = None, *, logistic: bool = False,
              box_weight: float = 1.0) -> train.Task:
    """Classification with localization on a dataset whose batches carry "target" (B, 5+K)."""
    model = model or LocalizationNet(num_classes=dataset.num_classes)
    base = losses.localization_loss_logistic if logistic else losses.localization_loss

    def loss_fn(outputs, batch):
        value = base(outputs, batch["target"], box_weight)
        return value, {"loss": value}

    def eval_fn(outputs, batch):
        sums = localization_eval_sums(outputs, batch["target"], batch["mask"], logits=logistic)
        per_example = jax.vmap(lambda o, t: base(o[None], t[None], box_weight))(
            outputs, batch["target"])
        return {**sums, "loss": jnp.sum(per_example * batch["mask"])}

    return train.Task(model=model, dataset=dataset, loss_fn=loss_fn, eval_fn=eval_fn,
                      eval_metrics=summary_from_sums, task_defaults=DEFAULTS)


def build(config: ml_collections.ConfigDict) -> train.Task:
    """LocalizationNet (config.model_kwargs) on generated single-object scenes."""
    settings = train.task_settings(config, DEFAULTS)
    if config.dataset != "synthetic_single":
        raise ValueError(f"the localization task trains on config.dataset='synthetic_single'; "
                         f"received {config.dataset!r}")
    dataset = detection_data.synthetic_scenes(
        settings.num_train, settings.num_test, seed=settings.scenes_seed, single_object=True,
        min_px=settings.min_px, max_px=settings.max_px, augment=config.augment or "none",
        targets_fn=detection_data.localization_targets(len(detection_data.LECTURE_CLASSES)))
    model = LocalizationNet(num_classes=dataset.num_classes, dtype=jnp.dtype(config.dtype),
                            **config.model_kwargs)
    return make_task(dataset, model, logistic=settings.logistic,
                     box_weight=settings.box_weight)
