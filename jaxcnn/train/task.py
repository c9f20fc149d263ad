"""What a task hands the loop: model, data, loss, and how to evaluate (sums or gathered outputs).

Two kinds of evaluation, and a task may use both:

- `eval_fn(outputs, batch)` returns masked *sums* (plus `count`); the loop adds them over the
  eval split and divides by the count (loss, accuracy, mean IoU).
- `output_fn(outputs, batch)` returns *per-example* arrays (embeddings, decoded boxes,
  activations). The loop gathers them from every device and process, drops the padding, keeps
  dataset order, and feeds them batch by batch to an evaluator from `make_evaluator()`, whose
  `result()` gives the metrics (mAP, k-fold verification accuracy, top-k patches).

Eval sums may be arrays (a confusion matrix): the loop adds them over the batches (the eval step
has already summed over devices and processes) and the task's `eval_metrics` turns the totals
into numbers (mean IoU).

A task declares its own config keys (`task_defaults`); `config.task` may hold only those, plus
`name`, which selects the task (jaxcnn.tasks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jaxcnn.data.base import Dataset
from jaxcnn.train.config import unknown_keys_error

LossFn = Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]
EvalFn = Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]
OutputFn = Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]
ApplyFn = Callable[[nn.Module, dict[str, Any], jax.Array], Any]
SumsMetricsFn = Callable[[dict[str, np.ndarray]], dict[str, float]]
# config.task.name selects the task (jaxcnn.tasks); it is not one of a task's own keys.
SELECTOR = "name"


class Evaluator(Protocol):
    """Host-side metric over gathered per-example outputs, fed one eval batch at a time."""

    def update(self, outputs: dict[str, np.ndarray]) -> None:
        """One eval batch's outputs, from all hosts, padding removed, in dataset order."""

    def result(self) -> dict[str, float]:
        """The metrics over everything seen."""


class GatherAll:
    """An evaluator that keeps every output, orders it by `index`, and calls `metric_fn` once."""

    def __init__(self, metric_fn: Callable[[dict[str, np.ndarray]], dict[str, float]]):
        self.metric_fn = metric_fn
        self.parts: list[dict[str, np.ndarray]] = []

    def update(self, outputs: dict[str, np.ndarray]) -> None:
        self.parts.append(outputs)

    def gathered(self) -> dict[str, np.ndarray]:
        """All outputs concatenated, sorted by `index` where the dataset gives one."""
        return concatenate_outputs(self.parts)

    def result(self) -> dict[str, float]:
        return self.metric_fn(self.gathered())


def concatenate_outputs(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate gathered batches; sort by the `index` key when present."""
    if not parts:
        return {}
    merged = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    if "index" in merged:
        order = np.argsort(merged["index"], kind="stable")
        merged = {key: value[order] for key, value in merged.items()}
    return merged


@dataclasses.dataclass(frozen=True)
class Task:
    """What to train and how to judge it (see the module docstring)."""

    model: nn.Module
    dataset: Dataset
    loss_fn: LossFn
    eval_fn: EvalFn | None = None
    output_fn: OutputFn | None = None
    make_evaluator: Callable[[], Evaluator] | None = None
    # How the eval step runs the model (default: model.apply(variables, x, train=False));
    # e.g. to capture intermediate activations.
    eval_apply: ApplyFn | None = None
    # Applied to freshly initialised variables (not to restored ones): e.g. pretrained weights.
    init_variables: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    task_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Metrics from the eval sums totalled over the split (arrays included, count too), e.g.
    # mean IoU from a summed confusion matrix; merged into the evaluation's metrics.
    eval_metrics: SumsMetricsFn | None = None

    def __post_init__(self):
        if self.eval_fn is None and self.output_fn is None:
            raise ValueError("a Task needs eval_fn (masked sums) or output_fn (gathered outputs)")
        if self.output_fn is not None and self.make_evaluator is None:
            raise ValueError("a Task with output_fn needs make_evaluator (e.g. train.GatherAll)")


def task_settings(
    config: ml_collections.ConfigDict, defaults: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """`defaults` overridden by config.task; a key the task did not declare is an error."""
    given = {key: value for key, value in (config.get("task") or {}).items()
             if key != SELECTOR}
    check_task_keys(given, defaults)
    settings = ml_collections.ConfigDict(dict(defaults))
    for key, value in given.items():
        settings[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    return settings


def check_task_keys(given: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Raise naming every key of config.task that the task does not declare."""
    unknown = sorted(set(given) - set(defaults) - {SELECTOR})
    if unknown:
        raise unknown_keys_error("config.task", unknown, sorted(defaults))
