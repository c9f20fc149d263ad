"""Issue 13: diverged models never score, bad data never trains silently, errors say what to do."""

import configparser
import dataclasses
import io
import json
import os
import struct
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, run_module
from PIL import Image

from jaxcnn import data as data_lib
from jaxcnn import losses, models, tasks, train
from jaxcnn.tasks import classification

LENET_CONFIG = "experiments/configs/lenet5_mnist.py"


def small_config(**overrides):
    config = train.default_config()
    config.update(model="lenet5", dataset="embedded_mnist", image_size=(32, 32), batch_size=32,
                  eval_batch_size=64, train_steps=6, learning_rate=1e-3, schedule="constant",
                  log_every_steps=1, checkpoint_every_steps=2, progress=False,
                  tensorboard=False, async_checkpoints=False)
    config.update(overrides)
    return config


class Linear(nn.Module):
    """Logits linear in the pixels: compiles in a fraction of LeNet-5's time, same loop."""

    num_classes: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def toy():
    """Two classes of 8x8 images: 128 to train, 10 to test."""
    rng = np.random.default_rng(0)
    x = rng.random((138, 8, 8, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
    return data_lib.ArrayDataset("toy", x[:128], y[:128], x[128:], y[128:], 2)


# --- 1. evaluation that cannot be fooled ------------------------------------------------------


def test_nonfinite_logits_are_wrong_and_counted():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 10)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 5], np.int32)
    logits[np.arange(6), labels] = 5.0  # every finite row ranks its label first
    logits[1] = np.nan  # a diverged row: nothing is "greater" than NaN
    logits[2, 7] = np.inf
    logits[3, 3] = np.nan  # only the label's logit is NaN
    mask = np.array([1, 1, 1, 1, 1, 0], np.float32)  # the last row is padding
    sums = jax.device_get(jax.jit(losses.classification_eval_sums)(logits, labels, mask))
    # Brute force: real rows 0..4; rows 1, 2, 3 are non-finite, so only row 0 and row 4 count.
    assert float(sums["top1"]) == 2.0 and float(sums["top5"]) == 2.0
    assert float(sums["nonfinite"]) == 3.0 and float(sums["count"]) == 5.0
    assert not np.isfinite(float(sums["loss"]))  # the loss does not hide the NaN rows
    all_nan = jnp.full((4, 10), jnp.nan)
    assert float(losses.topk_correct(all_nan, jnp.arange(4), 5).sum()) == 0.0  # was 4


def test_evaluate_reports_nonfinite_as_a_count(toy):
    diverged = train.Task(
        model=Linear(), dataset=toy,
        loss_fn=lambda out, batch: losses.classification_loss(out, batch["label"]),
        eval_fn=lambda out, batch: losses.classification_eval_sums(
            out * jnp.nan, batch["label"], batch["mask"]))
    program = train.build_program(small_config(eval_batch_size=4), diverged)
    result = train.evaluate(program, program.init_state())
    # 10 examples in batches of 4 (the last padded by 2): every one diverged, none correct.
    assert result["nonfinite"] == 10.0 and result["count"] == 10.0
    assert result["top1"] == 0.0 and result["top5"] == 0.0


class _Poisoned:
    """A dataset whose train step `step` (1-based) has a NaN image or NaN gradients."""

    def __init__(self, base, step, kind):
        self.base, self.step, self.kind = base, step, kind

    def __getattr__(self, name):
        return getattr(self.base, name)

    def train_batches(self, global_batch, *, seed, start_step=0, **kw):
        batches = self.base.train_batches(global_batch, seed=seed, start_step=start_step, **kw)
        for step, batch in enumerate(batches, start=start_step + 1):
            hit = step == self.step
            batch = {**batch, "poison": np.full(len(batch["label"]),
                                                float(hit and self.kind == "grad"), np.float32)}
            if hit and self.kind == "input":
                batch["image"] = batch["image"].copy()
                batch["image"][0] = np.nan
            yield batch


@jax.custom_vjp
def _nan_gradient_if(x, flag):
    return x


_nan_gradient_if.defvjp(
    lambda x, flag: (x, flag),
    lambda flag, g: (g * jnp.where(flag > 0, jnp.nan, 1.0), jnp.zeros_like(flag)))


