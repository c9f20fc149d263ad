"""Regenerate a lecture table: DIR/NAME.md, DIR/NAME.csv and, where it has a plot, DIR/NAME.png.

    ./launch.sh run reproduce --table=lenet5          # -> runs/tables/lenet5.md, .csv
    ./launch.sh run reproduce --table=lenet5 --workdir=results
    ./launch.sh run reproduce --table=filter_sizes --workdir=results --budget=small
    ./launch.sh run reproduce --table=residual_vs_plain --workdir=out --budget=full \\
        --data_dir=$TFDS_DATA_DIR
    ./launch.sh run reproduce --table=filter_sizes --workdir=results/medium \\
        --budget=medium --data=folder:/tmp/cifar10 --seeds=0,1,2
    ./launch.sh run reproduce --table=filter_sizes --budget=medium \\
        --data=folder:/tmp/cifar10 --workdir=/tmp/est --estimate_steps=3

Tables: lenet5, inception_cost, filter_sizes, alexnet_ablation, residual_vs_plain,
architectures, or all. Trained tables keep their runs (checkpoints, metrics.jsonl) under
--runs_dir (default WORKDIR/runs/NAME/BUDGET) and resume them when started again.
--estimate_steps=N times N training steps of each run's model instead of training, and prints
the table's wall time extrapolated to the quiet 2-core machine (nothing is written). Only the
budgets in tables.VERDICT_BUDGETS print a verdict; the others say "budget too small for a
verdict".
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence

from absl import app, flags

from experiments import common, tables
from experiments.tables import harness

_TABLE = flags.DEFINE_enum("table", None, [*tables.TABLES, "all"], "Which table to build.")
DEFAULT_WORKDIR = "runs/tables"
_WORKDIR = flags.DEFINE_string("workdir", DEFAULT_WORKDIR,
                               "Where NAME.md, NAME.csv and NAME.png go (default runs/tables, "
                               "git-ignored; results/ holds the committed ones).")
_BUDGET = flags.DEFINE_enum("budget", "small", list(tables.BUDGETS),
                            "tiny: seconds (a smoke test); small: minutes on 2 CPU cores on "
                            "the embedded digits; medium: about an hour per table on 2 CPU "
                            "cores on CIFAR-10 (--data); full: the real experiment "
                            "(GPU/TPU, TFDS).")
_RUNS_DIR = flags.DEFINE_string("runs_dir", None,
                                "Training runs of trained tables (default WORKDIR/runs).")
_OVERRIDES = flags.DEFINE_string("overrides", None,
                                 "Training config overrides for every run, 'key=value,...'.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir for the full budget.")
_DATA = flags.DEFINE_string("data", None, "The trained tables' dataset instead of the "
                            "budget's: a TFDS name (cifar10), folder:PATH (PATH/train and "
                            "PATH/test class folders) or npz:PATH.")
_ESTIMATE_STEPS = flags.DEFINE_integer("estimate_steps", 0, "If > 0: time this many training "
                                       "steps of each run's model, print the extrapolated "
                                       "wall time, train nothing.")
_FRESH = flags.DEFINE_bool("fresh", False, "Delete this table's earlier runs first "
                           "(otherwise finished runs are reused and unfinished ones resume).")
_SEEDS = flags.DEFINE_list("seeds", None, "The trained tables' seeds, e.g. 0,1,2 (default: "
                          "the budget's).")
flags.mark_flags_as_required(["table"])


def run(name: str, workdir: str, budget: str = "small", runs_dir: str | None = None,
        overrides: str | None = None, data_dir: str | None = None,
        fresh: bool = False, data: str | None = None,
        seeds: Sequence[int] | None = None) -> list[str]:
    """Build table `name` and write its files into `workdir`; return the paths written."""
    table_runs = os.path.join(runs_dir or os.path.join(workdir, "runs"), name, budget)
    if fresh and os.path.isdir(table_runs):
        shutil.rmtree(table_runs)
    table = tables.build_table(name, budget, table_runs, overrides=overrides,
                               data_dir=data_dir, data=data, seeds=seeds)
    return tables.write_table(table, workdir)


def estimate(name: str, budget: str, steps: int, overrides: str | None = None,
             data_dir: str | None = None, data: str | None = None,
             seeds: Sequence[int] | None = None) -> list[str]:
    """Time `steps` training steps of each of table `name`'s runs; lines with the rates and
    the table's wall time on the quiet machine (scaled by resnet20_cifar's rate around each)."""
    if name not in tables.TRAINED_TABLES:
        return [f"[{name}] trains nothing: no estimate"]
    timer = harness.StepTimer(steps)
    with tempfile.TemporaryDirectory() as runs_dir:
        tables.build_table(name, budget, runs_dir, overrides=overrides, data_dir=data_dir,
                           data=data, trainer=timer, seeds=seeds)
    return harness.estimate_lines(name, timer)


def parse_seeds(values: Sequence[str] | None) -> tuple[int, ...] | None:
    """--seeds as integers (None when not given); UsageError naming a non-integer."""
    if not values:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--seeds: expected integers like 0,1,2; received "
                             f"{','.join(values)!r}") from None


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    names = tables.TABLES if _TABLE.value == "all" else (_TABLE.value,)
    seeds = parse_seeds(_SEEDS.value)
    for name in names:
        if _ESTIMATE_STEPS.value > 0:
            lines = estimate(name, _BUDGET.value, _ESTIMATE_STEPS.value, _OVERRIDES.value,
                             _DATA_DIR.value, _DATA.value, seeds)
            print("\n".join(lines), flush=True)
            continue
        paths = run(name, _WORKDIR.value, _BUDGET.value, _RUNS_DIR.value, _OVERRIDES.value,
                    _DATA_DIR.value, _FRESH.value, _DATA.value, seeds)
        print("\n".join(paths), flush=True)


if __name__ == "__main__":
    common.run(main)
