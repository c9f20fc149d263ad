"""The lecture's tables: exact counting tables, and the files every table writes."""

import csv
import io
import os
import re

import pytest

from experiments import reproduce, tables
from experiments.tables import (
    alexnet_ablation,
    architectures,
    filter_sizes,
    harness,
    inception_cost,
    lenet5,
    render,
    residual_vs_plain,
)
from jaxcnn import train
from jaxcnn.data import KNOWN_DATASETS
from jaxcnn.models import ResNet, inception

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_SIGNATURE and os.path.getsize(path) > 1000


def _md_grid(path):
    """(header cells, number of body rows) of the markdown grid in `path`."""
    lines = [line for line in open(path).read().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "").replace(":", "")) == {"-"}
    return header, len(lines) - 2


def _csv_rows(path):
    return list(csv.DictReader(open(path)))


def _fake_trainer(calls):
    """A trainer that records its calls and returns fixed metrics, without training."""

    def trainer(config, dataset, workdir, model):
        calls.append((config, model))
        top1 = 0.9 - 0.1 * len(calls)
        return harness.RunResult({"top1": top1, "loss": 0.5},
                                 [(10, 0.5), (20, 0.7), (30, 0.9 - 0.05 * len(calls))])

    return trainer


# --- exact tables ------------------------------------------------------------------------------


