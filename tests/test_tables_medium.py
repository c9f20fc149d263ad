"""The medium budget's machinery: convergence, verdict rules, seeds, progress/ETA, estimates,
and a tiny variant of the medium settings trained through the loop on an image folder."""

from __future__ import annotations

import json
import os
import re
import shutil

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


# --- the verdict rule, on synthetic per-seed figures -------------------------------------------


def test_comparison_against_a_direct_computation():
    a, b = (70.0, 71.0, 72.0), (68.0, 68.5, 69.0)
    c = harness.Comparison("a", "b", a, b)
    assert c.difference == pytest.approx(71.0 - 68.5)
    assert c.spread == pytest.approx(float(np.std(a, ddof=1)))  # 1.0 > 0.5
    assert c.outcome("higher") == "shown" and c.outcome("lower") == "contradicted"
    # 2.5 points <= 3 x 1.0: inside the margin, whichever sign was expected.
    wide = harness.Comparison("a", "b", a, b, factor=3.0)
    assert wide.outcome("higher") == "not shown" and wide.outcome("lower") == "not shown"
    assert "+2.5 pts (≤ 3 x the larger seed std 1.0 = 3.0; expected higher): not shown" in (
        wide.text("higher"))
    # Two seeds: a spread but not enough seeds for a verdict, however large the difference.
    assert harness.Comparison("a", "b", (90.0, 91.0), (10.0, 11.0)).outcome(
        "higher") == "not shown"
    with pytest.raises(ValueError, match="'higher' or 'lower'"):
        c.outcome("bigger")


def test_combine_needs_every_claim_shown():
    assert harness.combine(["shown", "shown"]) == "reproduced"
    assert harness.combine(["shown", "not shown"]) == "not shown"
    assert harness.combine(["not shown", "contradicted"]) == "not reproduced"
    assert harness.combine([]) == "undecided"


def test_residual_vs_plain_issue_case_one_seed_is_not_shown():
    # results/medium (issue 32): one seed, residual-56 39.8 % vs residual-20 40.1 %.
    errors = {"plain-20": [47.7], "plain-56": [69.7], "residual-20": [40.1],
              "residual-56": [39.8]}
    outcomes, lines = residual_vs_plain.residual_vs_plain_verdict(errors, (20, 56))
    assert outcomes == ["not shown", "not shown"]
    assert harness.combine(outcomes) == "not shown"
    assert "1 seed; a verdict needs ≥ 3" in lines[1] and lines[1].startswith("improvement")


def test_residual_vs_plain_judges_its_halves_separately():
    errors = {"plain-20": [47.0, 48.0, 49.0], "plain-56": [69.0, 70.0, 71.0],
              "residual-20": [40.0, 40.5, 41.0], "residual-56": [39.5, 40.0, 40.5]}
    outcomes, lines = residual_vs_plain.residual_vs_plain_verdict(errors, (20, 56))
    # Degradation: +22 > 2 x 1.0; improvement: 0.5 <= 2 x 0.5.
    assert outcomes == ["shown", "not shown"]
    assert harness.combine(outcomes) == "not shown"
    assert lines[0].startswith("degradation half") and lines[0].endswith(": shown")
    assert lines[1].endswith(": not shown")
    shown = {**errors, "residual-56": [37.5, 38.0, 38.5]}  # 2.5 > 2 x 0.5
    assert residual_vs_plain.residual_vs_plain_verdict(shown, (20, 56))[0] == ["shown", "shown"]
    reversed_ = {**errors, "residual-56": [44.5, 45.0, 45.5]}  # residual-56 clearly worse
    outcomes = residual_vs_plain.residual_vs_plain_verdict(reversed_, (20, 56))[0]
    assert harness.combine(outcomes) == "not reproduced"
    assert residual_vs_plain.residual_vs_plain_verdict(
        {**errors, "plain-56": None}, (20, 56))[0] == ["undecided", "not shown"]


