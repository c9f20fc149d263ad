"""The lecture's tables, regenerated from the project's own models, counting and training loop.

Counting tables are pure functions of the model definitions (shapes via `jax.eval_shape`,
nothing allocated). Trained tables train every variant with `train.train_and_evaluate` on the
same data and budget. A `Table` renders to markdown (`to_markdown`), CSV (`to_csv`) and, where
it has a plot, a PNG; `write_table` writes all three into a directory.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import counting, data, losses, models, ops, train
from jaxcnn.models.smallnets import FilterStack

TABLES = ("lenet5", "inception_cost", "filter_sizes", "alexnet_ablation", "residual_vs_plain",
          "architectures")
TRAINED_TABLES = ("filter_sizes", "alexnet_ablation", "residual_vs_plain")
BUDGETS = ("tiny", "small", "full")

# ---------------------------------------------------------------------------------------------
# Table, rendering and writing


@dataclasses.dataclass(frozen=True)
class Column:
    """A column: `key` in the row dicts and the CSV header, `label` in markdown, cell format."""

    key: str
    label: str
    fmt: str = ""  # format spec for markdown cells ("" -> ints with commas, floats .2f)


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows (dicts keyed by column key) with a title, notes (what ran where) and plot data.

    `plot` is None, "curves" (`series`: label -> ((x, y), ...) lines) or "scatter" (`series`:
    label -> ((x, y),) one labelled point each, log-log axes); `axes` are the axis labels.
    """

    name: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = ()
    plot: str | None = None
    series: Mapping[str, tuple[tuple[float, float], ...]] = dataclasses.field(
        default_factory=dict)
    axes: tuple[str, str] = ("", "")


def _cell(value: Any, fmt: str = "") -> str:
    """A markdown cell: None -> an em dash, ints with thousands separators, floats .2f."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if fmt:
        return format(value, fmt)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):,.2f}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def to_markdown(table: Table) -> str:
    """The table as GitHub markdown: a heading, the grid, then the notes as a bullet list."""
    labels = [column.label for column in table.columns]
    align = []
    for column in table.columns:
        numeric = any(_is_number(row.get(column.key)) for row in table.rows)
        align.append("---:" if numeric else "---")
    lines = [f"### {table.title}", "", "| " + " | ".join(labels) + " |",
             "|" + "|".join(align) + "|"]
    for row in table.rows:
        cells = [_cell(row.get(column.key), column.fmt) for column in table.columns]
        lines.append("| " + " | ".join(cells) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6)
    return value


def to_csv(table: Table) -> str:
    """The rows as CSV with the column keys as header (tuples as 28x28x6, None as empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.key for column in table.columns])
    for row in table.rows:
        writer.writerow([_csv_value(row.get(column.key)) for column in table.columns])
    return buffer.getvalue()


