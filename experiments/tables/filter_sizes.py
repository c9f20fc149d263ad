"""Table 3: one 5x5 vs two 3x3, one 7x7 vs three 3x3 convolutions: counts and trained accuracy."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.tables import harness
from experiments.tables.harness import QUIET, TINY, Budget
from experiments.tables.render import Column, Table
from jaxcnn import counting, models, ops
from jaxcnn.models.smallnets import FilterStack

FILTER_VARIANTS: dict[str, tuple[int, ...]] = {
    "5x5": (5,), "3x3+3x3": (3, 3), "7x7": (7,), "3x3+3x3+3x3": (3, 3, 3)}

# `width`: the probe net's stem channels.
TRAINING_BUDGETS: dict[str, Budget] = {
    "tiny": Budget(TINY, side=16, train_examples=64, test_examples=16, settings={"width": 4}),
    "small": Budget(f"{QUIET},train_steps=400,batch_size=64,learning_rate=0.003,"
                    "warmup_steps=30,log_every_steps=50", settings={"width": 32}),
    "full": Budget("dataset='cifar10',train_epochs=30,batch_size=128,learning_rate=0.001,"
                   "warmup_epochs=1,checkpoint_every_steps=2000", settings={"width": 64}),
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


def filter_sizes_table(budget: str, runs_dir: str, *, overrides: str | None = None,
                       data_dir: str | None = None, variants: Sequence[str] | None = None,
                       trainer: harness.Trainer = harness.train_variant) -> Table:
    """One 5x5 vs two 3x3, one 7x7 vs three 3x3: counts at C=64 on 32x32 and trained accuracy."""
    names = harness.check_variants(variants, list(FILTER_VARIANTS), "filter_sizes")
    runs = harness.start_runs(TRAINING_BUDGETS, budget, runs_dir, overrides=overrides,
                              data_dir=data_dir, trainer=trainer)
    width = runs.spec.settings["width"]
    rows = []
    for row in filter_size_rows(64, 32, names):
        kwargs = {"kernels": FILTER_VARIANTS[row["block"]], "width": width}
        result = runs.train(row["block"].replace("+", "_"), "filter_size_net", **kwargs)
        probe = counting.total_params(counting.summary(
            models.get_model("filter_size_net", runs.dataset.num_classes, **kwargs),
            runs.dataset.image_shape))
        rows.append({**row, "net_params": probe,
                     "top1": harness.percent(result.metrics.get("top1"))})
    columns = (Column("block", "block (C -> C)"), Column("receptive_field", "receptive field"),
               Column("weights_per_c2", "weights / C²"), Column("params", "params (C=64)"),
               Column("macs", "MACs (C=64, 32x32)"), Column("net_params", "probe net params"),
               Column("top1", "test top-1 %", ".1f"))
    notes = (
        "counts: the block alone (stride 1, size-keeping padding, biases included) on a "
        "32x32x64 input",
        f"accuracy: `filter_size_net` = 3x3 stem conv ({width} channels) + 2x2 max pool + the "
        "block + global average pool + fc, trained once per block (seed 0)", *runs.notes())
    return Table("filter_sizes", "Stacked 3x3 convolutions vs one large filter", columns,
                 tuple(rows), notes)


def build(budget: str, runs_dir: str, *, overrides: str | None = None,
          data_dir: str | None = None) -> Table:
    """The table at `budget`, its runs in `runs_dir`."""
    return filter_sizes_table(budget, runs_dir, overrides=overrides, data_dir=data_dir)