def test_residual_vs_plain_committed_medium_record():
    # results/medium/residual_vs_plain.md (issue 32): the per-seed final training errors of
    # the 12 committed runs (seeds 0, 1, 2). Degradation: +22.7 points > 2 x 1.31; improvement:
    # residual-56 is 1.0 point lower, inside 2 x 1.08, so that half is not shown.
    errors = {"plain-20": [47.70, 47.39, 48.69], "residual-20": [40.06, 38.96, 40.00],
              "plain-56": [69.70, 72.12, 70.06], "residual-56": [39.84, 38.54, 37.70]}
    outcomes = residual_vs_plain.residual_vs_plain_verdict(errors, (20, 56))[0]
    assert outcomes == ["shown", "not shown"]
    assert harness.combine(outcomes) == "not shown"
    gap = np.mean(errors["residual-20"]) - np.mean(errors["residual-56"])
    margin = 2 * max(np.std(errors["residual-20"], ddof=1), np.std(errors["residual-56"], ddof=1))
    assert 0.9 < gap < 1.1 and 2.1 < margin < 2.2 and gap <= margin


def test_filter_sizes_rule():
    def row(block, seeds, params):
        return {"block": block, "top1_seeds": seeds, "params": params}

    rows = [row("5x5", (70.0, 70.4, 70.8), 102_464), row("3x3+3x3", (71.5, 72.0, 72.5), 73_856),
            row("7x7", (69.0, 69.3, 69.6), 200_768),
            row("3x3+3x3+3x3", (71.0, 71.5, 72.0), 110_784)]
    outcomes, lines = filter_sizes.filter_sizes_verdict(rows)
    assert outcomes == ["shown", "shown"] and len(lines) == 2  # +1.6 > 0.5, +2.2 > 0.5
    rows[1]["top1_seeds"] = (70.0, 70.5, 71.0)  # +0.1 <= 0.5: inside the spread
    outcomes, lines = filter_sizes.filter_sizes_verdict(rows)
    assert outcomes == ["not shown", "shown"] and lines[0].endswith("not shown")
    rows[1]["top1_seeds"] = (68.0, 68.5, 69.0)  # -1.9: the stack clearly worse
    assert harness.combine(filter_sizes.filter_sizes_verdict(rows)[0]) == "not reproduced"
    assert filter_sizes.filter_sizes_verdict(rows[:1]) == ([], [])


def _seeds(mean, half_range=0.5):
    return (mean - half_range, mean, mean + half_range)  # sample std = half_range


@pytest.mark.parametrize("means,half_range,expected", [
    # Z&F Table 3 errors as top-1 (100 - error), seed std 0.5: every difference shown.
    ({"full": 59.5, "7": 60.0, "6,7": 55.2, "3,4": 54.6, "3,4,6,7": 28.7}, 0.5, "reproduced"),
    # The lecture's drops 1.1 / 5.7 / 3.0 / 33.5.
    ({"full": 60.0, "7": 58.9, "6,7": 54.3, "3,4": 57.0, "3,4,6,7": 26.5}, 0.5, "reproduced"),
    # 15 < 3 x 5.7 with both differences shown: the ratio is contradicted.
    ({"full": 60.0, "7": 58.9, "6,7": 54.3, "3,4": 57.0, "3,4,6,7": 45.0}, 0.5,
     "not reproduced"),
    # Seed std 13: 25.9 pts of excess is inside 2 x 13.
    ({"full": 59.5, "7": 60.0, "6,7": 55.2, "3,4": 54.6, "3,4,6,7": 28.7}, 13.0, "not shown"),
    # Every drop inside 2 x 1.
    ({"full": 60.0, "7": 61.0, "6,7": 60.5, "3,4": 61.5, "3,4,6,7": 59.0}, 1.0, "not shown"),
])
def test_alexnet_ablation_rule(means, half_range, expected):
    top1 = {name: _seeds(m, half_range) for name, m in means.items()}
    outcomes, measured = alexnet_ablation.alexnet_ablation_verdict(top1)
    assert harness.combine(outcomes) == expected
    assert "pts" in measured


