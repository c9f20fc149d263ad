"""Table 6: every registry model's size, cost and measured training and inference throughput."""

from __future__ import annotations

import time
from collections.abc import Sequence

from experiments.tables import harness
from experiments.tables.harness import Throughput
from experiments.tables.render import Column, Table, machine_description
from jaxcnn import counting, models

IMAGENET_SIDE = 224
SMALL_SIDE = 32

# budget -> (models timed (None: all), side for ImageNet models (None: native), batch, steps)
THROUGHPUT_BUDGETS: dict[str, tuple[tuple[str, ...] | None, int | None, int, int]] = {
    "tiny": (("lenet5",), 64, 2, 1),
    "small": (("lenet5", "resnet20_cifar", "alexnet", "vgg11", "resnet18", "googlenet_bn"),
              64, 8, 1),
    "full": (None, None, 64, 10),
}


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


def measure_throughput(name: str, side: int, batch: int, steps: int = 1) -> Throughput:
    """Inference and training images/s of registry model `name` on side x side inputs."""
    (_, _, channels), num_classes = native_input(name)
    return harness.measure_throughput(name, (side, side, channels), num_classes, batch, steps)


def architectures_table(budget: str, *, names: Sequence[str] | None = None,
                        timed: Sequence[str] | None = None) -> Table:
    """Every registry model's #params and MACs at its native input, plus measured throughput.

    `names` restricts the models listed and `timed` the models timed (default: the budget's).
    """
    harness.check_budget(budget)
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


def build(budget: str, runs_dir: str | None = None, *, overrides: str | None = None,
          data_dir: str | None = None) -> Table:
    """The table at `budget` (it times models itself: no runs, no training data)."""
    del runs_dir, overrides, data_dir
    return architectures_table(budget)
