"""Regenerate a lecture table: DIR/NAME.md, DIR/NAME.csv and, where it has a plot, DIR/NAME.png.

    python -m experiments.reproduce --table=lenet5 --workdir=results
    python -m experiments.reproduce --table=filter_sizes --workdir=results --budget=small
    python -m experiments.reproduce --table=residual_vs_plain --workdir=out --budget=full \\
        --data_dir=$TFDS_DATA_DIR

Tables: lenet5, inception_cost, filter_sizes, alexnet_ablation, residual_vs_plain,
architectures, or all. Trained tables keep their runs (checkpoints, metrics.jsonl) under
--runs_dir (default WORKDIR/runs/NAME/BUDGET) and resume them when started again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from absl import app, flags

from experiments import tables

_TABLE = flags.DEFINE_enum("table", None, [*tables.TABLES, "all"], "Which table to build.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where NAME.md, NAME.csv and NAME.png go.")
_BUDGET = flags.DEFINE_enum("budget", "small", list(tables.BUDGETS),
                            "tiny: seconds (a smoke test); small: minutes on 2 CPU cores on "
                            "the embedded digits; full: the real experiment (GPU/TPU, TFDS).")
_RUNS_DIR = flags.DEFINE_string("runs_dir", None,
                                "Training runs of trained tables (default WORKDIR/runs).")
_OVERRIDES = flags.DEFINE_string("overrides", None,
                                 "Training config overrides for every run, 'key=value,...'.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir for the full budget.")
_FRESH = flags.DEFINE_bool("fresh", False, "Delete this table's earlier runs first "
                           "(otherwise finished runs are reused and unfinished ones resume).")
flags.mark_flags_as_required(["table", "workdir"])


def run(name: str, workdir: str, budget: str = "small", runs_dir: str | None = None,
        overrides: str | None = None, data_dir: str | None = None,
        fresh: bool = False) -> list[str]:
    """Build table `name` and write its files into `workdir`; return the paths written."""
    table_runs = os.path.join(runs_dir or os.path.join(workdir, "runs"), name, budget)
    if fresh and os.path.isdir(table_runs):
        shutil.rmtree(table_runs)
    table = tables.build_table(name, budget, table_runs, overrides=overrides,
                               data_dir=data_dir)
    return tables.write_table(table, workdir)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    names = tables.TABLES if _TABLE.value == "all" else (_TABLE.value,)
    for name in names:
        paths = run(name, _WORKDIR.value, _BUDGET.value, _RUNS_DIR.value, _OVERRIDES.value,
                    _DATA_DIR.value, _FRESH.value)
        print("\n".join(paths), flush=True)


if __name__ == "__main__":
    app.run(main)