def test_alexnet_ablation_rule_needs_every_variant():
    top1 = {name: _seeds(60.0) for name in ("full", "7", "3,4", "3,4,6,7")}
    assert alexnet_ablation.alexnet_ablation_verdict(top1) == (
        ["undecided"], "needs every variant trained")


def test_final_training_error_window():
    curve = [(s, float(s)) for s in range(50, 1001, 50)]
    # The last 5 % of 1000 steps before step 1000: (950, 1000] -> only step 1000.
    assert residual_vs_plain.final_training_error(curve, 1000) == 1000.0
    assert residual_vs_plain.final_training_error(curve, 1000, 0.1) == 975.0
    assert residual_vs_plain.mean_curve([[(1, 2.0), (2, 4.0)], [(1, 4.0), (3, 1.0)]]) == (
        (1, 3.0),)


def _table_runs(table, budget, tmp_path, seeds=(0, 1, 2)):
    spec = harness.Budget("train_steps=10", settings={"seeds": seeds, "estimate": "5 min"})
    images, labels = np.zeros((4, 8, 8, 3), np.float32), np.arange(4, dtype=np.int32) % 2
    dataset = data.ArrayDataset("r", images, labels, images, labels, 2)
    return harness.Runs(spec, harness.training_config(spec), dataset, str(tmp_path),
                        harness.train_variant, 0.0, table=table, budget=budget)


@pytest.mark.parametrize("budget,testable", [
    ("tiny", False), ("small", False), ("medium_tiny", False), ("medium", True), ("full", True)])
def test_only_verdict_budgets_state_a_verdict(tmp_path, budget, testable):
    runs = _table_runs("residual_vs_plain", budget, tmp_path)
    note = runs.verdict_note(["shown", "shown"], "x", "y", "z")
    if testable:
        assert note.startswith("verdict: reproduced — expected x; rule: y; measured: z")
    else:
        assert note.startswith(f"verdict: budget too small for a verdict ({budget}: ")
        assert "reproduced" not in note and "--budget=medium and --budget=full can test" in note
    assert set(tables.VERDICT_BUDGETS) == set(tables.TRAINED_TABLES)


def test_few_step_runs_are_never_called_converged(tmp_path):
    runs = _table_runs("filter_sizes", "tiny", tmp_path)
    runs.late_changes = {"a": 0.0}
    assert runs.convergence_note() == ("convergence: not judged (10-step runs; the rule "
                                       "needs at least 100 steps)")
    assert harness.converged_text(0.0, steps=2) == "a 2-step run: convergence not judged"
    assert "(converged" in harness.converged_text(0.0, steps=100)


def test_notes_state_estimated_and_measured_wall_time_and_load(tmp_path):
    runs = _table_runs("filter_sizes", "medium", tmp_path)
    machine = runs.notes()[2]
    assert "wall time: estimated 5 min, measured " in machine
    assert re.search(r"load \d+\.\d on \d+ cores at the start, load \d+\.\d on \d+ cores at "
                     r"the end", machine)


def test_resumed_table_states_training_time_summed_over_invocations(tmp_path):
    # Run "a" trained 100 s in an earlier session and 30 s now; "b" finished earlier (40 s).
    runs = _table_runs("filter_sizes", "medium", tmp_path)
    runs.plan({"a": 1.0, "b": 1.0})
    harness.add_run_seconds(str(tmp_path / "a"), 100.0)
    harness.add_run_seconds(str(tmp_path / "a"), 30.0)
    harness.add_run_seconds(str(tmp_path / "b"), 40.0)
    assert harness.run_seconds(str(tmp_path / "a")) == 130.0
    assert harness.run_seconds(str(tmp_path / "never")) == 0.0
    runs.results = [harness.RunResult({}, [], steps_run=4), harness.RunResult({}, [], 0)]
    machine = runs.notes()[2]
    assert "for 4 of the 20 training steps" in machine
    assert machine.endswith("summed over every invocation that trained them: 2:50 (170 s)")


