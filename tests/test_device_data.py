"""Device-resident datasets: tarball/folder decoding, on-device augmentation, the loop hook."""

import os
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcnn import data as data_lib
from jaxcnn import train
from jaxcnn.data import device
from jaxcnn.tasks import classification

CLASSES = ("cat", "ant", "bee")  # deliberately unsorted: labels follow sorted names


def write_tree(root, rng, per_class=(6, 2), side=8):
    """root/{train,test}/<class>/<i>.png with random RGB pixels; returns the arrays."""
    arrays = {}
    for split, count in zip(("train", "test"), per_class):
        images, labels = [], []
        for label, name in enumerate(sorted(CLASSES)):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, name, f"{i:04d}.png"))
                images.append(pixels)
                labels.append(label)
        arrays[split] = (np.stack(images), np.array(labels))
    return arrays


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    arrays = write_tree(str(root / "data"), np.random.default_rng(0))
    tarball = str(root / "data.tar.gz")
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(str(root / "data"), arcname=".")
    return str(root / "data"), tarball, arrays


def test_tarball_and_folder_decode_to_the_same_uint8_arrays(image_tree):
    folder, tarball, arrays = image_tree
    for path in (folder, tarball):
        ds = data_lib.get_dataset(f"device:{path}")
        assert ds.num_classes == 3 and ds.image_shape == (8, 8, 3)
        assert ds.x_train.dtype == np.uint8
        np.testing.assert_array_equal(ds.x_train, arrays["train"][0])
        np.testing.assert_array_equal(ds.y_train, arrays["train"][1])
        np.testing.assert_array_equal(ds.x_test, arrays["test"][0])
        np.testing.assert_array_equal(ds.y_test, arrays["test"][1])
        np.testing.assert_allclose(ds.mean, arrays["train"][0].reshape(-1, 3).mean(0) / 255,
                                   rtol=1e-5)


def test_bad_inputs_name_the_argument(image_tree, tmp_path):
    folder, _, _ = image_tree
    with pytest.raises(ValueError, match="augment"):
        data_lib.get_dataset(f"device:{folder}", augment="inception_crop")
    with pytest.raises(ValueError, match="image_size"):
        data_lib.get_dataset(f"device:{folder}", image_size=(4, 4))
    with pytest.raises(FileNotFoundError, match="train/ and test/"):
        data_lib.get_dataset(f"device:{tmp_path}")


def brute_force_match(out, image, pad=device.CROP_PAD):
    """Every (dy, dx, flip) whose crop of the zero-padded image equals `out`."""
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    h, w = image.shape[:2]
    return [(dy, dx, flip) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
            for flip in (False, True)
            if np.array_equal(out, (lambda c: c[:, ::-1] if flip else c)(
                padded[dy:dy + h, dx:dx + w]))]


def test_device_crop_flip_is_a_padded_crop_with_uniform_offsets():
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (512, 6, 6, 1), dtype=np.uint8)  # nonzero: pad is visible
    out = np.asarray(jax.jit(device.augment_on_device, static_argnums=1)(
        jnp.asarray(images), "crop_flip", jax.random.key(7)))
    offsets, flips = [], []
    for image, result in zip(images, out):
        matches = brute_force_match(result, image)
        assert matches, "output is not a crop of the padded image"
        offsets.append(matches[0][:2])
        flips.append(matches[0][2])
    dy = np.array([o[0] for o in offsets])
    assert set(dy.tolist()) == set(range(9))  # every offset 0..8 occurs
    assert abs(np.mean(dy) - 4.0) < 0.4  # uniform over 0..8 has mean 4
    assert 0.42 < np.mean(flips) < 0.58
    same = jax.jit(device.augment_on_device, static_argnums=1)(
        jnp.asarray(images), "crop_flip", jax.random.key(7))
    np.testing.assert_array_equal(out, same)  # a pure function of the key


