"""Table 5: training error of plain vs residual CIFAR networks as they get deeper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiments.tables import harness
from experiments.tables.harness import QUIET, TINY, Budget
from experiments.tables.render import Column, Table
from jaxcnn import counting, models

# `depths`: the networks' 6n + 2 layers; `widths`: their three stages' channels.
TRAINING_BUDGETS: dict[str, Budget] = {
    "tiny": Budget(TINY, side=16, train_examples=64, test_examples=16,
                   settings={"depths": (8,), "widths": (2, 4, 8)}),
    "small": Budget(f"{QUIET},train_steps=300,batch_size=32,learning_rate=0.002,"
                    "warmup_steps=30,log_every_steps=10", side=16,
                    settings={"depths": (20, 56), "widths": (8, 16, 32)}),
    "full": Budget("dataset='cifar10',batch_size=128,train_epochs=164,optimizer='momentum',"
                   "learning_rate=0.1,weight_decay=0.0001,schedule='step',"
                   "decay_epochs=(82,123),warmup_epochs=1,log_every_steps=100,"
                   "checkpoint_every_steps=5000",
                   settings={"depths": (20, 56), "widths": (16, 32, 64)}),
}


def cifar_resnet(depth: int, plain: bool, widths: Sequence[int] = (16, 32, 64),
                 num_classes: int = 10) -> Any:
    """He et al.'s CIFAR ResNet-depth (6n+2 layers, zero-pad shortcuts) at the given widths.

    At the paper's widths this is the registry's `resnet{depth}_cifar`; other widths build
    `models.ResNet` the same way (the registry's CIFAR builders fix the widths).
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, ...); received {depth}")
    if tuple(widths) == (16, 32, 64) and f"resnet{depth}_cifar" in models.list_models():
        return models.get_model(f"resnet{depth}_cifar", num_classes=num_classes, plain=plain)
    n = (depth - 2) // 6
    return models.ResNet((n, n, n), False, tuple(widths), num_classes=num_classes,
                         cifar_stem=True, plain=plain, shortcut="zeropad",
                         arch=f"resnet{depth}_cifar")


def residual_vs_plain_table(budget: str, runs_dir: str, *, overrides: str | None = None,
                            data_dir: str | None = None, depths: Sequence[int] | None = None,
                            trainer: harness.Trainer = harness.train_variant) -> Table:
    """Training error vs depth of plain and residual CIFAR ResNets, with the curves."""
    runs = harness.start_runs(TRAINING_BUDGETS, budget, runs_dir, overrides=overrides,
                              data_dir=data_dir, trainer=trainer)
    widths = tuple(runs.spec.settings["widths"])
    depths = tuple(depths or runs.spec.settings["depths"])
    rows, series = [], {}
    for depth in depths:
        for plain in (True, False):
            label = f"{'plain' if plain else 'residual'}-{depth}"
            model = cifar_resnet(depth, plain, widths, runs.dataset.num_classes)
            result = runs.train(label, f"resnet{depth}_cifar", model, plain=plain)
            curve = tuple((step, 100.0 * (1.0 - acc)) for step, acc in result.curve)
            series[label] = curve
            params = counting.total_params(counting.summary(model, runs.dataset.image_shape))
            top1 = result.metrics.get("top1")
            rows.append({"network": label, "depth": depth, "shortcuts": not plain,
                         "params": params,
                         "train_error": curve[-1][1] if curve else None,
                         "test_error": None if top1 is None else 100.0 * (1.0 - top1)})
    columns = (Column("network", "network"), Column("depth", "layers"),
               Column("params", "params"),
               Column("train_error", "final training error %", ".1f"),
               Column("test_error", "test error %", ".1f"))
    log_every = runs.config.log_every_steps
    notes = (
        f"networks: He et al.'s CIFAR ResNets (3 stages, widths {widths}, zero-pad "
        "shortcuts), `plain` drops every shortcut; "
        + ("the registry's `resnet{d}_cifar`" if widths == (16, 32, 64) else
           "narrower than the paper's (16, 32, 64), built with `models.ResNet`"),
        f"training error: 100 − mean training-batch accuracy over the last {log_every} steps "
        "(dropout-free nets, BatchNorm in train mode); the PNG plots it every "
        f"{log_every} steps", *runs.notes())
    return Table("residual_vs_plain", "Training error of plain vs residual networks",
                 columns, tuple(rows), notes, plot="curves", series=series,
                 axes=("step", "training error (%)"))


def build(budget: str, runs_dir: str, *, overrides: str | None = None,
          data_dir: str | None = None) -> Table:
    """The table at `budget`, its runs in `runs_dir`."""
    return residual_vs_plain_table(budget, runs_dir, overrides=overrides, data_dir=data_dir)
