"""The lecture's tables, regenerated from the project's own models, counting and training loop.

One module per table (its rows, its budgets, its `build`), `harness` (budgets, data, training
through `jaxcnn.train.train_and_evaluate`, timing), `render` (markdown, CSV, PNG). `TABLES`
maps each name to its `build(budget, runs_dir, *, overrides, data_dir) -> Table`;
`experiments/reproduce.py` builds them from the command line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from experiments.tables import (
    alexnet_ablation,
    architectures,
    filter_sizes,
    inception_cost,
    lenet5,
    residual_vs_plain,
)
from experiments.tables.harness import (
    BUDGETS,
    NO_VERDICT_WHY,
    TOO_SMALL,
    VERDICT_BUDGETS,
    Budget,
    Trainer,
    check_budget,
    duration,
    load_average,
)
from experiments.tables.render import Table, write_table

TABLES: dict[str, Callable[..., Table]] = {
    "lenet5": lenet5.build,
    "inception_cost": inception_cost.build,
    "filter_sizes": filter_sizes.build,
    "alexnet_ablation": alexnet_ablation.build,
    "residual_vs_plain": residual_vs_plain.build,
    "architectures": architectures.build,
}
# The tables that train, and how at each budget.
TRAINING_BUDGETS: dict[str, dict[str, Budget]] = {
    "filter_sizes": filter_sizes.TRAINING_BUDGETS,
    "alexnet_ablation": alexnet_ablation.TRAINING_BUDGETS,
    "residual_vs_plain": residual_vs_plain.TRAINING_BUDGETS,
}
TRAINED_TABLES = tuple(TRAINING_BUDGETS)
# The tables that train nothing: their expected wall time (trained tables' budgets carry
# theirs as settings["estimate"]).
COUNTING_ESTIMATES = {
    "lenet5": "a few seconds (counts only)",
    "inception_cost": "a few seconds (counts only)",
    "architectures": "under a minute at --budget=tiny (one model timed), a few minutes at "
                     "small (six timed)",
}

__all__ = ["BUDGETS", "NO_VERDICT_WHY", "TABLES", "TOO_SMALL", "TRAINED_TABLES",
           "TRAINING_BUDGETS", "VERDICT_BUDGETS", "build_table", "write_table"]


def build_table(name: str, budget: str = "small", runs_dir: str | None = None, *,
                overrides: str | None = None, data_dir: str | None = None,
                data: str | None = None, trainer: Trainer | None = None,
                seeds: Sequence[int] | None = None) -> Table:
    """Build table `name` at `budget`; trained tables keep their runs under `runs_dir`.

    `data` replaces the budget's dataset (a TFDS name, 'folder:PATH' or 'npz:PATH');
    `trainer` replaces the trained tables' trainer (e.g. harness.StepTimer to time them);
    `seeds` the trained tables' seeds (default: the budget's).
    """
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; valid tables: {', '.join(TABLES)}")
    check_budget(budget)
    if name not in TRAINING_BUDGETS:
        load, start = load_average(), time.perf_counter()
        table = TABLES[name](budget, runs_dir, overrides=overrides, data_dir=data_dir)
        seconds = time.perf_counter() - start
        note = (f"wall time: estimated {COUNTING_ESTIMATES[name]}, measured "
                f"{duration(seconds)} ({seconds:.1f} s; {load} at the start, "
                f"{load_average()} at the end)")
        return dataclasses.replace(table, notes=(*table.notes, note))
    if runs_dir is None:
        raise ValueError(f"table {name!r} trains: pass runs_dir, a directory for its runs")
    if data:
        overrides = ",".join(o for o in (f"dataset={data!r}", overrides) if o)
    extra: dict = {"trainer": trainer} if trainer is not None else {}
    if seeds:
        extra["seeds"] = tuple(seeds)
    return TABLES[name](budget, runs_dir, overrides=overrides, data_dir=data_dir, **extra)
