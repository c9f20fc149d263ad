"""How the trained tables train and the architectures table times: budgets, data, runs.

Every variant trains through `jaxcnn.train.train_and_evaluate` (`train_variant`); timing uses
the training loop's own steps from `jaxcnn.train.build_program` (`measure_throughput`, through
`_loop_program`, the one place this module reaches below `train_and_evaluate`). A table trains
its variants through one `Runs`: the same config and data for every variant, and the notes
saying what ran where.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.tables.render import machine_description
from jaxcnn import data, train

BUDGETS = ("tiny", "small", "full")


def check_budget(budget: str) -> None:
    """ValueError naming the valid budgets unless `budget` is one of them."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")


def check_variants(variants: Sequence[str] | None, valid: Sequence[str], what: str) -> list[str]:
    """`variants` (all of `valid` when None); ValueError naming the valid ones if unknown/empty."""
    if variants is None:
        return list(valid)
    bad = [v for v in variants if v not in valid]
    if bad or not variants:
        raise ValueError(f"{what}: unknown or empty variants {list(variants)}; valid: "
                         f"{', '.join(valid)}")
    return list(variants)


# ---------------------------------------------------------------------------------------------
# Budgets: the training config and the data


@dataclasses.dataclass(frozen=True)
class Budget:
    """How one table trains at one budget: config overrides, the data and table settings.

    `config` is 'key=value,...' applied to `train.default_config()`; `side`, `train_examples`
    and `test_examples` resize and subset the embedded digits (ignored for other datasets);
    `settings` are the table's own knobs (widths, depths, input sizes).
    """

    config: str
    side: int | None = None
    train_examples: int | None = None
    test_examples: int | None = None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# Config overrides the tables' small budgets share: no TensorBoard, no intermediate checkpoints.
QUIET = "tensorboard=False,checkpoint_every_steps=1000000,keep_checkpoints=1"
TINY = f"{QUIET},train_steps=2,batch_size=8,eval_batch_size=16,log_every_steps=1"


def training_config(spec: Budget, overrides: str | None = None,
                    data_dir: str | None = None) -> ml_collections.ConfigDict:
    """default_config() with the budget's overrides, then the caller's `overrides`."""
    config = train.override(train.default_config(), spec.config)
    config = train.override(config, overrides)
    if data_dir:
        config.data_dir = data_dir
    return config


def resize_images(images: np.ndarray, side: int) -> np.ndarray:
    """NHWC float images resized to side x side (linear, antialiased when shrinking)."""
    n, _, _, c = images.shape
    return np.asarray(jax.image.resize(jnp.asarray(images), (n, side, side, c), "linear"))


@functools.cache
def _embedded_digits() -> Any:
    """The embedded MNIST digits at 32x32, loaded once per process (it takes seconds)."""
    return data.embedded_mnist((32, 32))


def budget_dataset(config: ml_collections.ConfigDict, spec: Budget) -> Any:
    """The dataset named by config; the embedded digits resized and subset as `spec` says."""
    if config.dataset != "embedded_mnist":
        return data.get_dataset(config.dataset, data_dir=config.data_dir,
                                image_size=config.image_size, augment=config.augment,
                                download=config.download)
    dataset = dataclasses.replace(_embedded_digits(), augment=config.augment or "none")
    # The digits are stored sorted by class: subset a seeded shuffle, not a prefix.
    train_rows = np.random.default_rng(0).permutation(dataset.num_train)[:spec.train_examples]
    test_rows = np.random.default_rng(1).permutation(dataset.num_eval)[:spec.test_examples]
    dataset = dataclasses.replace(dataset, x_train=dataset.x_train[np.sort(train_rows)],
                                  y_train=dataset.y_train[np.sort(train_rows)],
                                  x_test=dataset.x_test[np.sort(test_rows)],
                                  y_test=dataset.y_test[np.sort(test_rows)])
    if spec.side and spec.side != 32:
        dataset = dataclasses.replace(dataset, x_train=resize_images(dataset.x_train, spec.side),
                                      x_test=resize_images(dataset.x_test, spec.side))
    return dataset


