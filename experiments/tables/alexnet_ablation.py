"""Table 4: Zeiler & Fergus's AlexNet layer removals: parameters removed and accuracy lost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from experiments.tables import harness
from experiments.tables.harness import MEDIUM, MEDIUM_TINY, QUIET, Budget
from experiments.tables.render import Column, Table
from jaxcnn import counting, models

ALEXNET_VARIANTS: dict[str, tuple[int, ...]] = {
    "full": (), "7": (7,), "6,7": (6, 7), "3,4": (3, 4), "3,4,6,7": (3, 4, 6, 7)}
# The lecture's ImageNet top-1 drops (points), quoted from Fergus's 2013 tutorial slides, with
# the slides' approximate parameter savings.
LECTURE_DROP_PTS = {"7": 1.1, "6,7": 5.7, "3,4": 3.0, "3,4,6,7": 33.5}
LECTURE_PARAMS_REMOVED = {"7": "16 M", "6,7": "50 M", "3,4": "1 M"}
# Zeiler & Fergus 2013, Table 3: ImageNet 2012 validation top-1 error (%) of their replication
# of Krizhevsky et al. and its layer removals.
ZF_VAL_TOP1_ERR = {"full": 40.5, "7": 40.0, "6,7": 44.8, "3,4": 45.4, "3,4,6,7": 71.3}

# Medium: `alexnet_cifar` (5 conv + 3 FC for 32x32) at width 0.25 (convs 16/48/96/64/64, fcs
# 1024) on CIFAR-10, 3 seeds x 5 variants = 15 runs of 2,500 steps of 128 (6.4 epochs).
# Estimated at 660-1,270 img/s on the quiet 2-core machine (--estimate_steps): about 1.5 h.
MEDIUM_STEPS = 2500
MEDIUM_TRAINING = (f"{MEDIUM},train_steps={MEDIUM_STEPS},learning_rate=0.02,"
                   "weight_decay=0.0005,warmup_steps=150")
# The rule: the all-four removal's drop is at least this multiple of the largest other drop.
DROP_RATIO = 3.0

# Settings: `model` (registry name, default alexnet), `width` (alexnet_cifar's multiplier),
# `seeds`.
TRAINING_BUDGETS: dict[str, Budget] = {
    "tiny": Budget(f"{QUIET},train_steps=1,batch_size=4,eval_batch_size=8,log_every_steps=1",
                   side=64, train_examples=16, test_examples=8),
    "small": Budget(f"{QUIET},train_steps=100,batch_size=16,learning_rate=0.0003,"
                    "warmup_steps=10,log_every_steps=20,eval_batch_size=250", side=64),
    "full": Budget("dataset='imagenet2012',image_size=(224,224),batch_size=256,"
                   "train_epochs=90,optimizer='momentum',learning_rate=0.01,"
                   "weight_decay=0.0005,schedule='step',decay_epochs=(30,60),"
                   "checkpoint_every_steps=5000"),
    "medium": Budget(MEDIUM_TRAINING, settings={
        "model": "alexnet_cifar", "width": 0.25, "seeds": (0, 1, 2),
        "estimate": "86-93 min on 2 quiet CPU cores (1.5 x the 57-62 min --estimate_steps "
                    "gave for 2 seeds; + data loading and evaluation)",
        "note": "medium budget: AlexNet at a quarter of its width on 32x32 CIFAR-10 and 6.4 "
                "epochs so that each seed's 5 runs train in about 30 min on 2 quiet CPU cores "
                "(660-1,270 img/s estimated)"}),
    "medium_tiny": Budget(MEDIUM_TINY, settings={"model": "alexnet_cifar", "width": 0.0625,
                                                 "seeds": (0, 1)}),
}


def alexnet_param_rows(num_classes: int = 1000, side: int = 224,
                       variants: Sequence[str] | None = None) -> list[dict]:
    """#params of torchvision AlexNet and each Zeiler & Fergus removal, and how many it removes."""
    names = harness.check_variants(variants, list(ALEXNET_VARIANTS), "alexnet_ablation")

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


