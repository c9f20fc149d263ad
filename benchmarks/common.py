"""What the benchmark scripts share: CPU-sized default inputs and the project's steps."""

from __future__ import annotations

import ast
from typing import Any

# name -> (batch, (H, W, C)): sized so that one train step takes about a second or less.
DEFAULTS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "lenet5": (256, (32, 32, 1)),
    "alexnet": (64, (112, 112, 3)),
    "googlenet": (32, (112, 112, 3)),
    "googlenet_bn": (32, (112, 112, 3)),
    "resnet18": (32, (112, 112, 3)),
    "resnet34": (32, (112, 112, 3)),
}
for _n in ("resnet50", "resnet101", "resnet152"):
    DEFAULTS[_n] = (32, (64, 64, 3))
for _d in (11, 13, 16, 19):
    DEFAULTS[f"vgg{_d}"] = DEFAULTS[f"vgg{_d}_bn"] = (16, (64, 64, 3))
for _d in (18, 34, 50, 101, 152):
    DEFAULTS[f"resnet{_d}_cifar"] = (32, (32, 32, 3))
for _d in (20, 32, 44, 56, 110):
    DEFAULTS[f"resnet{_d}_cifar"] = (128, (32, 32, 3))
FALLBACK_BATCH, FALLBACK_SIDE = 32, 64


def model_config(name: str, batch: int, image: str | None) -> tuple[int, tuple[int, int, int]]:
    """The batch and (H, W, C) to run `name` at: the given values where set, else DEFAULTS,
    else the registry's native input (jaxcnn.models.model_info) capped at FALLBACK_SIDE."""
    if name in DEFAULTS:
        default_batch, default_shape = DEFAULTS[name]
    else:
        from jaxcnn import models

        h, w, c = models.model_info(name).input_shape
        default_batch = FALLBACK_BATCH
        default_shape = (min(h, FALLBACK_SIDE), min(w, FALLBACK_SIDE), c)
    shape = tuple(int(v) for v in image.split(",")) if image else default_shape
    if len(shape) != 3:
        raise ValueError(f"input must be H,W,C; received {image!r}")
    return batch or default_batch, shape


class SyntheticData:
    """Just enough of a dataset for `classification_task` and `init_state`."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int):
        self.image_shape, self.num_classes = image_shape, num_classes
        self.mean, self.std = [0.0] * image_shape[2], [1.0] * image_shape[2]


def parse_kwargs(text: str) -> dict[str, Any]:
    """'key=value;key=value' -> dict (values as Python literals where they parse)."""
    kwargs: dict[str, Any] = {}
    for item in filter(None, text.split(";")):
        key, value = item.split("=", 1)
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def project_program(name: str, shape: tuple[int, int, int], num_classes: int,
                    model_kwargs: dict[str, Any] | None = None, batch: int = 8) -> Any:
    """The loop's own program (train.build_program) for registry model `name`: SGD momentum
    0.9 at a constant 0.01, cross-entropy, no input normalisation."""
    from jaxcnn import train

    config = train.default_config()
    config.model, config.optimizer, config.schedule = name, "momentum", "constant"
    config.learning_rate, config.normalize, config.batch_size = 0.01, False, batch
    config.model_kwargs.update(model_kwargs or {})
    task = train.classification_task(config, SyntheticData(shape, num_classes))
    return train.build_program(config, task, total_steps=1, steps_per_epoch=1)