def _write_record(run_dir, config, step, top1):
    os.makedirs(run_dir)
    (run_dir / "config.json").write_text(config.to_json_best_effort())
    (run_dir / "final_metrics.json").write_text(json.dumps({"step": step, "top1": top1}))
    lines = [{"step": s, "split": "train", "loss": 2.0 / s, "accuracy": 0.1 * s}
             for s in (5, 10)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_a_finished_runs_record_is_reused_without_its_checkpoints(tmp_path):
    calls = []
    runs = _table_runs("filter_sizes", "medium", tmp_path)
    runs.trainer = _fake_trainer(calls)
    runs.config.progress = False
    config = runs.config.copy_and_resolve_references()
    config.model, config.model_kwargs, config.seed = "lenet5", {}, 0
    config.progress_label, config.log_every_steps = "elsewhere", 1  # neutral keys may differ
    _write_record(tmp_path / "done", config, 10, 0.75)
    result = runs.train("done", "lenet5", seed=0)
    assert calls == [] and result.metrics == {"top1": 0.75} and result.steps_run == 0
    assert result.curve == [(5, 0.5), (10, 1.0)] and result.loss_curve == [(5, 0.4), (10, 0.2)]
    # Stopped short of the 10 steps, or trained at another learning rate: trained again.
    short = config.copy_and_resolve_references()
    _write_record(tmp_path / "short", short, 9, 0.75)
    other = config.copy_and_resolve_references()
    other.learning_rate = 0.5
    _write_record(tmp_path / "other", other, 10, 0.75)
    assert harness.record_mismatch(str(tmp_path / "other"), runs.config) == [
        f"learning_rate: 0.5 -> {runs.config.learning_rate!r}"]
    for name in ("short", "other"):
        assert runs.train(name, "lenet5", seed=0).metrics == {"top1": 0.6}
    assert calls == [("short", 0), ("other", 0)]
    # With progress on, the table says why it retrains a run it has a record of.
    said = []
    harness.finished_record(str(tmp_path / "short"), config, 10, said.append)
    harness.finished_record(str(tmp_path / "other"), config, 10, said.append)
    assert said == ["its record stops at step 9 of 10", "its record was trained with other "
                    f"settings (learning_rate: 0.5 -> {config.learning_rate!r})"]


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
    # resnet20_cifar ran at half its quiet 270 img/s around a, at a third around b.
    timer = harness.StepTimer(rates={"a": (100.0, 135.0, 1000, 100),
                                     "b": (30.0, 90.0, 1000, 100)})
    lines = harness.estimate_lines("t", timer)
    # quiet: a 200 img/s -> 100,000 images in 500 s; b 90 img/s -> 1,111 s.
    assert lines[0].startswith("a: 100 img/s measured (resnet20_cifar 135), 200 img/s quiet "
                               "-> 8:20")
    assert lines[1].startswith("b: 30 img/s measured (resnet20_cifar 90), 90 img/s quiet "
                               "-> 18:31")
    assert lines[2].startswith("[t] estimated training time on a quiet machine: 26:51")


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
    assert full["top1"] == pytest.approx(61.0)
    assert full["top1_spread"] == pytest.approx(np.std([60.0, 62.0], ddof=1))
    assert full["loss_change"] == pytest.approx(-1.0)
    # A test-size budget: no verdict, and no convergence verdict for 4-step runs.
    assert table.notes[0].startswith("verdict: budget too small for a verdict (medium_tiny")
    assert table.notes[-1].startswith("convergence: not judged (4-step runs")
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
    assert table.notes[0].startswith("verdict: budget too small for a verdict")
    assert "4 steps of batch 8" in " ".join(table.notes)
    for run in os.listdir(runs_dir):  # a fresh checkout keeps only the runs' records
        shutil.rmtree(os.path.join(runs_dir, run, "checkpoints"))
    again = filter_sizes.filter_sizes_table("medium_tiny", runs_dir, **kwargs)
    assert again.rows[0]["top1"] == pytest.approx(row["top1"])
    assert "for 0 of the 8 training steps" in again.notes[-2]