def alexnet_ablation_verdict(top1: Mapping[str, Sequence[float | None]]
                             ) -> tuple[list[str], str]:
    """(outcomes, measured) of Zeiler & Fergus's shape from per-seed top-1 of each variant:
    removing 3,4,6,7 drops mean top-1 (vs the full net) by more than twice the larger seed
    std; it drops more than the largest other removal by more than twice the larger seed std;
    and its drop is at least DROP_RATIO x that largest drop (a ratio that fails counts as
    contradicted only when both differences are shown, else as not shown)."""
    others = [name for name in ALEXNET_VARIANTS if name not in ("full", "3,4,6,7")]
    needed = ("full", *others, "3,4,6,7")
    if any(not top1.get(name) or None in top1[name] for name in needed):
        return ["undecided"], "needs every variant trained"
    means = {name: float(np.mean(top1[name])) for name in needed}
    drops = {name: means["full"] - means[name] for name in (*others, "3,4,6,7")}
    largest = max(others, key=lambda name: drops[name])
    all_four = harness.Comparison("full", "without 3,4,6,7", tuple(top1["full"]),
                                  tuple(top1["3,4,6,7"]), 2.0)
    excess = harness.Comparison(f"without {largest}", "without 3,4,6,7", tuple(top1[largest]),
                                tuple(top1["3,4,6,7"]), 2.0)
    outcomes = [all_four.outcome("higher"), excess.outcome("higher")]
    ratio_holds = drops["3,4,6,7"] >= DROP_RATIO * drops[largest]
    outcomes.append("shown" if ratio_holds else (
        "contradicted" if outcomes == ["shown", "shown"] else "not shown"))
    measured = (f"drop without 3,4,6,7 {drops['3,4,6,7']:.1f} pts vs the largest other (without "
                f"{largest}) {drops[largest]:.1f} pts ({'≥' if ratio_holds else '<'} "
                f"{DROP_RATIO:g}x); top-1 {all_four.text('higher')}; top-1 "
                f"{excess.text('higher')}")
    return outcomes, measured


