"""A newcomer's first hour (issue 27): one-line mistakes, --show_config, quiet logs, pinned
versions, self-explaining inspection pictures, progress labels."""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from jaxcnn import train

try:  # the layer-inspection module, renamed from jaxcnn.inspect (issue 25)
    from jaxcnn import inspection as inspect
except ImportError:
    from jaxcnn import inspect
from jaxcnn.train.config import KEY_HELP
from jaxcnn.train.metrics import Progress

LENET = "experiments/configs/lenet5_mnist.py"
THIRD_PARTY_INFO = re.compile(r"^I\d{4} |Unable to initialize backend|^\S+ \S+: I ")


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the entry points must quieten TF/XLA themselves
    return env


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


# Each mistake: (command, exit code, a fragment the one-line message must contain).
MISTAKES = [
    (["train", f"--config={LENET}", "--config.learning_rat=0.1", "--workdir=W"], 2,
     "unknown config key 'learning_rat' (did you mean 'learning_rate'?)"),
    (["train", f"--config={LENET}:learning_rat=0.1", "--workdir=W"], 2,
     "unknown config key 'learning_rat' (did you mean 'learning_rate'?)"),
    (["train", "--config=experiments/configs/lenet5_mnis.py", "--workdir=W"], 2,
     "(did you mean experiments/configs/lenet5_mnist.py?); the configs in experiments/configs/ "
     "are: alexnet_cifar10.py"),
    (["train", f"--config={LENET}:model=lenet", "--workdir=W"], 2,
     "unknown model 'lenet' (did you mean 'lenet5'?); valid names: alexnet"),
    (["summary", "--model=lenet"], 2, "unknown model 'lenet' (did you mean 'lenet5'?)"),
    (["train", f"--config={LENET}:batch_size=abc", "--workdir=W"], 2,
     "config override batch_size=abc: expected int"),
    (["train", f"--config={LENET}", "--config.image_size=0,5", "--workdir=W"], 2,
     "invalid config: config.image_size=(0, 5): expected None"),
    (["train", f"--config={LENET}", "--workdr=W"], 2, "Did you mean: workdir"),
    (["train", f"--config={LENET}"], 2, "--workdir must have a value"),
    (["evaluate", f"--config={LENET}", "--config.batch_szie=8", "--workdir=W"], 2,
     "(did you mean 'batch_size'?)"),
    (["train", "--config=experiments/configs/localize.py:runlocal",
      "--config.task.box_weigth=1", "--workdir=W"], 2, "(did you mean 'task.box_weight'?)"),
    (["detect", "anchors", "--config=experiments/configs/detect_synthetic.py:nosuch=1",
      "--workdir=W"], 2, "unknown config key 'nosuch'"),
    (["faces", "train", "--config=experiments/configs/faces_att.py",
      "--config.task.margn=0.3", "--workdir=W"], 2, "(did you mean 'task.margin'?)"),
    (["inspect_layers", "--config=experiments/configs/lenet5_mnist.py:model_kwargs",
      "--workdir=W", "--output=O"], 2, "config override 'model_kwargs' must look like key=value"),
    (["reproduce", "--table=lenet", "--workdir=W"], 2,
     "flag --table=lenet: value should be one of <lenet5|"),
    (["style_transfer", "--stpes=3"], 2, "Did you mean: steps"),
]


# Runs common.run(SCRIPT.main) once per case in one process per script (each process pays
# JAX's import once), with file descriptor 2 captured per case: everything any library writes.
DRIVER = """
import importlib, json, os, sys, tempfile
from absl import flags
module = importlib.import_module("experiments." + sys.argv[1])
from experiments import common
results = []
for argv in json.loads(sys.argv[2]):
    capture, saved = tempfile.TemporaryFile("w+"), os.dup(2)
    sys.stderr.flush()
    os.dup2(capture.fileno(), 2)
    code = 0
    try:
        common.run(module.main, argv=[module.__file__, *argv])
    except SystemExit as exit:
        code = exit.code
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
    flags.FLAGS.unparse_flags()
    capture.seek(0)
    results.append([code, capture.read()])
print(json.dumps(results))
"""


