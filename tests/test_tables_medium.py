"""The medium budget's machinery: convergence, verdict rules, seeds, progress/ETA, estimates,
and a tiny variant of the medium settings trained through the loop on an image folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from experiments import tables
from experiments.tables import alexnet_ablation, filter_sizes, harness, residual_vs_plain
from jaxcnn import data


def test_late_loss_change_against_a_direct_computation():
    steps = np.arange(10, 1001, 10)
    loss = 2.0 / (1.0 + steps / 100.0)
    curve = list(zip(steps.tolist(), loss.tolist()))
    # Windows of 0.05 x 1000 = 50 steps ending at 900 and at 1000.
    before = loss[(steps > 850) & (steps <= 900)].mean()
    after = loss[(steps > 950) & (steps <= 1000)].mean()
    assert harness.late_loss_change(curve, 1000) == pytest.approx((before - after) / before)
    assert 0.05 < harness.late_loss_change(curve, 1000) < 0.15  # 1/(1+x) still falls ~9 %
    assert harness.late_loss_change([(s, 0.7) for s in steps.tolist()], 1000) == 0.0
    assert harness.late_loss_change([(1000, 0.7)], 1000) is None
    assert "NOT converged" in harness.converged_text(0.09)
    assert "-3.0 % (converged" in harness.converged_text(0.03)


def test_filter_sizes_rule():
    def row(block, top1, spread, params):
        return {"block": block, "top1": top1, "top1_spread": spread, "params": params}

    rows = [row("5x5", 70.0, 0.4, 102_464), row("3x3+3x3", 69.7, 0.2, 73_856),
            row("7x7", 69.0, 0.3, 200_768), row("3x3+3x3+3x3", 71.0, 0.5, 110_784)]
    reproduced, lines = filter_sizes.filter_sizes_verdict(rows)
    assert reproduced is True and len(lines) == 2  # 69.7 >= 70.0 - 0.4
    rows[1]["top1"] = 69.5  # 69.5 < 69.6: outside the spread
    assert filter_sizes.filter_sizes_verdict(rows)[0] is False
    assert filter_sizes.filter_sizes_verdict(rows[:1])[0] is None


@pytest.mark.parametrize("drops,spread,expected", [
    ({"7": -0.5, "6,7": 4.3, "3,4": 4.9, "3,4,6,7": 30.8}, 1.0, True),  # Z&F Table 3
    ({"7": 1.1, "6,7": 5.7, "3,4": 3.0, "3,4,6,7": 33.5}, 1.0, True),  # the lecture
    ({"7": 1.1, "6,7": 5.7, "3,4": 3.0, "3,4,6,7": 15.0}, 1.0, False),  # 15 < 3 x 5.7
    ({"7": -0.5, "6,7": 4.3, "3,4": 4.9, "3,4,6,7": 30.8}, 13.0, False),  # 25.9 < 2 x 13
    ({"7": -2.0, "6,7": -1.0, "3,4": -3.0, "3,4,6,7": 1.5}, 1.0, False),  # 1.5 < 2 x 1
    ({"7": 1.0, "6,7": None, "3,4": 3.0, "3,4,6,7": 33.5}, 1.0, None),
])
def test_alexnet_ablation_rule(drops, spread, expected):
    assert alexnet_ablation.alexnet_ablation_verdict(drops, spread)[0] is expected


def test_residual_vs_plain_rule_and_final_error():
    errors = {"plain-20": 10.0, "plain-56": 14.0, "residual-20": 9.0, "residual-56": 6.0}
    assert residual_vs_plain.residual_vs_plain_verdict(errors, (20, 56))[0] is True
    assert residual_vs_plain.residual_vs_plain_verdict({**errors, "plain-56": 9.5},
                                                       (20, 56))[0] is False
    assert residual_vs_plain.residual_vs_plain_verdict(errors, (20,))[0] is None
    curve = [(s, float(s)) for s in range(50, 1001, 50)]
    # The last 5 % of 1000 steps before step 1000: (950, 1000] -> only step 1000.
    assert residual_vs_plain.final_training_error(curve, 1000) == 1000.0
    assert residual_vs_plain.final_training_error(curve, 1000, 0.1) == 975.0


def test_progress_eta_weights_runs_by_their_cost(tmp_path):
    spec = harness.Budget("train_steps=10")
    images, labels = np.zeros((4, 8, 8, 3), np.float32), np.arange(4, dtype=np.int32) % 2
    dataset = data.ArrayDataset("r", images, labels, images, labels, 2)
    runs = harness.Runs(spec, harness.training_config(spec), dataset, str(tmp_path),
                        harness.train_variant, 0.0, table="t")
    os.makedirs(tmp_path / "done")
    (tmp_path / "done" / "final_metrics.json").write_text("{}")
    runs.plan({"done": 1.0, "a": 1.0, "b": 3.0})  # costs 10, 10, 30; "done" already finished
    assert runs.finished == {"done"}
    runs.timed_work, runs.timed_seconds = 10.0, 100.0  # 0.1 work per second
    line = runs.progress_line("a")
    assert line.startswith("[t] run 2/3 a: 20 % of the table's work done")
    assert line.endswith("table ETA 6:40")  # 40 work left / 0.1 per second = 400 s


def test_estimate_scales_by_the_reference_rate():
    timer = harness.StepTimer(rates={"a": (100.0, 1000, 100), "b": (50.0, 1000, 100)})
    lines = harness.estimate_lines("t", timer, calibration_ips=135.0)  # busy: half speed
    # quiet: a 200 img/s -> 100,000 images in 500 s; b 100 img/s -> 1000 s.
    assert lines[0].startswith("a: 100 img/s measured, 200 img/s quiet -> 8:20")
    assert lines[1].startswith("b: 50 img/s measured, 100 img/s quiet -> 16:40")
    assert lines[2].startswith("[t] estimated training time on a quiet machine: 25:00")


def _fake_trainer(calls):
    def trainer(config, dataset, workdir, model):
        calls.append((os.path.basename(workdir), config.seed))
        top1 = {0: 0.60, 1: 0.62}[config.seed]
        return harness.RunResult({"top1": top1}, [(4, 0.5)], 4, [(3, 1.0), (4, 0.99)])

    return trainer


def _image_folder(root, per_class=6, classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 2)):
        for name in classes:
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return f"folder:{root}"


def test_medium_tiny_seeds_structure(tmp_path):
    data = _image_folder(tmp_path / "images")
    calls = []
    table = tables.build_table("alexnet_ablation", "medium_tiny", str(tmp_path / "runs"),
                               data=data, overrides="progress=False",
                               trainer=_fake_trainer(calls))
    assert calls[:2] == [("full_seed0", 0), ("full_seed1", 1)] and len(calls) == 10
    full = table.rows[0]
    assert full["top1"] == pytest.approx(61.0) and full["top1_spread"] == pytest.approx(2.0)
    assert full["loss_change"] == pytest.approx(-1.0)
    # Every variant measured the same: drops 0, so the rule fails.
    assert table.notes[0].startswith("verdict: not reproduced")
    assert any("2 seeds (0, 1" in note and "crop_flip augmentation" in note
               for note in table.notes)


@pytest.mark.slow  # two real runs and a resume: ~10 s alone, ~45 s on a busy 2-core machine
def test_medium_tiny_trains_through_the_loop_and_resumes(tmp_path):
    data = _image_folder(tmp_path / "images")
    runs_dir = str(tmp_path / "runs")
    kwargs = {"overrides": f"dataset={data!r},progress=False", "variants": ("3x3+3x3",)}
    table = filter_sizes.filter_sizes_table("medium_tiny", runs_dir, **kwargs)
    (row,) = table.rows
    assert 0.0 <= row["top1"] <= 100.0 and row["top1_spread"] is not None
    assert row["loss_change"] is not None
    assert sorted(os.listdir(runs_dir)) == ["3x3_3x3_seed0", "3x3_3x3_seed1"]
    assert table.notes[0].startswith("verdict: undecided")  # no complete pair
    assert "4 steps of batch 8" in " ".join(table.notes)
    again = filter_sizes.filter_sizes_table("medium_tiny", runs_dir, **kwargs)
    assert again.rows[0]["top1"] == pytest.approx(row["top1"])
    assert "for 0 of the 8 training steps" in again.notes[-2]