def test_train_batches_are_index_permutations_resumable_and_split():
    ds = device.DeviceImageDataset("t", np.zeros((10, 2, 2, 3), np.uint8), np.arange(10) % 2,
                                   np.zeros((3, 2, 2, 3), np.uint8), np.zeros(3, int), 2)
    stream = ds.train_batches(4, seed=5)
    batches = [next(stream)["index"] for _ in range(5)]  # 2 steps per epoch: crosses epochs
    assert len(set(np.concatenate(batches[:2]).tolist())) == 8  # no row twice in an epoch
    np.testing.assert_array_equal(next(ds.train_batches(4, seed=5, start_step=3))["index"],
                                  batches[3])
    halves = [next(ds.train_batches(4, seed=5, start_step=3, process_index=i,
                                    process_count=2))["index"] for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), batches[3])
    evals = list(ds.eval_batches(2))
    assert [b["index"].tolist() for b in evals] == [[0, 1], [2, 0]]
    assert [b["mask"].tolist() for b in evals] == [[1, 1], [1, 0]]


def tiny_config(**overrides):
    config = train.default_config()
    config.model = "lenet5"
    config.batch_size = 6
    config.eval_batch_size = 4
    config.train_steps = 4
    config.optimizer = "momentum"
    config.learning_rate = 0.05
    config.schedule = "constant"
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    config.progress = False
    config.tensorboard = False
    for key, value in overrides.items():
        config[key] = value
    return config


def gray_dataset(kind, augment):
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, (12, 32, 32, 1), dtype=np.uint8)
    x_test = rng.integers(0, 256, (6, 32, 32, 1), dtype=np.uint8)
    y_train, y_test = np.arange(12) % 3, np.arange(6) % 3
    if kind == "device":
        return device.DeviceImageDataset("gray", x_train, y_train, x_test, y_test, 3, augment)
    return data_lib.ArrayDataset("gray", data_lib.to_float_images(x_train), y_train.astype(
        np.int32), data_lib.to_float_images(x_test), y_test.astype(np.int32), 3, augment)


def test_loop_on_device_data_matches_host_arrays_without_augmentation(tmp_path):
    """Same rows in the same order: the device gather must give the host pipeline's run."""
    results = {}
    for kind in ("device", "host"):
        task = classification.make_task(train.resolve_platform(tiny_config()),
                                        gray_dataset(kind, "none"))
        results[kind] = train.train_and_evaluate(tiny_config(), str(tmp_path / kind), task)
    for a, b in zip(jax.tree.leaves(results["device"].state.params),
                    jax.tree.leaves(results["host"].state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    assert results["device"].metrics["count"] == 6
    assert results["device"].metrics["loss"] == pytest.approx(results["host"].metrics["loss"],
                                                              rel=1e-4)


@pytest.mark.slow  # resume; the default suite keeps the device loop against host arrays
def test_augmented_device_run_resumes_bit_identically(tmp_path):
    config = tiny_config()
    whole = train.train_and_evaluate(
        config, str(tmp_path / "whole"),
        classification.make_task(train.resolve_platform(config),
                                 gray_dataset("device", "crop_flip")))
    first = tiny_config(train_steps=2)
    train.train_and_evaluate(first, str(tmp_path / "split"),
                             classification.make_task(train.resolve_platform(first),
                                                      gray_dataset("device", "crop_flip")))
    resumed = train.train_and_evaluate(
        config, str(tmp_path / "split"),
        classification.make_task(train.resolve_platform(config),
                                 gray_dataset("device", "crop_flip")))
    assert resumed.steps_run == 2
    for a, b in zip(jax.tree.leaves(whole.state.params), jax.tree.leaves(resumed.state.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_resident_arrays_are_arguments_not_constants():
    """The compiled step takes the images as a parameter: its HLO stays far smaller than them."""
    ds = gray_dataset("device", "crop_flip")
    ds = device.DeviceImageDataset("big", np.zeros((2000, 32, 32, 1), np.uint8),
                                   np.zeros(2000, int), ds.x_test, ds.y_test, 3)
    config = tiny_config()
    task = classification.make_task(train.resolve_platform(config), ds)
    schedule = train.make_schedule(config, 1, 4)
    tx = train.make_optimizer(config, schedule)
    train_step, _ = train.make_steps(task, tx, schedule, lambda x: x)
    state = jax.eval_shape(train.init_state(task, tx, 0), jax.random.key(0))
    text = jax.jit(train_step).lower(state, {"index": np.arange(6, dtype=np.int32)},
                                     ds.device_arrays).as_text()
    assert ds.x_train.nbytes == 2_048_000
    assert len(text) < ds.x_train.nbytes / 4