def _steps(config: ml_collections.ConfigDict, dataset: Any) -> int:
    return train.to_steps(config, "train", dataset.steps_per_epoch(config.batch_size))


def describe_run(config: ml_collections.ConfigDict, dataset: Any) -> tuple[str, str]:
    """('dataset: ...', 'training: ...') notes: the data, the steps, the optimiser."""
    h, w, c = dataset.image_shape
    if config.dataset == "embedded_mnist":
        what = (f"dataset: embedded MNIST ({dataset.num_train:,} train / {dataset.num_eval:,} "
                f"test real digits, 28x28 padded to 32x32, here {h}x{w}x{c})")
    else:
        what = (f"dataset: {config.dataset} ({dataset.num_train:,} train / {dataset.num_eval:,} "
                f"eval images at {h}x{w}x{c})")
    per_epoch = dataset.steps_per_epoch(config.batch_size)
    steps = train.to_steps(config, "train", per_epoch)
    how = (f"training: {steps:,} steps of batch {config.batch_size} ({steps / per_epoch:.1f} "
           f"epochs), {config.optimizer} lr {config.learning_rate:g} {config.schedule}, "
           f"seed {config.seed}, identical for every variant; accuracy on all "
           f"{dataset.num_eval:,} test images")
    return what, how


# ---------------------------------------------------------------------------------------------
# Training one variant


def train_curve(workdir: str, key: str = "accuracy") -> list[tuple[int, float]]:
    """(step, value) of `key` from workdir/metrics.jsonl's train lines (the last per step)."""
    points: dict[int, float] = {}
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("split") == "train" and key in record:
                points[int(record["step"])] = float(record[key])
    return sorted(points.items())


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One trained variant: final eval metrics and the training-accuracy curve."""

    metrics: dict[str, float]
    curve: list[tuple[int, float]]
    steps_run: int | None = None  # steps this call trained (fewer when it resumed a run)


# (config, dataset, workdir, flax module or None for config.model) -> RunResult
Trainer = Callable[[ml_collections.ConfigDict, Any, str, Any], RunResult]


def train_variant(config: ml_collections.ConfigDict, dataset: Any, workdir: str,
                  model: Any = None) -> RunResult:
    """Train config.model (or `model`, a flax module) on `dataset` with train_and_evaluate."""
    task = train.classification_task(config, dataset, model=model)
    result = train.train_and_evaluate(config, workdir, task)
    return RunResult(dict(result.metrics), train_curve(workdir), result.steps_run)


# ---------------------------------------------------------------------------------------------
# A trained table's variants


@dataclasses.dataclass
class Runs:
    """A trained table's training at one budget: one config and dataset for every variant.

    `train` trains one variant (the config with another model) in runs_dir/NAME; `notes` are
    the data, the training and the machine/wall-time notes, once every variant has trained.
    """

    spec: Budget
    config: ml_collections.ConfigDict
    dataset: Any
    runs_dir: str
    trainer: Trainer
    started: float  # time.perf_counter() once the data was ready
    results: list[RunResult] = dataclasses.field(default_factory=list)

    def train(self, name: str, model: str, module: Any = None, **model_kwargs: Any) -> RunResult:
        """Train registry `model` built with `model_kwargs` (or the flax `module`) as `name`."""
        run = self.config.copy_and_resolve_references()
        run.model = model
        run.model_kwargs = ml_collections.ConfigDict(model_kwargs)
        result = self.trainer(run, self.dataset, os.path.join(self.runs_dir, name), module)
        self.results.append(result)
        return result

    def notes(self) -> tuple[str, str, str]:
        """('dataset: ...', 'training: ...', 'machine: ...; wall time ...') of these runs.

        The last says when runs were resumed rather than trained.
        """
        what, how = describe_run(self.config, self.dataset)
        note = (f"machine: {machine_description()}; wall time "
                f"{time.perf_counter() - self.started:.0f} s")
        steps = _steps(self.config, self.dataset)
        ran = [r.steps_run for r in self.results if r.steps_run is not None]
        if len(ran) == len(self.results) and sum(ran) < steps * len(self.results):
            note += (f" for {sum(ran):,} of the {steps * len(self.results):,} training steps "
                     "(the rest were resumed from finished or interrupted runs in runs_dir)")
        return what, how, note


def start_runs(budgets: Mapping[str, Budget], budget: str, runs_dir: str, *,
               overrides: str | None = None, data_dir: str | None = None,
               trainer: Trainer = train_variant) -> Runs:
    """The Runs of a table at `budget` (one of `budgets`): its config and data, no run yet."""
    check_budget(budget)
    spec = budgets[budget]
    config = training_config(spec, overrides, data_dir)
    dataset = budget_dataset(config, spec)
    return Runs(spec, config, dataset, runs_dir, trainer, time.perf_counter())


def percent(fraction: float | None) -> float | None:
    """100 * fraction, None staying None."""
    return None if fraction is None else 100.0 * fraction


# ---------------------------------------------------------------------------------------------
# Throughput with the loop's own steps


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Measured images/s; a step that cannot run has None and its error message."""

    train_ips: float | None
    infer_ips: float | None
    error: str | None = None