def test_every_mistake_is_one_line_with_the_fix_and_a_usage_exit_code(tmp_path):
    by_script: dict[str, list] = {}
    for args, code, fragment in MISTAKES:
        args = [a.replace("=W", f"={tmp_path}/w").replace("=O", f"={tmp_path}/o") for a in args]
        by_script.setdefault(args[0], []).append((args[1:], code, fragment))

    def attempt(script):
        cases = by_script[script]
        result = _run([sys.executable, "-c", DRIVER, script,
                       json.dumps([args for args, _, _ in cases])])
        assert result.returncode == 0, result.stderr[-3000:]
        return [(case, *outcome) for case, outcome in zip(
            cases, json.loads(result.stdout.strip().splitlines()[-1]))]

    with ThreadPoolExecutor(3) as pool:
        results = [r for rs in pool.map(attempt, by_script) for r in rs]
    launch = _run(["bash", "launch.sh", "run", "detct"])
    results.append(((["launch.sh run detct"], 2, "no experiment script 'detct' (did you mean "
                     "detect?); scripts: check_results detect evaluate faces"),
                    launch.returncode, launch.stderr))
    assert len(results) == len(MISTAKES) + 1
    for (args, code, fragment), returncode, stderr in results:
        lines = stderr.strip().splitlines()
        assert returncode == code and 1 <= len(lines) <= 2, (args, stderr[-3000:])
        assert fragment in stderr, (args, stderr)
    assert not os.path.exists(tmp_path / "w")  # no mistake left a workdir behind


def test_override_mistakes_raise_one_line_usage_errors_that_old_callers_still_catch():
    config = train.default_config()
    with pytest.raises(KeyError) as error:  # a KeyError for callers written before
        train.override(config, "learning_rat=0.1")
    assert isinstance(error.value, train.UsageError) and error.value.exit_code == 2
    assert str(error.value).startswith("unknown config key 'learning_rat' (did you mean "
                                       "'learning_rate'?)") and "\n" not in str(error.value)
    with pytest.raises(TypeError, match=r"^config override batch_size=abc: expected int, got "
                                        r"str 'abc'$"):
        train.override(config, "batch_size=abc")
    with pytest.raises(ValueError) as error:
        train.validate_config(train.override(train.default_config(),
                                             "learning_rate=-1,optimizer=adamm"))
    assert isinstance(error.value, train.UsageError) and "\n" not in str(error.value)
    assert "config.learning_rate=-1.0" in str(error.value) and "config.optimizer=" in str(
        error.value)
    # A scalar for a tuple key is a 1-tuple, as --config.image_size=32 makes it: 32 -> (32, 32).
    config = train.override(train.default_config(), "image_size=32,decay_epochs=30")
    train.validate_config(config)
    assert config.image_size == (32, 32) and config.decay_epochs == (30,)


def test_key_help_has_one_line_for_every_default_key():
    assert set(KEY_HELP) == set(train.default_config().keys())
    assert all(text and "\n" not in text and len(text) <= 100 for text in KEY_HELP.values())


def test_show_config_prints_each_key_with_value_default_and_meaning():
    result = _run([sys.executable, "-m", "experiments.train", f"--config={LENET}:image_size=32",
                   "--show_config"])  # no --workdir needed just to look
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == set(train.default_config().keys())
    assert re.match(r"learning_rate +0\.002 +0\.001 +peak learning rate", rows["learning_rate"])
    assert re.match(r"image_size +\(32, 32\) +None +\(height, width\)", rows["image_size"])
    assert rows["progress_label"].split()[1:3] == ["''", "''"]