def _run_poisoned(tmp_path, toy, step, kind):
    config = small_config(image_size=None)
    task = classification.make_task(train.resolve_platform(config),
                                    _Poisoned(toy, step, kind), model=Linear())
    task = dataclasses.replace(task, loss_fn=lambda out, batch: (
        losses.classification_loss(_nan_gradient_if(out, batch["poison"][0]), batch["label"])))
    with pytest.raises(FloatingPointError) as error:
        train.train_and_evaluate(config, str(tmp_path), task=task)
    return str(error.value)


def test_last_good_checkpoint_has_finite_params_and_next_loss(tmp_path, toy):
    # Step 4's loss is finite but its update is NaN: the old loop saved NaN parameters at step
    # 4 and called that checkpoint good when the loss of step 5 came out NaN.
    message = _run_poisoned(tmp_path / "grad", toy, 4, "grad")
    assert "param_norm became nan at step 4; last good checkpoint: step 2" in message
    assert "grad_clip_norm" in message  # what to do
    assert train.checkpoint.saved_steps(str(tmp_path / "grad" / "checkpoints")) == [2]  # no 4
    # A NaN input at step 3: the parameters saved at step 2 are finite, but the loss of the step
    # after them is not, so that checkpoint is not called good (it was, before).
    message = _run_poisoned(tmp_path / "input", toy, 3, "input")
    assert "loss became nan at step 3; last good checkpoint: none" in message
    assert "step 2 was saved but the loss after it is nan" in message


# --- 2. labels and datasets validated at load time ----------------------------------------


def _npz(path, y_train, y_test, side=4):
    x = np.zeros((len(y_train), side, side), np.uint8)
    np.savez(path, x_train=x, y_train=np.asarray(y_train), y_test=np.asarray(y_test),
             x_test=np.zeros((len(y_test), side, side), np.uint8))
    return f"npz:{path}"


def test_npz_labels_are_validated_naming_file_and_key(tmp_path):
    ten = list(range(10))
    stray = _npz(tmp_path / "stray.npz", ten + [57], ten)
    with pytest.raises(ValueError, match=r"stray\.npz: y_train has no examples of class\(es\) "
                                         r"\[10, 11, .*largest label is 57"):
        data_lib.get_dataset(stray)  # was a 58-class dataset
    with pytest.raises(ValueError, match=r"y_train\[10\] = 57 is outside \[0, 10\)"):
        data_lib.get_dataset(stray, num_classes=10)
    config = small_config(dataset=stray, num_classes=10, image_size=None)
    with pytest.raises(ValueError, match=r"stray\.npz: y_train\[10\] = 57"):
        tasks.build(config)  # config.num_classes reaches the loader
    floats = _npz(tmp_path / "floats.npz", [0.0, 1.7], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"floats\.npz: y_train: labels must be integer"):
        data_lib.get_dataset(floats)  # was truncated to [0, 1]
    one = _npz(tmp_path / "one.npz", [0, 0], [0])
    with pytest.raises(ValueError, match=r"one\.npz: found 1 class.*at least two"):
        data_lib.get_dataset(one)
    empty = _npz(tmp_path / "empty.npz", [0, 1], np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"empty\.npz: x_test is empty"):
        data_lib.get_dataset(empty)  # was numpy's "zero-size array to reduction operation"
    ok = data_lib.get_dataset(_npz(tmp_path / "ok.npz", [0, 1, 2], [2, 1, 0]))
    assert ok.num_classes == 3 and ok.y_train.dtype == np.int32