def _loop_program(config: ml_collections.ConfigDict, task: train.Task,
                  total_steps: int) -> tuple[Any, Callable, Callable]:
    """(initial state, jitted train step (donates the state), jitted eval step) of the loop.

    The loop's own program (`train.build_program`), its pure steps jit-compiled for the
    default device: the timing feeds whole batches that need not split over a mesh.
    """
    program = train.build_program(config, task, total_steps=total_steps, steps_per_epoch=1)
    state = jax.jit(program.init_fn)(program.rng)
    return (state, jax.jit(program.train_fn, donate_argnums=0), jax.jit(program.eval_fn))


def measure_throughput(model: str, input_shape: Sequence[int], num_classes: int, batch: int,
                       steps: int = 1) -> Throughput:
    """Inference, then training, images/s of registry `model` on random (H, W, C) inputs.

    Times `steps` calls of the training loop's own jit-compiled eval step and train step
    (momentum SGD) after one compiling call each; data already on the device, so no input
    pipeline. A failing train step (e.g. an op without a gradient) keeps the inference rate.
    """
    rng = np.random.default_rng(0)
    x = rng.random((batch, *input_shape), dtype=np.float32)
    y = (np.arange(batch) % num_classes).astype(np.int32)
    dataset = data.ArrayDataset("random", x, y, x, y, num_classes)
    config = train.default_config()
    config.model, config.optimizer, config.normalize = model, "momentum", False
    task = train.classification_task(config, dataset)
    state, jit_train, jit_eval = _loop_program(config, task, steps + 1)
    batch_arrays = {"image": jnp.asarray(x), "label": jnp.asarray(y)}
    eval_arrays = {**batch_arrays, "mask": jnp.ones((batch,), jnp.float32)}

    def rate(step: Callable[[], Any]) -> float:
        jax.block_until_ready(step())  # compile
        start = time.perf_counter()
        for _ in range(steps):
            out = step()
        jax.block_until_ready(out)
        return steps * batch / (time.perf_counter() - start)

    holder = {"state": state}

    def train_once():
        holder["state"], metrics = jit_train(holder["state"], batch_arrays)
        return metrics

    infer_rate = rate(lambda: jit_eval(holder["state"], eval_arrays))
    try:
        train_rate = rate(train_once)
    except Exception as error:  # noqa: BLE001  (report it in the table, keep the other rate)
        return Throughput(None, infer_rate, f"{type(error).__name__}: {str(error)[:160]}")
    return Throughput(train_rate, infer_rate)
