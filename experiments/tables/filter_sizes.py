"""Table 3: one 5x5 vs two 3x3, one 7x7 vs three 3x3 convolutions: counts and trained accuracy."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.tables import harness
from experiments.tables.harness import MEDIUM, MEDIUM_TINY, QUIET, TINY, Budget
from experiments.tables.render import Column, Table
from jaxcnn import counting, models, ops
from jaxcnn.models.smallnets import FilterStack

FILTER_VARIANTS: dict[str, tuple[int, ...]] = {
    "5x5": (5,), "3x3+3x3": (3, 3), "7x7": (7,), "3x3+3x3+3x3": (3, 3, 3)}
# (single large filter, the stack of 3x3 convs with its receptive field)
PAIRS = (("5x5", "3x3+3x3"), ("7x7", "3x3+3x3+3x3"))

# Medium: the probe net at width 32 on CIFAR-10 32x32 (the block runs at 16x16 with 32
# channels), 3 seeds x 4 blocks = 12 runs of 3,000 steps of 128 (7.7 epochs). Estimated at
# 950-2,100 img/s on the quiet 2-core machine (--estimate_steps): about an hour of training.
MEDIUM_STEPS = 3000
MEDIUM_TRAINING = (f"{MEDIUM},train_steps={MEDIUM_STEPS},learning_rate=0.02,"
                   "weight_decay=0.0005,warmup_steps=150")

# `width`: the probe net's stem channels; `seeds`: each block trains once per seed.
TRAINING_BUDGETS: dict[str, Budget] = {
    "tiny": Budget(TINY, side=16, train_examples=64, test_examples=16, settings={"width": 4}),
    "small": Budget(f"{QUIET},train_steps=400,batch_size=64,learning_rate=0.003,"
                    "warmup_steps=30,log_every_steps=50", settings={"width": 32}),
    "full": Budget("dataset='cifar10',train_epochs=30,batch_size=128,learning_rate=0.001,"
                   "warmup_epochs=1,checkpoint_every_steps=2000", settings={"width": 64}),
    "medium": Budget(MEDIUM_TRAINING, settings={
        "width": 32, "seeds": (0, 1, 2),
        "estimate": "53-61 min on 2 quiet CPU cores (--estimate_steps on the busy machine, "
                    "scaled by resnet20_cifar's quiet rate; + data loading and evaluation)",
        "note": "medium budget: width 32 (not 64) and 7.7 epochs so that the 12 runs train "
                "in about an hour on 2 quiet CPU cores (950-2,100 img/s estimated)"}),
    # The medium settings' structure (seeds, data path, schedule) at test size.
    "medium_tiny": Budget(MEDIUM_TINY, settings={"width": 4, "seeds": (0, 1)}),
}


def filter_size_rows(channels: int = 64, side: int = 32,
                     variants: Sequence[str] | None = None) -> list[dict]:
    """Receptive field, weights per C^2, #params and MACs of each block, C -> C on side x side."""
    rows = []
    for name in harness.check_variants(variants, list(FILTER_VARIANTS), "filter_sizes"):
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


def filter_sizes_verdict(rows: Sequence[dict]) -> tuple[list[str], list[str]]:
    """(outcomes, lines), one per (large, stacked) pair trained: the stack has fewer
    parameters (exact) and a higher mean top-1 than the large filter by more than the larger
    seed std (`harness.Comparison`, factor 1, on the rows' per-seed `top1_seeds`); fewer
    parameters with a difference inside the spread is 'not shown'."""
    by_block = {row["block"]: row for row in rows}
    outcomes, lines = [], []
    for large, stacked in PAIRS:
        if large not in by_block or stacked not in by_block:
            continue
        a, b = by_block[large], by_block[stacked]
        seeds_a, seeds_b = a.get("top1_seeds") or (), b.get("top1_seeds") or ()
        if not seeds_a or not seeds_b or None in (*seeds_a, *seeds_b):
            outcomes.append("undecided")
            lines.append(f"{stacked} vs {large}: a run is missing")
            continue
        fewer = b["params"] < a["params"]
        comparison = harness.Comparison(stacked, large, tuple(seeds_b), tuple(seeds_a))
        outcome = comparison.outcome("higher") if fewer else "contradicted"
        outcomes.append(outcome)
        lines.append(f"{b['params']:,} vs {a['params']:,} params "
                     f"({'fewer' if fewer else 'not fewer'}); top-1 "
                     f"{comparison.text('higher')}")
    return outcomes, lines