@pytest.mark.slow  # a whole table in a subprocess; test_tables trains one in process
def test_a_tiny_table_prints_no_third_party_info_and_verbose_brings_it_back(tmp_path):
    result = _run([sys.executable, "-m", "experiments.reproduce", "--table=filter_sizes",
                   "--budget=tiny", f"--workdir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    noisy = [line for line in (result.stdout + result.stderr).splitlines()
             if THIRD_PARTY_INFO.search(line)]
    assert noisy == []
    assert (tmp_path / "filter_sizes.md").exists()
    # Each progress line names the table's run it belongs to ("[variant/seed] step 2/2 ...").
    progress = [line for line in result.stderr.splitlines()
                if re.search(r"\bstep \d+/\d+ ", line)]
    assert progress and all(re.match(r"\[\S+/\S+\] step ", line) for line in progress), progress
    check = ("import sys; from absl import logging; from experiments import common, summary; "
             "common.parse_flags(sys.argv); import os; "
             "print(logging.get_verbosity(), os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    quiet = _run([sys.executable, "-c", check, "--model=lenet5"])
    loud = _run([sys.executable, "-c", check, "--model=lenet5", "--verbose"])
    assert quiet.stdout.split() == ["-1", "2"], quiet.stderr  # absl's WARNING is -1
    assert loud.stdout.split() == ["0", "0"], loud.stderr  # INFO, and TF's C++ INFO too


def _pins() -> dict[str, str]:
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, version = line.split("==")
                pins[canonicalize_name(name)] = version
    return pins


def test_installed_versions_are_the_pinned_ones():
    pins = _pins()
    wrong = {}
    for name, version in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed == "not installed" or Version(installed).public != version:
            wrong[name] = (version, installed)
    assert wrong == {}, f"pinned vs installed (see README 'Pinned versions'): {wrong}"
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    declared = [*setup["options"]["install_requires"].split("\n"),
                *setup["options.extras_require"]["dev"].split("\n")]
    names = {canonicalize_name(Requirement(r).name) for r in declared
             if r.strip() and not r.strip().startswith("#")}
    assert names - set(pins) == set()  # every dependency is pinned
    assert "pycocotools" in setup["options"]["install_requires"]  # COCO JSON at run time


def test_filter_grid_has_a_title_readable_cells_and_unit_numbers():
    kernel = np.random.default_rng(0).normal(size=(5, 5, 3, 12))
    plain = inspect.filter_grid(kernel)
    grid = inspect.filter_grid(kernel, title="lenet5: first-layer filters (5x5x3)")
    h = inspect.TEXT_HEIGHT
    side = 5 * -(-36 // 5)  # 40 px per 5x5 filter (8 px per weight)
    assert side >= 24
    assert plain.shape == (2 * (side + 4 + h), 8 * (side + 4), 3)
    assert grid.shape[0] == plain.shape[0] + h and grid.shape[1] >= plain.shape[1]
    assert (grid[:h] < 128).any() and (grid[:h] == 255).mean() > 0.7  # black text on white
    np.testing.assert_array_equal(grid[h:, : plain.shape[1]], plain)
    # Filter 0 is its 5x5 weights in 8x8 blocks; its number sits in the band under it.
    cell = plain[2 : 2 + side, 2 : 2 + side]
    np.testing.assert_array_equal(cell, np.repeat(np.repeat(cell[::8, ::8], 8, 0), 8, 1))
    assert (plain[2 + side : 2 + side + h, : side + 4] < 128).any()
    assert not (plain[2 + side : 2 + side + h, 8 * (side + 4) - 4:] < 128).any()
    # Units 12-15 do not exist: their cells and number bands stay white.
    assert (plain[side + 4 + h :, 4 * (side + 4) :] == 255).all()


def test_patch_grid_has_a_title_and_a_label_under_each_row():
    rng = np.random.default_rng(1)
    patches = [[rng.random((10, 10, 3)) for _ in range(3)] for _ in range(2)]
    saliencies = [[rng.random((10, 10, 1)) for _ in range(3)] for _ in range(2)]
    side, h = 48, inspect.TEXT_HEIGHT
    grid = inspect.patch_grid(patches, saliencies, side=side, title="lenet5, layer 1 act1: "
                              "receptive field 5 px", row_labels=["unit 3, purity 0.67", ""])
    row = side + 4 + h
    assert grid.shape == (h + 2 * row, 3 * (2 * side + 6), 3)
    assert (grid[:h] < 128).any()  # the title
    assert (grid[h + side + 4 : h + row] < 128).any()  # unit 3's label under the first row
    assert not (grid[h + row + side + 4 :] < 128).any()  # an empty label draws nothing
    # The first patch is its 10x10 pixels in 4x4 blocks, centred in the 48 px cell.
    first = grid[h + 2 + 4 : h + 2 + 44, 2 + 4 : 2 + 44]
    np.testing.assert_array_equal(first[::4, ::4], (patches[0][0] * 255).astype(np.uint8))


def test_progress_lines_name_their_part():
    assert Progress(4, 0, label="crop_classifier").line(4, 32, {"loss": 1.0}).startswith(
        "[crop_classifier] step 4/4  loss 1  ")
    assert Progress(4, 0).line(4, 32, {}).startswith("step 4/4")
    assert train.default_config().progress_label == ""
