"""Table 5: training error of plain vs residual CIFAR networks as they get deeper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from experiments.tables import harness
from experiments.tables.harness import MEDIUM, MEDIUM_TINY, QUIET, TINY, Budget
from experiments.tables.render import Column, Table
from jaxcnn import counting, models

# Medium: He et al.'s depths 20 and 56 at half their widths (8, 16, 32) on CIFAR-10 32x32,
# 4 runs of 4,000 steps of 128 (10.2 epochs), momentum SGD 0.05 with cosine decay.
MEDIUM_STEPS = 4000
MEDIUM_TRAINING = (f"{MEDIUM},train_steps={MEDIUM_STEPS},learning_rate=0.05,"
                   "weight_decay=0.0001,warmup_steps=200")

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
    "medium": Budget(MEDIUM_TRAINING, settings={"depths": (20, 56), "widths": (8, 16, 32)}),
    "medium_tiny": Budget(MEDIUM_TINY, settings={"depths": (8, 14), "widths": (2, 4, 8)}),
}
# The window of training-error the table reports: the last 5 % of the steps.
FINAL_FRACTION = 0.05


def cifar_resnet(depth: int, plain: bool, widths: Sequence[int] = (16, 32, 64),
                 num_classes: int = 10) -> Any:
    """He et al.'s CIFAR ResNet-depth (6n+2 layers, zero-pad shortcuts) at the given widths.

    The registry's `resnet{depth}_cifar` where it has the depth (20, 32, 44, 56, 110);
    other depths build `models.ResNet` the same way.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, ...); received {depth}")
    if f"resnet{depth}_cifar" in models.list_models():
        return models.get_model(f"resnet{depth}_cifar", num_classes=num_classes, plain=plain,
                                widths=tuple(widths))
    n = (depth - 2) // 6
    return models.ResNet((n, n, n), False, tuple(widths), num_classes=num_classes,
                         cifar_stem=True, plain=plain, shortcut="zeropad",
                         arch=f"resnet{depth}_cifar")


def final_training_error(curve: Sequence[tuple[int, float]], total_steps: int,
                         fraction: float = FINAL_FRACTION) -> float | None:
    """Mean training error (%) of the logged points in the last `fraction` of the steps
    before the last logged one (that one included)."""
    if not curve:
        return None
    start = curve[-1][0] - fraction * total_steps
    late = [error for step, error in curve if step > start]
    return sum(late) / len(late)


def residual_vs_plain_verdict(errors: dict[str, float | None], depths: Sequence[int]
                              ) -> tuple[bool | None, str]:
    """(reproduced?, measured) by He et al.'s rule: the deepest plain net ends with a higher
    training error than the shallowest, the deepest residual net with a lower one."""
    if len(depths) < 2:
        return None, "needs two depths"
    low, high = min(depths), max(depths)
    keys = [f"{kind}-{d}" for kind in ("plain", "residual") for d in (low, high)]
    if any(errors.get(key) is None for key in keys):
        return None, "a run is missing"
    plain_up = errors[f"plain-{high}"] > errors[f"plain-{low}"]
    residual_down = errors[f"residual-{high}"] < errors[f"residual-{low}"]
    measured = (f"plain-{high} {errors[f'plain-{high}']:.1f} % vs plain-{low} "
                f"{errors[f'plain-{low}']:.1f} % ({'higher' if plain_up else 'not higher'}), "
                f"residual-{high} {errors[f'residual-{high}']:.1f} % vs residual-{low} "
                f"{errors[f'residual-{low}']:.1f} % ({'lower' if residual_down else 'not lower'})")
    return plain_up and residual_down, measured


def residual_vs_plain_table(budget: str, runs_dir: str, *, overrides: str | None = None,
                            data_dir: str | None = None, depths: Sequence[int] | None = None,
                            trainer: harness.Trainer = harness.train_variant) -> Table:
    """Training error vs depth of plain and residual CIFAR ResNets, with the curves."""
    runs = harness.start_runs(TRAINING_BUDGETS, budget, runs_dir, overrides=overrides,
                              data_dir=data_dir, trainer=trainer, table="residual_vs_plain")
    widths = tuple(runs.spec.settings["widths"])
    depths = tuple(depths or runs.spec.settings["depths"])
    shape, classes = runs.dataset.image_shape, runs.dataset.num_classes
    nets = {f"{'plain' if plain else 'residual'}-{depth}": cifar_resnet(depth, plain, widths,
                                                                         classes)
            for depth in depths for plain in (True, False)}
    runs.plan({label: harness.forward_macs(model, shape) for label, model in nets.items()})
    rows, series, errors = [], {}, {}
    for label, model in nets.items():
        depth, plain = int(label.split("-")[1]), label.startswith("plain")
        result = runs.train(label, f"resnet{depth}_cifar", model, plain=plain)
        curve = tuple((step, 100.0 * (1.0 - acc)) for step, acc in result.curve)
        series[label] = curve
        errors[label] = final_training_error(curve, runs.steps)
        params = counting.total_params(counting.summary(model, shape))
        top1 = result.metrics.get("top1")
        rows.append({"network": label, "depth": depth, "shortcuts": not plain,
                     "params": params, "train_error": errors[label],
                     "test_error": None if top1 is None else 100.0 * (1.0 - top1),
                     "loss_change": harness.largest_change([runs.late_changes[label]])})
    columns = (Column("network", "network"), Column("depth", "layers"),
               Column("params", "params"),
               Column("train_error", "final training error %", ".1f"),
               Column("test_error", "test error %", ".1f"),
               Column("loss_change", "loss Δ last 10 % (%)", ".1f"))
    log_every = runs.config.log_every_steps
    reproduced, measured = residual_vs_plain_verdict(errors, depths)
    final_pct = round(100 * FINAL_FRACTION)
    notes = (
        f"verdict: {harness.verdict(reproduced)} — expected (He et al. 2015, Fig. 1 and 6): "
        "the deeper plain net ends with a higher training error than the shallower one "
        "(degradation), the deeper residual net with a lower one; rule: final training error "
        f"plain-{max(depths)} > plain-{min(depths)} and residual-{max(depths)} < "
        f"residual-{min(depths)}; measured: {measured}",
        f"networks: He et al.'s CIFAR ResNets (3 stages, widths {widths}, zero-pad "
        "shortcuts; the registry's `resnet{d}_cifar` with `widths=`), `plain` drops every "
        "shortcut" + ("" if widths == (16, 32, 64) else
                      "; narrower than the paper's (16, 32, 64) to fit the budget"),
        f"final training error: 100 − mean training-batch accuracy over the logged windows in "
        f"the last {final_pct} % of the steps (each the mean of {log_every} steps; "
        "augmented batches, BatchNorm in train mode); the PNG plots it every "
        f"{log_every} steps", *runs.notes(), runs.convergence_note())
    return Table("residual_vs_plain", "Training error of plain vs residual networks",
                 columns, tuple(rows), notes, plot="curves", series=series,
                 axes=("step", "training error (%)"))


def build(budget: str, runs_dir: str, *, overrides: str | None = None,
          data_dir: str | None = None, trainer: harness.Trainer = harness.train_variant
          ) -> Table:
    """The table at `budget`, its runs in `runs_dir`."""
    return residual_vs_plain_table(budget, runs_dir, overrides=overrides, data_dir=data_dir,
                                   trainer=trainer)