def alexnet_ablation_table(budget: str, runs_dir: str, *, overrides: str | None = None,
                           data_dir: str | None = None, variants: Sequence[str] | None = None,
                           trainer: harness.Trainer = harness.train_variant,
                           seeds: Sequence[int] | None = None) -> Table:
    """Zeiler & Fergus's layer removals: parameters removed and the drop in test accuracy."""
    names = harness.check_variants(variants, list(ALEXNET_VARIANTS), "alexnet_ablation")
    runs = harness.start_runs(TRAINING_BUDGETS, budget, runs_dir, overrides=overrides,
                              data_dir=data_dir, trainer=trainer, table="alexnet_ablation",
                              seeds=seeds)
    settings = runs.spec.settings
    model_name = settings.get("model", "alexnet")
    extra = {"width": settings["width"]} if "width" in settings else {}
    shape, classes = runs.dataset.image_shape, runs.dataset.num_classes
    nets = {name: models.get_model(model_name, num_classes=classes,
                                   drop_layers=ALEXNET_VARIANTS[name], **extra)
            for name in names}
    runs.plan({runs.run_name(name.replace(",", "_"), seed): harness.forward_macs(nets[name],
                                                                                 shape)
               for name in names for seed in runs.seeds})
    rows, top1, per_seed = [], {}, {}
    for name, row in zip(names, alexnet_param_rows(variants=names)):
        accuracies, changes = [], []
        for seed in runs.seeds:
            run_name = runs.run_name(name.replace(",", "_"), seed)
            result = runs.train(run_name, model_name, seed=seed,
                                drop_layers=ALEXNET_VARIANTS[name], **extra)
            accuracies.append(harness.percent(result.metrics.get("top1")))
            changes.append(runs.late_changes[run_name])
        top1[name], per_seed[name] = harness.mean(accuracies), tuple(accuracies)
        ours = counting.total_params(counting.summary(nets[name], shape))
        rows.append({**row, "our_params": ours, "top1": top1[name],
                     "top1_spread": harness.spread(accuracies),
                     "loss_change": harness.largest_change(changes)})
    zf_full = ZF_VAL_TOP1_ERR["full"]
    for name, row in zip(names, rows):
        full = top1.get("full")
        missing = full is None or top1[name] is None or name == "full"
        row["drop"] = None if missing else full - top1[name]
        row["zf_increase"] = None if name == "full" else row["zf_top1_err"] - zf_full
    outcomes, measured = alexnet_ablation_verdict(per_seed)
    columns = (Column("variant", "variant"), Column("params", "params (1000 classes)"),
               Column("params_removed", "params removed"),
               Column("lecture_params_removed", "≈ removed (lecture)"),
               Column("our_params", "our net params"),
               Column("top1", "our test top-1 %", ".1f"),
               Column("top1_spread", "± seed std (pts)", ".1f"),
               Column("drop", "our drop (pts)", ".1f"),
               Column("lecture_drop", "lecture drop (pts)", ".1f"),
               Column("zf_top1_err", "Z&F val top-1 err %", ".1f"),
               Column("zf_increase", "Z&F err increase (pts)", ".1f"),
               Column("loss_change", "loss Δ last 10 % (%)", ".1f"))
    h = shape[0]
    if model_name == "alexnet_cifar":
        ours = (f"ours: `alexnet_cifar` (AlexNet's 5 conv + 3 FC for 32x32: conv1 5x5/1, "
                f"3x3/2 pools with padding 1, fc6 on pool5's 4x4 map) at width "
                f"{extra.get('width', 1.0):g}, trained on {h}x{h} inputs, {classes} classes, "
                "dropout 0.5")
    else:
        ours = (f"ours: the full-width registry AlexNet trained on {h}x{h} inputs (its minimum "
                f"side is 63), {classes} classes, dropout 0.5")
    notes = (
        runs.verdict_note(
            outcomes, "(Zeiler & Fergus 2013 Table 3: +4.3 / +4.9 points for 6,7 / 3,4 "
            "against +30.8 for all four; the lecture: 5.7 / 3.0 against 33.5) removing a pair "
            "of layers costs a little, removing all four a lot",
            f"on the means over ≥ {harness.MIN_SEEDS} seeds: the drop without 3,4,6,7 is "
            f"at least {DROP_RATIO:g}x the largest other drop, and both it and its excess "
            "over that drop are larger than twice the larger seed std (sample std of the two "
            "variants compared); a difference inside that margin is 'not shown'", measured),
        "params: torchvision AlexNet (registry `alexnet`, `drop_layers`) at 1000 classes and "
        "224x224x3; a removed layer's successor reads the previous kept layer's output, so "
        "'params removed' is net of that (e.g. without 6,7 fc8 grows from 4096 to 9216 inputs)",
        f"{ours}; our drop = full top-1 − variant top-1 (means over the seeds)",
        "lecture drop: ImageNet top-1 drops from Fergus's 2013 tutorial as quoted in the "
        "lecture, with its ≈ parameter savings; Z&F: Zeiler & Fergus 2013 Table 3 "
        "validation top-1 error of their Krizhevsky replication and removals (the two sources "
        "disagree, e.g. removing layer 7 lowers Z&F's error)", *runs.notes(),
        runs.convergence_note())
    if budget in ("tiny", "small"):
        notes += (f"caveat: at the {budget} budget no variant is near convergence, so our "
                  "columns measure how fast each variant learns in these few steps (smaller "
                  "nets learn faster here), not what the removed layers are worth; the ImageNet "
                  "comparison needs `--budget=full`",)
    return Table("alexnet_ablation", "AlexNet layer removals (Zeiler & Fergus 2013)", columns,
                 tuple(rows), notes)


def build(budget: str, runs_dir: str, *, overrides: str | None = None,
          data_dir: str | None = None, trainer: harness.Trainer = harness.train_variant,
          seeds: Sequence[int] | None = None) -> Table:
    """The table at `budget`, its runs in `runs_dir` (`seeds`: instead of the budget's)."""
    return alexnet_ablation_table(budget, runs_dir, overrides=overrides, data_dir=data_dir,
                                  trainer=trainer, seeds=seeds)