def test_lenet5_table_is_the_lecture_table(tmp_path):
    rows = lenet5.lenet5_rows()
    got = [(r["layer"], r["module"], r["shape"], r["size"], r["params"]) for r in rows]
    assert got == [
        ("Input", "input", (32, 32, 3), 3_072, 0),
        ("CONV1", "conv1", (28, 28, 6), 4_704, 456),
        ("POOL1", "pool1", (14, 14, 6), 1_176, 0),
        ("CONV2", "conv2", (10, 10, 16), 1_600, 2_416),
        ("POOL2", "pool2", (5, 5, 16), 400, 0),
        ("FC3", "fc3", (120,), 120, 48_120),
        ("FC4", "fc4", (84,), 84, 10_164),
        ("Softmax", "fc5", (10,), 10, 850),
    ]
    paths = reproduce.run("lenet5", str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["lenet5.md", "lenet5.csv"]
    text = open(paths[0]).read()
    assert "| CONV1 | conv1 | (28, 28, 6) | 4,704 | 456 |" in text
    assert "total parameters: 62,006" in text and "machine:" in text
    assert re.search(r"wall time: estimated a few seconds \(counts only\), measured 0:0\d "
                     r"\(\d+\.\d s; load \d+\.\d on \d+ cores at the start", text)
    csv_rows = _csv_rows(paths[1])
    assert [r["layer"] for r in csv_rows][1:] == ["CONV1", "POOL1", "CONV2", "POOL2", "FC3",
                                                 "FC4", "Softmax"]
    assert csv_rows[1]["shape"] == "28x28x6" and csv_rows[1]["params"] == "456"


def test_inception_cost_lecture_example_and_every_block():
    rows = inception_cost.inception_cost_rows()
    example = rows[0]
    assert (example["direct_macs"], example["reduce_macs"], example["conv_macs"],
            example["bottleneck_macs"]) == (120_422_400, 2_408_448, 10_035_200, 12_443_648)
    blocks = rows[1:]
    assert [r["where"] for r in blocks] == [name for name in inception.BLOCKS for _ in (0, 1)]
    # The channel counts read from the model's parameters are the paper's Table 1.
    for row in blocks:
        _, red3, out3, red5, out5, _ = inception.BLOCKS[row["where"]]
        expected = (red5, out5) if row["branch"] == "5x5" else (red3, out3)
        assert (row["reduce"], row["out_channels"]) == expected
        assert row["bottleneck_macs"] == row["reduce_macs"] + row["conv_macs"]
        assert row["direct_macs"] > row["bottleneck_macs"]
    assert {r["where"]: r["in_channels"] for r in blocks}["inception4a"] == 480
    five_3a = blocks[1]
    assert five_3a["branch"] == "5x5"
    assert {k: five_3a[k] for k in ("direct_macs", "bottleneck_macs")} == {
        "direct_macs": 120_422_400, "bottleneck_macs": 12_443_648}


def test_filter_size_counts():
    rows = {r["block"]: r for r in filter_sizes.filter_size_rows(64, 32)}
    got = {name: (r["receptive_field"], r["weights_per_c2"], r["params"], r["macs"])
           for name, r in rows.items()}
    assert got == {
        "5x5": (5, 25, 102_464, 104_857_600),
        "3x3+3x3": (5, 18, 73_856, 75_497_472),
        "7x7": (7, 49, 200_768, 205_520_896),
        "3x3+3x3+3x3": (7, 27, 110_784, 113_246_208),
    }


def test_alexnet_parameter_columns_and_references():
    rows = {r["removed_layers"] or "full": r for r in alexnet_ablation.alexnet_param_rows()}
    assert rows["full"]["params"] == 61_100_840
    assert {k: r["params_removed"] for k, r in rows.items()} == {
        "full": 0, "7": 16_781_312, "6,7": 49_414_144, "3,4": 1_696_384,
        "3,4,6,7": 51_110_528}
    assert {k: r["lecture_drop"] for k, r in rows.items()} == {
        "full": None, "7": 1.1, "6,7": 5.7, "3,4": 3.0, "3,4,6,7": 33.5}
    assert {k: r["zf_top1_err"] for k, r in rows.items()} == {
        "full": 40.5, "7": 40.0, "6,7": 44.8, "3,4": 45.4, "3,4,6,7": 71.3}
    assert rows["6,7"]["lecture_params_removed"] == "50 M"


# --- rendering and errors ----------------------------------------------------------------------


def test_markdown_and_csv_rendering():
    table = render.Table("t", "A title", (render.Column("a", "A"),
                                          render.Column("b", "B", ".1f"),
                                          render.Column("c", "C")),
                         ({"a": "x", "b": 1.25, "c": 1234567}, {"a": "y", "b": None, "c": 0}),
                         ("a note",))
    assert render.to_markdown(table) == (
        "### A title\n\n| A | B | C |\n|---|---:|---:|\n| x | 1.2 | 1,234,567 |\n"
        "| y | — | 0 |\n\n- a note\n")
    assert list(csv.reader(io.StringIO(render.to_csv(table)))) == [
        ["a", "b", "c"], ["x", "1.25", "1234567"], ["y", "", "0"]]


def test_bad_names_raise_listing_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid tables: lenet5, inception_cost"):
        tables.build_table("lenet7")
    with pytest.raises(ValueError, match="valid budgets: tiny, small, medium, full"):
        tables.build_table("filter_sizes", "huge", str(tmp_path))
    with pytest.raises(ValueError, match="valid: full, 7, 6,7"):
        alexnet_ablation.alexnet_param_rows(variants=("5,6",))
    with pytest.raises(ValueError, match="6n \\+ 2"):
        residual_vs_plain.cifar_resnet(21, plain=True)


# --- trained tables at a tiny budget -----------------------------------------------------------


def test_filter_sizes_trains_through_the_loop_and_writes_files(tmp_path):
    # One real variant (XLA compiles dominate on 2 cores); the others have their own tests.
    table = filter_sizes.filter_sizes_table("tiny", str(tmp_path / "runs"),
                                            overrides="progress=False", variants=("3x3+3x3",))
    paths = render.write_table(table, str(tmp_path))
    header, n = _md_grid(paths[0])
    assert n == 1 and header[:2] == ["block (C -> C)", "receptive field"]
    (row,) = _csv_rows(paths[1])
    assert row["block"] == "3x3+3x3" and row["params"] == "73856"
    assert 0.0 <= float(row["top1"]) <= 100.0
    assert os.path.exists(tmp_path / "runs" / "3x3_3x3" / "metrics.jsonl")
    notes = open(paths[0]).read()
    assert "2 steps of batch 8" in notes and "16 test" in notes and "machine:" in notes


def test_filter_sizes_all_variants_structure(tmp_path):
    calls = []
    table = filter_sizes.filter_sizes_table("tiny", str(tmp_path), trainer=_fake_trainer(calls))
    assert [c.model_kwargs.kernels for c, _ in calls] == [(5,), (3, 3), (7,), (3, 3, 3)]
    assert all(c.model == "filter_size_net" and c.train_steps == 2 for c, _ in calls)
    paths = render.write_table(table, str(tmp_path))
    assert _md_grid(paths[0])[1] == 4 and len(_csv_rows(paths[1])) == 4


def test_resumed_runs_are_reported_with_the_steps_trained(tmp_path):
    # Two variants of 2 tiny-budget steps each; each call trained 1 step (resumed at step 1).
    def resumed(config, dataset, workdir, model):
        return harness.RunResult({"top1": 0.5}, [(2, 0.5)], steps_run=1)

    table = filter_sizes.filter_sizes_table("tiny", str(tmp_path), variants=("5x5", "7x7"),
                                            trainer=resumed)
    assert table.notes[-2].endswith(" at the end) for 2 of the 4 training steps (the rest "
                                    "were resumed from finished or interrupted runs in runs_dir)")
    assert [row["top1"] for row in table.rows] == [50.0, 50.0]


def test_alexnet_ablation_structure(tmp_path):
    calls = []
    table = alexnet_ablation.alexnet_ablation_table("tiny", str(tmp_path),
                                                    trainer=_fake_trainer(calls))
    assert [tuple(c.model_kwargs.drop_layers) for c, _ in calls] == [
        (), (7,), (6, 7), (3, 4), (3, 4, 6, 7)]
    assert {c.model for c, _ in calls} == {"alexnet"}
    paths = render.write_table(table, str(tmp_path))
    header, n = _md_grid(paths[0])
    assert n == 5 and "lecture drop (pts)" in header and "Z&F val top-1 err %" in header
    rows = _csv_rows(paths[1])
    assert [r["params_removed"] for r in rows] == ["0", "16781312", "49414144", "1696384",
                                                   "51110528"]
    assert rows[0]["drop"] == "" and float(rows[1]["drop"]) == pytest.approx(10.0)
    assert float(rows[2]["zf_increase"]) == pytest.approx(4.3)
    assert "64x64" in open(paths[0]).read()


def test_residual_vs_plain_structure_and_plot(tmp_path):
    calls = []
    table = residual_vs_plain.residual_vs_plain_table("tiny", str(tmp_path), depths=(8, 14),
                                                      trainer=_fake_trainer(calls))
    assert [(m.plain, len(m.stage_sizes) and m.stage_sizes[0]) for _, m in calls] == [
        (True, 1), (False, 1), (True, 2), (False, 2)]
    assert all(isinstance(m, ResNet) and tuple(m.widths) == (2, 4, 8) for _, m in calls)
    paths = render.write_table(table, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == [
        "residual_vs_plain.md", "residual_vs_plain.csv", "residual_vs_plain.png"]
    assert _is_png(paths[2])
    rows = _csv_rows(paths[1])
    assert [r["network"] for r in rows] == ["plain-8", "residual-8", "plain-14", "residual-14"]
    assert float(rows[0]["train_error"]) == pytest.approx(15.0)
    assert set(table.series) == {"plain-8", "residual-8", "plain-14", "residual-14"}


def test_architectures_counts_and_throughput(tmp_path):
    table = architectures.architectures_table("tiny", names=("lenet5", "resnet20_cifar"))
    rows = {r["model"]: r for r in table.rows}
    assert rows["lenet5"]["params"] == 61_706 and rows["resnet20_cifar"]["params"] == 269_722
    assert rows["lenet5"]["train_ips"] > 0 and rows["lenet5"]["infer_ips"] > 0
    assert rows["resnet20_cifar"]["train_ips"] is None
    paths = render.write_table(table, str(tmp_path))
    assert _is_png(paths[2])
    assert "| resnet20_cifar | 32x32x3 | 269,722 | 40.6 | — | — | — |" in open(paths[0]).read()
    assert _md_grid(paths[0])[1] == 2 and len(_csv_rows(paths[1])) == 2


def test_architectures_reports_a_failing_model_and_times_the_rest(monkeypatch):
    def broken(name, side, batch, steps):
        raise ValueError("no gradient")

    monkeypatch.setattr(architectures, "measure_throughput", broken)
    table = architectures.architectures_table("tiny", names=("lenet5",))
    assert table.rows[0]["train_ips"] is None and table.rows[0]["params"] == 61_706
    assert any("timing failed (—): lenet5: ValueError: no gradient" in n for n in table.notes)


@pytest.mark.parametrize("name", tables.TRAINED_TABLES)
def test_every_budget_is_a_valid_training_config(name):
    for budget in tables.BUDGETS:
        config = harness.training_config(tables.TRAINING_BUDGETS[name][budget], "seed=3",
                                         data_dir="/data/tfds")
        train.check_keys(config)
        assert config.seed == 3 and config.data_dir == "/data/tfds"
        if budget == "full":
            assert config.dataset in KNOWN_DATASETS and config.tensorboard
        elif budget == "medium":
            assert config.dataset == "cifar10" and config.augment == "crop_flip"
            assert config.optimizer == "momentum" and config.schedule == "cosine"
            assert config.train_steps and config.checkpoint_every_steps <= 500
        else:
            assert config.dataset == "embedded_mnist" and config.train_steps


def test_seeds_flag_parses_and_replaces_the_budgets_seeds(tmp_path):
    from absl import app

    assert reproduce.parse_seeds(["0", "1", "2"]) == (0, 1, 2)
    assert reproduce.parse_seeds(None) is None
    with pytest.raises(app.UsageError, match="--seeds: expected integers like 0,1,2"):
        reproduce.parse_seeds(["0", "one"])
    calls = []
    tables.build_table("filter_sizes", "tiny", str(tmp_path), trainer=_fake_trainer(calls),
                       seeds=(4, 5, 6), overrides="progress=False")
    assert [c.seed for c, _ in calls] == [4, 5, 6] * 4