def filter_sizes_table(budget: str, runs_dir: str, *, overrides: str | None = None,
                       data_dir: str | None = None, variants: Sequence[str] | None = None,
                       trainer: harness.Trainer = harness.train_variant,
                       seeds: Sequence[int] | None = None) -> Table:
    """One 5x5 vs two 3x3, one 7x7 vs three 3x3: counts at C=64 on 32x32 and trained accuracy."""
    names = harness.check_variants(variants, list(FILTER_VARIANTS), "filter_sizes")
    runs = harness.start_runs(TRAINING_BUDGETS, budget, runs_dir, overrides=overrides,
                              data_dir=data_dir, trainer=trainer, table="filter_sizes",
                              seeds=seeds)
    width = runs.spec.settings["width"]
    shape, classes = runs.dataset.image_shape, runs.dataset.num_classes
    probes = {name: models.get_model("filter_size_net", classes, kernels=FILTER_VARIANTS[name],
                                     width=width) for name in names}
    runs.plan({runs.run_name(name.replace("+", "_"), seed): harness.forward_macs(probes[name],
                                                                                 shape)
               for name in names for seed in runs.seeds})
    rows = []
    for row in filter_size_rows(64, 32, names):
        kwargs = {"kernels": FILTER_VARIANTS[row["block"]], "width": width}
        top1, changes = [], []
        for seed in runs.seeds:
            run_name = runs.run_name(row["block"].replace("+", "_"), seed)
            result = runs.train(run_name, "filter_size_net", seed=seed, **kwargs)
            top1.append(harness.percent(result.metrics.get("top1")))
            changes.append(runs.late_changes[run_name])
        probe = counting.total_params(counting.summary(probes[row["block"]], shape))
        rows.append({**row, "net_params": probe, "top1": harness.mean(top1),
                     "top1_spread": harness.spread(top1), "top1_seeds": tuple(top1),
                     "loss_change": harness.largest_change(changes)})
    columns = (Column("block", "block (C -> C)"), Column("receptive_field", "receptive field"),
               Column("weights_per_c2", "weights / C²"), Column("params", "params (C=64)"),
               Column("macs", "MACs (C=64, 32x32)"), Column("net_params", "probe net params"),
               Column("top1", "test top-1 %", ".1f"),
               Column("top1_spread", "± seed std (pts)", ".1f"),
               Column("loss_change", "loss Δ last 10 % (%)", ".1f"))
    outcomes, lines = filter_sizes_verdict(rows)
    notes = (
        runs.verdict_note(
            outcomes, "(Simonyan & Zisserman 2014, Sec. 2.3 and 4.1; the lecture) a stack of "
            "3x3 convs has the large filter's receptive field with fewer parameters and is "
            "more accurate (their shallow net with 5x5 instead of pairs of 3x3 had a 7 % "
            "higher top-1 error)",
            "for each pair trained: fewer parameters, and mean top-1 of the stack − mean "
            "top-1 of the large filter > the larger seed std (sample std over ≥ "
            f"{harness.MIN_SEEDS} seeds); a difference inside it is 'not shown'; reproduced "
            "only when every pair is shown",
            "; ".join(lines) or "no complete pair trained"),
        "counts: the block alone (stride 1, size-keeping padding, biases included) on a "
        "32x32x64 input",
        f"accuracy: `filter_size_net` = 3x3 stem conv ({width} channels) + 2x2 max pool + the "
        f"block + global average pool + fc, on {shape[0]}x{shape[1]} inputs (the block runs "
        f"at half that side, {width} channels); top-1 is the mean over the seeds ± their "
        "sample std", *runs.notes(), runs.convergence_note())
    return Table("filter_sizes", "Stacked 3x3 convolutions vs one large filter", columns,
                 tuple(rows), notes)


def build(budget: str, runs_dir: str, *, overrides: str | None = None,
          data_dir: str | None = None, trainer: harness.Trainer = harness.train_variant,
          seeds: Sequence[int] | None = None) -> Table:
    """The table at `budget`, its runs in `runs_dir` (`seeds`: instead of the budget's)."""
    return filter_sizes_table(budget, runs_dir, overrides=overrides, data_dir=data_dir,
                              trainer=trainer, seeds=seeds)
