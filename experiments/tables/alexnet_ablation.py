"""Table 4: Zeiler & Fergus's AlexNet layer removals: parameters removed and accuracy lost."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.tables import harness
from experiments.tables.harness import QUIET, Budget
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

TRAINING_BUDGETS: dict[str, Budget] = {
    "tiny": Budget(f"{QUIET},train_steps=1,batch_size=4,eval_batch_size=8,log_every_steps=1",
                   side=64, train_examples=16, test_examples=8),
    "small": Budget(f"{QUIET},train_steps=100,batch_size=16,learning_rate=0.0003,"
                    "warmup_steps=10,log_every_steps=20,eval_batch_size=250", side=64),
    "full": Budget("dataset='imagenet2012',image_size=(224,224),batch_size=256,"
                   "train_epochs=90,optimizer='momentum',learning_rate=0.01,"
                   "weight_decay=0.0005,schedule='step',decay_epochs=(30,60),"
                   "checkpoint_every_steps=5000"),
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


def alexnet_ablation_table(budget: str, runs_dir: str, *, overrides: str | None = None,
                           data_dir: str | None = None, variants: Sequence[str] | None = None,
                           trainer: harness.Trainer = harness.train_variant) -> Table:
    """Zeiler & Fergus's layer removals: parameters removed and the drop in test accuracy."""
    names = harness.check_variants(variants, list(ALEXNET_VARIANTS), "alexnet_ablation")
    runs = harness.start_runs(TRAINING_BUDGETS, budget, runs_dir, overrides=overrides,
                              data_dir=data_dir, trainer=trainer)
    rows, top1 = [], {}
    for name, row in zip(names, alexnet_param_rows(variants=names)):
        result = runs.train(name.replace(",", "_"), "alexnet",
                            drop_layers=ALEXNET_VARIANTS[name])
        top1[name] = harness.percent(result.metrics.get("top1"))
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
    h = runs.dataset.image_shape[0]
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
        "disagree, e.g. removing layer 7 lowers Z&F's error)", *runs.notes())
    if budget != "full":
        notes += (f"caveat: at the {budget} budget no variant is near convergence, so our "
                  "columns measure how fast each variant learns in these few steps (smaller "
                  "nets learn faster here), not what the removed layers are worth; the ImageNet "
                  "comparison needs `--budget=full`",)
    return Table("alexnet_ablation", "AlexNet layer removals (Zeiler & Fergus 2013)", columns,
                 tuple(rows), notes)


def build(budget: str, runs_dir: str, *, overrides: str | None = None,
          data_dir: str | None = None) -> Table:
    """The table at `budget`, its runs in `runs_dir`."""
    return alexnet_ablation_table(budget, runs_dir, overrides=overrides, data_dir=data_dir)
