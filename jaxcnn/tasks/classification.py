"""Image classification: config.model (a registry model) on config.dataset, cross-entropy."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxcnn import data, losses, models, train

NAME = "classification"
DEFAULTS: dict[str, Any] = {}
HELP: dict[str, str] = {}


def dataset_from_config(config: ml_collections.ConfigDict) -> data.Dataset:
    """The dataset config.dataset names (TFDS, embedded_mnist, npz:PATH, folder:PATH)."""
    return data.get_dataset(
        config.dataset, data_dir=config.data_dir, image_size=config.image_size,
        augment=config.augment, download=config.download, num_classes=config.get("num_classes"),
        validation_fraction=config.get("validation_fraction", 0.0))


def make_task(config: ml_collections.ConfigDict, dataset: Any,
              model: nn.Module | None = None) -> train.Task:
    """Cross-entropy (config.label_smoothing) of `model` (default: registry config.model with
    config.model_kwargs and config.conv_impl) on `dataset`; eval: loss, top-1, top-5."""
    model = model or models.get_model(config.model, num_classes=dataset.num_classes,
                                      dtype=jnp.dtype(config.dtype),
                                      **{"conv_impl": config.conv_impl, **config.model_kwargs})
    smoothing = config.label_smoothing
    return train.Task(
        model=model,
        dataset=dataset,
        loss_fn=lambda out, batch: losses.classification_loss(out, batch["label"], smoothing),
        eval_fn=lambda out, batch: losses.classification_eval_sums(
            out, batch["label"], batch["mask"]),
    )


def build(config: ml_collections.ConfigDict) -> train.Task:
    """config.model on config.dataset."""
    return make_task(config, dataset_from_config(config))