def _write_images(folder, count, shape, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(os.path.join(folder, f"{i}.png"))
    return arrays


def test_image_folder_classes_and_files_are_validated(tmp_path):
    _write_images(tmp_path / "one" / "cat", 3, (6, 6, 3))
    with pytest.raises(ValueError, match="found 1 class.*at least two"):
        data_lib.get_dataset(f"folder:{tmp_path / 'one'}")  # was accuracy 1.0
    _write_images(tmp_path / "hole" / "cat", 3, (6, 6, 3))
    _write_images(tmp_path / "hole" / "dog", 3, (6, 6, 3))
    os.makedirs(tmp_path / "hole" / "emu")
    with pytest.raises(ValueError, match=r"class folder '.*hole/emu' has no images"):
        data_lib.get_dataset(f"folder:{tmp_path / 'hole'}")  # was a silent 3-class head
    os.rmdir(tmp_path / "hole" / "emu")
    jpeg = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(jpeg, "JPEG")
    (tmp_path / "hole" / "dog" / "cut.jpg").write_bytes(jpeg.getvalue()[:300])
    with pytest.raises(ValueError, match=r"cannot read image '.*dog/cut\.jpg'.*damaged"):
        data_lib.get_dataset(f"folder:{tmp_path / 'hole'}")


def test_grayscale_mixed_with_rgb_is_converted_to_the_majority(tmp_path):
    colour = _write_images(tmp_path / "cat", 3, (6, 6, 3)) + \
        _write_images(tmp_path / "dog", 2, (6, 6, 3), seed=1)
    gray = _write_images(tmp_path / "gray", 1, (6, 6), seed=2)[0]
    os.rename(tmp_path / "gray" / "0.png", tmp_path / "dog" / "2.png")
    os.rmdir(tmp_path / "gray")
    # image_size was set: the old message ("different sizes ... set image_size") blamed it.
    dataset = data_lib.get_dataset(f"folder:{tmp_path}", image_size=(6, 6))
    assert dataset.image_shape == (6, 6, 3) and dataset.num_classes == 2
    images = np.concatenate([dataset.x_train, dataset.x_test])
    expected_gray = np.repeat(gray[..., None], 3, axis=-1) / 255.0
    assert any(np.allclose(image, expected_gray, atol=1e-6) for image in images)
    assert any(np.allclose(image, colour[0] / 255.0, atol=1e-6) for image in images)
    # The split is per class: both classes appear in train and test.
    assert set(dataset.y_train.tolist()) == set(dataset.y_test.tolist()) == {0, 1}


# --- 3. every error says what was wrong, what was expected, what to do -------------------------


def test_invalid_config_fails_before_any_file_is_written(tmp_path, toy):
    workdir = tmp_path / "run"
    for batch_size in (0, -64):  # 0 was a ZeroDivisionError; -64 failed after config.json
        config = small_config(batch_size=batch_size)
        with pytest.raises(ValueError, match=rf"config.batch_size={batch_size}: expected a "
                                             r"positive integer"):
            train.train_and_evaluate(config, str(workdir), task=classification.make_task(
                small_config(), toy, model=Linear()))
        assert not workdir.exists()
    config = small_config(learning_rate=-1.0, schedule="cosin", optimizer="adamm")
    with pytest.raises(ValueError) as error:
        train.validate_config(config)
    assert all(f"config.{key}=" in str(error.value)
               for key in ("learning_rate", "schedule", "optimizer"))  # all listed at once
    task = classification.make_task(small_config(), toy, model=Linear())
    with pytest.raises(ValueError, match="exceeds the 128 training examples"):
        train.train_and_evaluate(small_config(batch_size=256), str(workdir), task=task)
    assert not workdir.exists()


def test_image_size_none_from_the_command_line():
    from ml_collections.config_flags import tuple_parser

    # absl's tuple flag turns --config.image_size=None into (None,), which failed to unpack.
    assert tuple_parser.TupleParser().parse("None") == (None,)
    for flag_value, expected in (((None,), None), (("none",), None), ((28,), (28, 28)),
                                 ((28, 32), (28, 32)), (None, None)):
        config = small_config(image_size=flag_value)
        train.validate_config(config)
        assert config.image_size == expected
    with pytest.raises(ValueError, match=r"config.image_size=\(0, 5\).*--config.image_size=32,32"):
        train.validate_config(small_config(image_size=(0, 5)))


def test_evaluate_without_checkpoints_says_so_once_and_creates_nothing(tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*train first"):
        train.evaluate_checkpoint(small_config(), str(workdir), tasks.build)
    result = run_module("experiments.evaluate", f"--config={LENET_CONFIG}",
                        f"--workdir={workdir}", check=False, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr  # the old run added orbax's shutdown traceback
    assert "evaluate: no checkpoint in" in result.stderr
    assert os.listdir(workdir) == []  # the old run created workdir/checkpoints


def test_nchw_input_gets_a_layout_hint():
    for name, shape in (("alexnet", (1, 3, 224, 224)), ("resnet18_cifar", (2, 3, 32, 32))):
        model = models.get_model(name, num_classes=10)
        with pytest.raises(ValueError, match=r"looks like NCHW.*transpose\(0, 2, 3, 1\)"):
            jax.eval_shape(lambda x, model=model: model.init(jax.random.PRNGKey(0), x,
                                                             train=False),
                           jax.ShapeDtypeStruct(shape, jnp.float32))


def test_misspelled_tfds_name_is_one_short_line(tmp_path):
    with pytest.raises(ValueError) as error:
        data_lib.get_dataset("mnsit", data_dir=str(tmp_path))
    message = str(error.value)
    assert len(message.splitlines()) == 1 and len(message) < 400  # was 461 lines
    assert "Did you mean 'mnist'" in message and "embedded_mnist" in message


def test_tfds_download_dependency_is_declared(tmp_path):
    import tensorflow_datasets as tfds

    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    requires = parser["options"]["install_requires"].split()
    assert "importlib_resources" in requires
    # download_and_prepare reads the checksums next to the builder's code through this path,
    # which raised "No module named 'importlib_resources'" (no network is touched here).
    assert "mnist" in str(tfds.builder("mnist", data_dir=str(tmp_path)).code_path)


_NO_TF_RUN = """
import json, sys
import jaxcnn.train
from jaxcnn import train
from jaxcnn.tasks import classification
assert "tensorflow" not in sys.modules, "import jaxcnn.train imported tensorflow"
sys.path.insert(0, "tests")
from test_errors import Linear
config = train.default_config()  # LeNet-5 on embedded MNIST: a linear model compiles faster
config.update(train_steps=3, batch_size=32, log_every_steps=1, checkpoint_every_steps=3,
              progress=False, tensorboard=True, async_checkpoints=False)
task = classification.make_task(config, classification.dataset_from_config(config),
                                model=Linear(10))
result = train.train_and_evaluate(config, sys.argv[1], task=task)
print(json.dumps({"tf": "tensorflow" in sys.modules, "top1": result.metrics["top1"]}))
"""


def _read_event_scalars(directory):
    """{(tag, step): value} from TFRecord-framed Event protos, parsed without TensorFlow."""
    from tensorboard.compat.proto import event_pb2

    scalars = {}
    for name in os.listdir(directory):
        data = open(os.path.join(directory, name), "rb").read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def test_embedded_mnist_run_never_imports_tensorflow(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", _NO_TF_RUN, str(tmp_path)], cwd=ROOT,
                            env={**env, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1])["tf"] is False
    assert "oneDNN" not in result.stderr
    # TensorBoard files are still written: the same losses as metrics.jsonl.
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    scalars = _read_event_scalars(tmp_path / "tensorboard")
    for row in rows:
        if row["split"] == "train":
            assert scalars[("train/loss", row["step"])] == pytest.approx(row["loss"], rel=1e-6)
    assert ("eval/top1", 3) in scalars


def test_tensorflow_import_for_tfds_hides_its_banners(tmp_path, monkeypatch, capfd):
    from jaxcnn.data import tfds_pipeline

    # A stand-in TensorFlow that, like TF 2.21, writes its banner from C++ straight to fd 2
    # while it is imported (before TF_CPP_MIN_LOG_LEVEL is read).
    (tmp_path / "tensorflow.py").write_text(
        "import os\nos.write(2, b'I0000 port.cc:153] oneDNN custom operations are on\\n')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # Recorded first, so undone last: the stand-in never outlives this test (the next test
    # in this process may need the real TensorFlow, imported or not).
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow"))
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    for level, shown in ((None, False), ("0", True)):
        monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
        if level is not None:
            monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
        capfd.readouterr()
        module = tfds_pipeline.import_tensorflow()
        assert module.__file__ == str(tmp_path / "tensorflow.py")
        assert ("oneDNN" in capfd.readouterr().err) is shown
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    monkeypatch.delitem(sys.modules, "tensorflow")
    tfds_pipeline.import_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # later INFO lines stay hidden too