def plot_table(table: Table, path: str) -> None:
    """Write the table's plot (curves or labelled log-log scatter) as a PNG at `path`."""
    if table.plot not in ("curves", "scatter"):
        raise ValueError(f"table {table.name!r} has plot={table.plot!r}; expected curves/scatter")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    # Curves named like "plain-20" / "residual-20" share a colour per suffix; "plain" dashes.
    groups = list(dict.fromkeys(label.rsplit("-", 1)[-1] for label in table.series))
    for label, points in table.series.items():
        xs, ys = zip(*points) if points else ((), ())
        if table.plot == "curves":
            color = f"C{groups.index(label.rsplit('-', 1)[-1]) % 10}"
            ax.plot(xs, ys, label=label, color=color,
                    linestyle="--" if "plain" in label else "-")
        else:
            ax.scatter(xs, ys, s=18)
    if table.plot == "scatter":
        for (x, y), names in _merge_close_points(table.series).items():
            ax.annotate(", ".join(names), (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.legend()
    ax.set_xlabel(table.axes[0])
    ax.set_ylabel(table.axes[1])
    ax.set_title(table.title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _merge_close_points(series: Mapping[str, Sequence[tuple[float, float]]],
                        tolerance: float = 0.03) -> dict[tuple[float, float], list[str]]:
    """Labels of points within `tolerance` (relative, both axes) of each other, merged."""
    merged: dict[tuple[float, float], list[str]] = {}
    for label, points in series.items():
        for x, y in points:
            for (mx, my), names in merged.items():
                if abs(x - mx) <= tolerance * abs(mx) and abs(y - my) <= tolerance * abs(my):
                    names.append(label)
                    break
            else:
                merged[(x, y)] = [label]
    return merged


def write_table(table: Table, directory: str) -> list[str]:
    """Write NAME.md, NAME.csv and (if the table has a plot) NAME.png; return their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for suffix, text in (("md", to_markdown(table)), ("csv", to_csv(table))):
        path = os.path.join(directory, f"{table.name}.{suffix}")
        with open(path, "w") as f:
            f.write(text)
        paths.append(path)
    if table.plot:
        path = os.path.join(directory, f"{table.name}.png")
        plot_table(table, path)
        paths.append(path)
    return paths


def machine_description() -> str:
    """Processor, visible CPU cores and JAX devices of this process, in one line."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 0
    devices = jax.devices()
    kinds = sorted({d.device_kind if d.device_kind == d.platform else
                    f"{d.platform} {d.device_kind}" for d in devices})
    return (f"{platform.processor() or platform.machine()}, {cores} CPU cores, "
            f"{len(devices)} JAX device(s): {', '.join(kinds)}, jax {jax.__version__}")


def _counting_notes() -> tuple[str, ...]:
    return ("computed from the model definitions with `jax.eval_shape` (no data, no training)",
            f"machine: {machine_description()}")


# ---------------------------------------------------------------------------------------------
# 1. LeNet-5

LENET5_LABELS = {"input": "Input", "conv1": "CONV1", "pool1": "POOL1", "conv2": "CONV2",
                 "pool2": "POOL2", "fc3": "FC3", "fc4": "FC4", "fc5": "Softmax"}


def lenet5_rows(input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> list[dict]:
    """The lecture's LeNet-5 rows: layer label, module, activation shape/size, #params, MACs."""
    model = models.get_model("lenet5", num_classes=num_classes)
    return [
        {"layer": LENET5_LABELS.get(row.name, row.name), "module": row.name, "shape": row.shape,
         "size": row.size, "params": row.params, "macs": row.macs}
        for row in counting.summary(model, input_shape)
    ]


def lenet5_table() -> Table:
    """The lecture's LeNet-5 table on a 32x32x3 input (10 classes)."""
    rows = lenet5_rows()
    columns = (Column("layer", "layer (lecture)"), Column("module", "module"),
               Column("shape", "activation shape"), Column("size", "activation size"),
               Column("params", "# parameters"), Column("macs", "multiplications"))
    total = sum(row["params"] for row in rows)
    return Table("lenet5", "LeNet-5 on a 32x32x3 input (registry model `lenet5`, 10 classes)",
                 columns, tuple(rows), (f"total parameters: {total:,}", *_counting_notes()))


# ---------------------------------------------------------------------------------------------
# 2. Inception 1x1 bottlenecks

# The lecture's example: 28x28x192 -> 28x28x32 by a 5x5 conv, or a 1x1 to 16 channels first.
LECTURE_BOTTLENECK = {"side": 28, "in_channels": 192, "reduce": 16, "out_channels": 32, "f": 5}


def bottleneck_row(where: str, branch: str, side: int | tuple[int, int], f: int,
                   in_channels: int, reduce: int, out_channels: int,
                   reduce_macs: int | None = None, conv_macs: int | None = None) -> dict:
    """Multiplications of a direct f x f conv vs a 1x1 reduce + f x f conv (same output)."""
    hw = (side, side) if isinstance(side, int) else tuple(side)
    reduce_macs = counting.conv_macs(hw, 1, in_channels, reduce) if reduce_macs is None \
        else reduce_macs
    conv_macs = counting.conv_macs(hw, f, reduce, out_channels) if conv_macs is None \
        else conv_macs
    direct = counting.conv_macs(hw, f, in_channels, out_channels)
    return {"where": where, "branch": branch, "output": f"{hw[0]}x{hw[1]}x{out_channels}",
            "in_channels": in_channels, "reduce": reduce, "out_channels": out_channels,
            "direct_macs": direct, "reduce_macs": reduce_macs, "conv_macs": conv_macs,
            "bottleneck_macs": reduce_macs + conv_macs,
            "saving": direct / (reduce_macs + conv_macs)}


def inception_cost_rows(model_name: str = "googlenet", side: int = 224) -> list[dict]:
    """The lecture's example, then every inception block's 3x3 and 5x5 branch of `model_name`.

    Channel counts come from the model's parameter shapes and output sizes and the used MACs
    from `counting.summary`; the direct conv's MACs from `counting.conv_macs`.
    """
    ex = LECTURE_BOTTLENECK
    rows = [bottleneck_row("lecture example", f"{ex['f']}x{ex['f']}", ex["side"], ex["f"],
                           ex["in_channels"], ex["reduce"], ex["out_channels"])]
    model = models.get_model(model_name, num_classes=1000)
    x = jnp.zeros((1, side, side, 3), jnp.float32)
    params = jax.eval_shape(lambda key: model.init(key, x, train=False),
                            jax.random.key(0))["params"]
    summary = {row.name: row for row in counting.summary(model, (side, side, 3))}
    for name in summary:
        parts = name.split("/")
        if len(parts) != 3 or parts[1] not in ("branch2_1", "branch3_1") or parts[2] != "conv":
            continue
        block, conv = parts[0], parts[1]
        reduce_name = conv[:-1] + "0"
        reduce_kernel = params[block][reduce_name]["conv"]["kernel"].shape  # (1, 1, C_in, red)
        kernel = params[block][conv]["conv"]["kernel"].shape  # (f, f, red, C_out)
        used = summary[name]
        rows.append(bottleneck_row(
            block, f"{kernel[0]}x{kernel[1]}", used.shape[:2], kernel[0], reduce_kernel[2],
            reduce_kernel[3], kernel[3], summary[f"{block}/{reduce_name}/conv"].macs, used.macs))
    return rows


def inception_cost_table(model_name: str = "googlenet") -> Table:
    """Direct conv vs 1x1 bottleneck multiplications: the lecture's example and GoogLeNet's."""
    rows = inception_cost_rows(model_name)
    columns = (Column("where", "where"), Column("branch", "branch"),
               Column("output", "output"), Column("in_channels", "C_in"),
               Column("reduce", "1x1 reduce to"), Column("direct_macs", "direct conv MACs"),
               Column("reduce_macs", "1x1 reduce MACs"), Column("conv_macs", "conv MACs"),
               Column("bottleneck_macs", "reduce + conv MACs"),
               Column("saving", "saving (x)", ".1f"))
    blocks = rows[1:]
    direct = sum(row["direct_macs"] for row in blocks)
    used = sum(row["bottleneck_macs"] for row in blocks)
    notes = (
        "direct conv: the branch's f x f conv applied to the block's C_in input channels; "
        "reduce + conv: what the model computes (MACs per image, biases not counted)",
        f"all {len(blocks)} branches of `{model_name}` at 224x224: direct {direct:,} vs used "
        f"{used:,} multiplications ({direct / used:.1f}x)",
        *_counting_notes())
    return Table("inception_cost", f"1x1 bottlenecks: the lecture's example and every "
                 f"inception block of `{model_name}`", columns, tuple(rows), notes)


# ---------------------------------------------------------------------------------------------
# 3. Filter sizes

FILTER_VARIANTS: dict[str, tuple[int, ...]] = {
    "5x5": (5,), "3x3+3x3": (3, 3), "7x7": (7,), "3x3+3x3+3x3": (3, 3, 3)}


def _check_variants(variants: Sequence[str] | None, valid: Sequence[str], what: str) -> list[str]:
    if variants is None:
        return list(valid)
    bad = [v for v in variants if v not in valid]
    if bad or not variants:
        raise ValueError(f"{what}: unknown or empty variants {list(variants)}; valid: "
                         f"{', '.join(valid)}")
    return list(variants)


def filter_size_rows(channels: int = 64, side: int = 32,
                     variants: Sequence[str] | None = None) -> list[dict]:
    """Receptive field, weights per C^2, #params and MACs of each block, C -> C on side x side."""
    rows = []
    for name in _check_variants(variants, list(FILTER_VARIANTS), "filter_sizes"):
        kernels = FILTER_VARIANTS[name]
        summary = counting.summary(FilterStack(kernels, channels), (side, side, channels))
        rows.append({
            "block": name,
            "receptive_field": ops.receptive_field([(k, 1) for k in kernels]),
            "weights_per_c2": sum(k * k for k in kernels),
            "params": counting.total_params(summary),
            "macs": counting.total_macs(summary),
        })
    return rows


# ---------------------------------------------------------------------------------------------
# 4. AlexNet ablation

ALEXNET_VARIANTS: dict[str, tuple[int, ...]] = {
    "full": (), "7": (7,), "6,7": (6, 7), "3,4": (3, 4), "3,4,6,7": (3, 4, 6, 7)}
# The lecture's ImageNet top-1 drops (points), quoted from Fergus's 2013 tutorial slides, with
# the slides' approximate parameter savings.
LECTURE_DROP_PTS = {"7": 1.1, "6,7": 5.7, "3,4": 3.0, "3,4,6,7": 33.5}
LECTURE_PARAMS_REMOVED = {"7": "16 M", "6,7": "50 M", "3,4": "1 M"}
# Zeiler & Fergus 2013, Table 3: ImageNet 2012 validation top-1 error (%) of their replication
# of Krizhevsky et al. and its layer removals.
ZF_VAL_TOP1_ERR = {"full": 40.5, "7": 40.0, "6,7": 44.8, "3,4": 45.4, "3,4,6,7": 71.3}


def alexnet_param_rows(num_classes: int = 1000, side: int = 224,
                       variants: Sequence[str] | None = None) -> list[dict]:
    """#params of torchvision AlexNet and each Zeiler & Fergus removal, and how many it removes."""
    names = _check_variants(variants, list(ALEXNET_VARIANTS), "alexnet_ablation")

    def params(drop: tuple[int, ...]) -> int:
        model = models.get_model("alexnet", num_classes=num_classes, drop_layers=drop)
        return counting.total_params(counting.summary(model, (side, side, 3)))

    full = params(())
    rows = []
    for name in names:
        count = params(ALEXNET_VARIANTS[name])
        rows.append({"variant": "full AlexNet" if name == "full" else f"without {name}",
                     "removed_layers": name if name != "full" else "",
                     "params": count, "params_removed": full - count,
                     "lecture_params_removed": LECTURE_PARAMS_REMOVED.get(name),
                     "lecture_drop": LECTURE_DROP_PTS.get(name),
                     "zf_top1_err": ZF_VAL_TOP1_ERR[name]})
    return rows


# ---------------------------------------------------------------------------------------------
# Training: budgets, data, one variant


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


_QUIET = "tensorboard=False,checkpoint_every_steps=1000000,keep_checkpoints=1"
_TINY = f"{_QUIET},train_steps=2,batch_size=8,eval_batch_size=16,log_every_steps=1"

TRAINING_BUDGETS: dict[str, dict[str, Budget]] = {
    "filter_sizes": {
        "tiny": Budget(_TINY, side=16, train_examples=64, test_examples=16,
                       settings={"width": 4}),
        "small": Budget(f"{_QUIET},train_steps=400,batch_size=64,learning_rate=0.003,"
                        "warmup_steps=30,log_every_steps=50", settings={"width": 32}),
        "full": Budget("dataset='cifar10',train_epochs=30,batch_size=128,learning_rate=0.001,"
                       "warmup_epochs=1,checkpoint_every_steps=2000", settings={"width": 64}),
    },
    "alexnet_ablation": {
        "tiny": Budget(f"{_QUIET},train_steps=1,batch_size=4,eval_batch_size=8,log_every_steps=1",
                       side=64, train_examples=16, test_examples=8),
        "small": Budget(f"{_QUIET},train_steps=100,batch_size=16,learning_rate=0.0003,"
                        "warmup_steps=10,log_every_steps=20,eval_batch_size=250", side=64),
        "full": Budget("dataset='imagenet2012',image_size=(224,224),batch_size=256,"
                       "train_epochs=90,optimizer='momentum',learning_rate=0.01,"
                       "weight_decay=0.0005,schedule='step',decay_epochs=(30,60),"
                       "checkpoint_every_steps=5000"),
    },
    "residual_vs_plain": {
        "tiny": Budget(_TINY, side=16, train_examples=64, test_examples=16,
                       settings={"depths": (8,), "widths": (2, 4, 8)}),
        "small": Budget(f"{_QUIET},train_steps=300,batch_size=32,learning_rate=0.002,"
                        "warmup_steps=30,log_every_steps=10", side=16,
                        settings={"depths": (20, 56), "widths": (8, 16, 32)}),
        "full": Budget("dataset='cifar10',batch_size=128,train_epochs=164,optimizer='momentum',"
                       "learning_rate=0.1,weight_decay=0.0001,schedule='step',"
                       "decay_epochs=(82,123),warmup_epochs=1,log_every_steps=100,"
                       "checkpoint_every_steps=5000",
                       settings={"depths": (20, 56), "widths": (16, 32, 64)}),
    },
}


def get_budget(table: str, budget: str) -> Budget:
    """The Budget of a trained table; ValueError naming the valid tables / budgets."""
    if table not in TRAINING_BUDGETS:
        raise ValueError(f"table {table!r} does not train; trained tables: "
                         f"{', '.join(TRAINING_BUDGETS)}")
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    return TRAINING_BUDGETS[table][budget]


def training_config(table: str, budget: str, overrides: str | None = None,
                    data_dir: str | None = None) -> ml_collections.ConfigDict:
    """default_config() with the table's budget overrides, then the caller's `overrides`."""
    config = train.override(train.default_config(), get_budget(table, budget).config)
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


def budget_dataset(config: ml_collections.ConfigDict, budget: Budget) -> Any:
    """The dataset named by config; the embedded digits resized and subset as `budget` says."""
    if config.dataset != "embedded_mnist":
        return data.get_dataset(config.dataset, data_dir=config.data_dir,
                                image_size=config.image_size, augment=config.augment,
                                download=config.download)
    dataset = dataclasses.replace(_embedded_digits(), augment=config.augment or "none")
    # The digits are stored sorted by class: subset a seeded shuffle, not a prefix.
    train_rows = np.random.default_rng(0).permutation(dataset.num_train)[:budget.train_examples]
    test_rows = np.random.default_rng(1).permutation(dataset.num_eval)[:budget.test_examples]
    dataset = dataclasses.replace(dataset, x_train=dataset.x_train[np.sort(train_rows)],
                                  y_train=dataset.y_train[np.sort(train_rows)],
                                  x_test=dataset.x_test[np.sort(test_rows)],
                                  y_test=dataset.y_test[np.sort(test_rows)])
    if budget.side and budget.side != 32:
        dataset = dataclasses.replace(dataset, x_train=resize_images(dataset.x_train, budget.side),
                                      x_test=resize_images(dataset.x_test, budget.side))
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


Trainer = Callable[[ml_collections.ConfigDict, Any, str, Any], RunResult]


def train_variant(config: ml_collections.ConfigDict, dataset: Any, workdir: str,
                  model: Any = None) -> RunResult:
    """Train config.model (or `model`, a flax module) on `dataset` with train_and_evaluate."""
    if model is None:
        task = train.classification_task(config, dataset)
    else:  # the same cross-entropy task, for a module the registry cannot build
        smoothing = config.label_smoothing
        task = train.Task(
            model, dataset,
            lambda out, batch: losses.classification_loss(out, batch["label"], smoothing),
            lambda out, batch: losses.classification_eval_sums(out, batch["label"],
                                                               batch["mask"]))
    result = train.train_and_evaluate(config, workdir, task)
    return RunResult(dict(result.metrics), train_curve(workdir), result.steps_run)


def _setup(table: str, budget: str, overrides: str | None,
           data_dir: str | None) -> tuple[Budget, ml_collections.ConfigDict, Any]:
    """(budget spec, training config, dataset) for one trained table."""
    spec = get_budget(table, budget)
    config = training_config(table, budget, overrides, data_dir)
    return spec, config, budget_dataset(config, spec)


def _variant(config: ml_collections.ConfigDict, model: str, **kwargs) -> ml_collections.ConfigDict:
    """A copy of `config` training registry `model` built with `kwargs`."""
    run = config.copy_and_resolve_references()
    run.model = model
    run.model_kwargs = ml_collections.ConfigDict(kwargs)
    return run


def _run_note(start: float, results: Sequence[RunResult], steps: int) -> str:
    """'machine: ...; wall time ...', saying when runs were resumed rather than trained."""
    note = f"machine: {machine_description()}; wall time {time.perf_counter() - start:.0f} s"
    ran = [r.steps_run for r in results if r.steps_run is not None]
    if len(ran) == len(results) and sum(ran) < steps * len(results):
        note += (f" for {sum(ran):,} of the {steps * len(results):,} training steps (the rest "
                 "were resumed from finished or interrupted runs in runs_dir)")
    return note


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


# ---------------------------------------------------------------------------------------------
# 3 (trained). Filter sizes


def filter_sizes_table(budget: str, runs_dir: str, *, overrides: str | None = None,
                       data_dir: str | None = None, variants: Sequence[str] | None = None,
                       trainer: Trainer = train_variant) -> Table:
    """One 5x5 vs two 3x3, one 7x7 vs three 3x3: counts at C=64 on 32x32 and trained accuracy."""
    names = _check_variants(variants, list(FILTER_VARIANTS), "filter_sizes")
    spec, config, dataset = _setup("filter_sizes", budget, overrides, data_dir)
    width = spec.settings["width"]
    rows, results, start = [], [], time.perf_counter()
    for row in filter_size_rows(64, 32, names):
        run = _variant(config, "filter_size_net", kernels=FILTER_VARIANTS[row["block"]],
                       width=width)
        result = trainer(run, dataset, os.path.join(runs_dir, row["block"].replace("+", "_")),
                         None)
        results.append(result)
        probe = counting.total_params(counting.summary(
            models.get_model("filter_size_net", dataset.num_classes, **run.model_kwargs),
            dataset.image_shape))
        rows.append({**row, "net_params": probe, "top1": _pct(result.metrics.get("top1"))})
    columns = (Column("block", "block (C -> C)"), Column("receptive_field", "receptive field"),
               Column("weights_per_c2", "weights / C²"), Column("params", "params (C=64)"),
               Column("macs", "MACs (C=64, 32x32)"), Column("net_params", "probe net params"),
               Column("top1", "test top-1 %", ".1f"))
    what, how = describe_run(config, dataset)
    notes = (
        "counts: the block alone (stride 1, size-keeping padding, biases included) on a "
        "32x32x64 input",
        f"accuracy: `filter_size_net` = 3x3 stem conv ({width} channels) + 2x2 max pool + the "
        "block + global average pool + fc, trained once per block (seed 0)", what, how,
        _run_note(start, results, _steps(config, dataset)))
    return Table("filter_sizes", "Stacked 3x3 convolutions vs one large filter", columns,
                 tuple(rows), notes)


# ---------------------------------------------------------------------------------------------
# 4 (trained). AlexNet ablation


def alexnet_ablation_table(budget: str, runs_dir: str, *, overrides: str | None = None,
                           data_dir: str | None = None, variants: Sequence[str] | None = None,
                           trainer: Trainer = train_variant) -> Table:
    """Zeiler & Fergus's layer removals: parameters removed and the drop in test accuracy."""
    names = _check_variants(variants, list(ALEXNET_VARIANTS), "alexnet_ablation")
    _, config, dataset = _setup("alexnet_ablation", budget, overrides, data_dir)
    rows, top1, results, start = [], {}, [], time.perf_counter()
    for name, row in zip(names, alexnet_param_rows(variants=names)):
        run = _variant(config, "alexnet", drop_layers=ALEXNET_VARIANTS[name])
        result = trainer(run, dataset, os.path.join(runs_dir, name.replace(",", "_")), None)
        results.append(result)
        top1[name] = _pct(result.metrics.get("top1"))
        rows.append({**row, "top1": top1[name]})
    zf_full = ZF_VAL_TOP1_ERR["full"]
    for name, row in zip(names, rows):
        full = top1.get("full")
        row["drop"] = None if full is None or name == "full" else full - top1[name]
        row["zf_increase"] = None if name == "full" else row["zf_top1_err"] - zf_full
    columns = (Column("variant", "variant"), Column("params", "params (1000 classes)"),
               Column("params_removed", "params removed"),
               Column("lecture_params_removed", "≈ removed (lecture)"),
               Column("top1", "our test top-1 %", ".1f"), Column("drop", "our drop (pts)", ".1f"),
               Column("lecture_drop", "lecture drop (pts)", ".1f"),
               Column("zf_top1_err", "Z&F val top-1 err %", ".1f"),
               Column("zf_increase", "Z&F err increase (pts)", ".1f"))
    what, how = describe_run(config, dataset)
    h = dataset.image_shape[0]
    notes = (
        "params: torchvision AlexNet (registry `alexnet`, `drop_layers`) at 1000 classes and "
        "224x224x3; a removed layer's successor reads the previous kept layer's output, so "
        "'params removed' is net of that (e.g. without 6,7 fc8 grows from 4096 to 9216 inputs)",
        f"ours: the full-width registry AlexNet (it has no width option) trained on {h}x{h} "
        f"inputs (its minimum side is 63), 10 classes, dropout 0.5; "
        "our drop = full top-1 − variant top-1",
        "lecture drop: ImageNet top-1 drops from Fergus's 2013 tutorial as quoted in the "
        "lecture, with its ≈ parameter savings; Z&F: Zeiler & Fergus 2013 Table 3 "
        "validation top-1 error of their Krizhevsky replication and removals (the two sources "
        "disagree, e.g. removing layer 7 lowers Z&F's error)", what, how,
        _run_note(start, results, _steps(config, dataset)))
    if budget != "full":
        notes += (f"caveat: at the {budget} budget no variant is near convergence, so our "
                  "columns measure how fast each variant learns in these few steps (smaller "
                  "nets learn faster here), not what the removed layers are worth; the ImageNet "
                  "comparison needs `--budget=full`",)
    return Table("alexnet_ablation", "AlexNet layer removals (Zeiler & Fergus 2013)", columns,
                 tuple(rows), notes)


# ---------------------------------------------------------------------------------------------
# 5. Residual vs plain


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
                            trainer: Trainer = train_variant) -> Table:
    """Training error vs depth of plain and residual CIFAR ResNets, with the curves."""
    spec, config, dataset = _setup("residual_vs_plain", budget, overrides, data_dir)
    widths = tuple(spec.settings["widths"])
    depths = tuple(depths or spec.settings["depths"])
    rows, series, results, start = [], {}, [], time.perf_counter()
    for depth in depths:
        for plain in (True, False):
            label = f"{'plain' if plain else 'residual'}-{depth}"
            model = cifar_resnet(depth, plain, widths, dataset.num_classes)
            run = _variant(config, f"resnet{depth}_cifar", plain=plain)
            result = trainer(run, dataset, os.path.join(runs_dir, label), model)
            results.append(result)
            curve = tuple((step, 100.0 * (1.0 - acc)) for step, acc in result.curve)
            series[label] = curve
            params = counting.total_params(counting.summary(model, dataset.image_shape))
            top1 = result.metrics.get("top1")
            rows.append({"network": label, "depth": depth, "shortcuts": not plain,
                         "params": params,
                         "train_error": curve[-1][1] if curve else None,
                         "test_error": None if top1 is None else 100.0 * (1.0 - top1)})
    columns = (Column("network", "network"), Column("depth", "layers"),
               Column("params", "params"),
               Column("train_error", "final training error %", ".1f"),
               Column("test_error", "test error %", ".1f"))
    what, how = describe_run(config, dataset)
    log_every = config.log_every_steps
    notes = (
        f"networks: He et al.'s CIFAR ResNets (3 stages, widths {widths}, zero-pad "
        "shortcuts), `plain` drops every shortcut; "
        + ("the registry's `resnet{d}_cifar`" if widths == (16, 32, 64) else
           "narrower than the paper's (16, 32, 64), built with `models.ResNet`"),
        f"training error: 100 − mean training-batch accuracy over the last {log_every} steps "
        "(dropout-free nets, BatchNorm in train mode); the PNG plots it every "
        f"{log_every} steps", what, how,
        _run_note(start, results, _steps(config, dataset)))
    return Table("residual_vs_plain", "Training error of plain vs residual networks",
                 columns, tuple(rows), notes, plot="curves", series=series,
                 axes=("step", "training error (%)"))


# ---------------------------------------------------------------------------------------------
# 6. Architectures

IMAGENET_SIDE = 224
SMALL_SIDE = 32


def native_input(name: str) -> tuple[tuple[int, int, int], int]:
    """((H, W, C), num_classes) a registry model was designed for: 224 ImageNet, 32 CIFAR/MNIST."""
    if name == "lenet5":
        return (SMALL_SIDE, SMALL_SIDE, 1), 10
    if name.endswith("_cifar") or name == "filter_size_net":
        return (SMALL_SIDE, SMALL_SIDE, 3), 10
    return (IMAGENET_SIDE, IMAGENET_SIDE, 3), 1000


def architecture_rows(names: Sequence[str] | None = None) -> list[dict]:
    """#params and millions of MACs per image of registry models at their native input."""
    rows = []
    for name in names or models.list_models():
        shape, num_classes = native_input(name)
        summary = counting.summary(models.get_model(name, num_classes=num_classes), shape)
        rows.append({"model": name, "input": f"{shape[0]}x{shape[1]}x{shape[2]}",
                     "classes": num_classes, "params": counting.total_params(summary),
                     "mmacs": counting.total_macs(summary) / 1e6})
    return rows


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Measured images/s; a step that cannot run has None and its error message."""

    train_ips: float | None
    infer_ips: float | None
    error: str | None = None


def measure_throughput(name: str, side: int, batch: int, steps: int = 1) -> Throughput:
    """Inference, then training, images/s of a registry model on random side x side inputs.

    Times `steps` calls of the training loop's own jit-compiled eval step and train step
    (momentum SGD) after one compiling call each; data already on the device, so no input
    pipeline. A failing train step (e.g. an op without a gradient) keeps the inference rate.
    """
    (_, _, channels), num_classes = native_input(name)
    rng = np.random.default_rng(0)
    x = rng.random((batch, side, side, channels), dtype=np.float32)
    y = (np.arange(batch) % num_classes).astype(np.int32)
    dataset = data.ArrayDataset("random", x, y, x, y, num_classes)
    config = train.default_config()
    config.model, config.optimizer = name, "momentum"
    task = train.classification_task(config, dataset)
    schedule = train.make_schedule(config, 1, steps + 1)
    tx = train.make_optimizer(config, schedule)
    train_step, eval_step = train.make_steps(task, tx, schedule, lambda images: images)
    state = jax.jit(train.init_state(task, tx, 0))(jax.random.PRNGKey(0))
    jit_train, jit_eval = jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)
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


# budget -> (models timed (None: all), side for ImageNet models (None: native), batch, steps)
THROUGHPUT_BUDGETS: dict[str, tuple[tuple[str, ...] | None, int | None, int, int]] = {
    "tiny": (("lenet5",), 64, 2, 1),
    "small": (("lenet5", "resnet20_cifar", "alexnet", "vgg11", "resnet18", "googlenet_bn"),
              64, 8, 1),
    "full": (None, None, 64, 10),
}


def architectures_table(budget: str, *, names: Sequence[str] | None = None,
                        timed: Sequence[str] | None = None) -> Table:
    """Every registry model's #params and MACs at its native input, plus measured throughput.

    `names` restricts the models listed and `timed` the models timed (default: the budget's).
    """
    if budget not in THROUGHPUT_BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    default_timed, imagenet_side, batch, steps = THROUGHPUT_BUDGETS[budget]
    rows, start, failures = architecture_rows(names), time.perf_counter(), []
    listed = [row["model"] for row in rows]
    timed = list(timed) if timed is not None else list(default_timed or listed)
    for row in rows:
        row.update(timed_input=None, train_ips=None, infer_ips=None)
        if row["model"] not in timed:
            continue
        (side, _, _), _ = native_input(row["model"])
        if side == IMAGENET_SIDE and imagenet_side:
            side = imagenet_side
        try:
            measured = measure_throughput(row["model"], side, batch, steps)
        except Exception as error:  # noqa: BLE001  (report the model that fails, time the rest)
            measured = Throughput(None, None, f"{type(error).__name__}: {str(error)[:160]}")
        row.update(timed_input=f"{side}x{side}", train_ips=measured.train_ips,
                   infer_ips=measured.infer_ips)
        if measured.error:
            failures.append(f"{row['model']}: {measured.error}")
    columns = (Column("model", "model"), Column("input", "native input"),
               Column("params", "params"), Column("mmacs", "M MACs / image", ",.1f"),
               Column("timed_input", "timed at"), Column("train_ips", "train img/s", ".1f"),
               Column("infer_ips", "inference img/s", ".1f"))
    not_timed = [name for name in listed if name not in timed]
    notes = [
        "params and MACs (multiply-accumulates per image, convs and fcs) from "
        "`counting.summary` at the native input: 224x224x3 with 1000 classes for ImageNet "
        "models, 32x32x3 (lenet5: 32x32x1) with 10 classes for the CIFAR/MNIST ones",
        f"throughput: batch {batch}, {steps} timed step(s) after a compiling one, the "
        "training loop's jit-compiled train step (momentum SGD) and eval step, random inputs "
        "already on the device" + (f"; ImageNet models timed at {imagenet_side}x"
                                   f"{imagenet_side}, not 224" if imagenet_side else ""),
    ]
    if not_timed:
        notes.append(f"— : not timed at this budget ({budget}) to keep it within minutes; "
                     "`--budget=full` times every model")
    notes.extend(f"timing failed (—): {failure}" for failure in failures)
    notes.append(f"machine: {machine_description()}; wall time "
                 f"{time.perf_counter() - start:.0f} s")
    series = {row["model"]: ((float(row["params"]), row["mmacs"]),) for row in rows}
    return Table("architectures", "Registry models: size, cost and measured throughput",
                 columns, tuple(rows), tuple(notes), plot="scatter", series=series,
                 axes=("parameters", "million MACs per image"))


# ---------------------------------------------------------------------------------------------
# Dispatch


def build_table(name: str, budget: str = "small", runs_dir: str | None = None, *,
                overrides: str | None = None, data_dir: str | None = None) -> Table:
    """Build table `name` at `budget`; trained tables keep their runs under `runs_dir`."""
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; valid tables: {', '.join(TABLES)}")
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
    if name == "lenet5":
        return lenet5_table()
    if name == "inception_cost":
        return inception_cost_table()
    if name == "architectures":
        return architectures_table(budget)
    if name in TRAINED_TABLES and runs_dir is None:
        raise ValueError(f"table {name!r} trains: pass runs_dir, a directory for its runs")
    builders = {"filter_sizes": filter_sizes_table, "alexnet_ablation": alexnet_ablation_table,
                "residual_vs_plain": residual_vs_plain_table}
    return builders[name](budget, runs_dir, overrides=overrides, data_dir=data_dir)

