"""Input pipelines: embedded digits, npz, image folders, TFDS (mocked), per-host slicing."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxcnn import data as data_lib
from jaxcnn import tasks, train


@pytest.fixture(scope="module")
def embedded():
    return data_lib.embedded_mnist()


def test_embedded_mnist_is_a_balanced_real_split(embedded):
    assert (embedded.num_train, embedded.num_eval) == (4000, 1000)
    assert embedded.image_shape == (32, 32, 1)
    assert np.bincount(embedded.y_train).tolist() == [400] * 10
    assert np.bincount(embedded.y_test).tolist() == [100] * 10
    # MNIST's mean pixel is 0.1307 on 28x28; zero-padding to 32x32 scales it by 784/1024.
    assert float(embedded.mean[0]) == pytest.approx(0.1307 * 784 / 1024, abs=0.01)
    assert embedded.x_train[:, :2].max() == 0.0  # the two padding rows are empty
    assert not set(map(bytes, embedded.x_train[:50])) & set(map(bytes, embedded.x_test))


def test_train_batches_are_resumable_and_split_over_hosts(embedded):
    stream = embedded.train_batches(64, seed=3)
    batches = [next(stream) for _ in range(70)]  # crosses the epoch boundary at 62 steps
    resumed = next(embedded.train_batches(64, seed=3, start_step=65))
    np.testing.assert_array_equal(resumed["label"], batches[65]["label"])
    np.testing.assert_array_equal(resumed["image"], batches[65]["image"])
    halves = [next(embedded.train_batches(64, seed=3, start_step=65, process_index=i,
                                          process_count=2)) for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["label"] for h in halves]),
                                  batches[65]["label"])
    epoch0 = np.concatenate([b["label"] for b in batches[:62]])
    assert np.bincount(epoch0, minlength=10).sum() == 62 * 64
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        next(embedded.train_batches(64, seed=0, process_count=3))


def test_eval_batches_cover_every_example_once_with_masks(embedded):
    seen = []
    for index in range(2):
        for batch in embedded.eval_batches(384, process_index=index, process_count=2):
            assert batch["image"].shape == (192, 32, 32, 1)
            seen.append(batch["label"][batch["mask"] == 1])
    labels = np.concatenate(seen)
    assert len(labels) == 1000
    assert np.bincount(labels).tolist() == [100] * 10


def test_flip_augmentation_mirrors_or_keeps_each_image():
    rng = np.random.default_rng(0)
    images = rng.random((16, 5, 7, 3)).astype(np.float32)
    out = data_lib.augment_batch(images, "flip", np.random.default_rng(1))
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 16
    cropped = data_lib.augment_batch(images, "crop_flip", np.random.default_rng(1))
    assert cropped.shape == images.shape
    with pytest.raises(ValueError, match="unknown augmentation"):
        data_lib.augment_batch(images, "mixup", rng)


def test_image_folder_reads_classes_and_pixels(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {}
    for name in ("cat", "dog"):
        for split in ("train", "test"):
            os.makedirs(tmp_path / split / name)
            for i in range(3):
                array = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
                Image.fromarray(array).save(tmp_path / split / name / f"{i}.png")
                pixels[(split, name, i)] = array
    dataset = data_lib.get_dataset(f"folder:{tmp_path}")
    assert (dataset.num_classes, dataset.num_train, dataset.num_eval) == (2, 6, 6)
    assert dataset.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(dataset.x_train[4], pixels[("train", "dog", 1)] / 255.0,
                               atol=1e-6)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data_lib.get_dataset(f"folder:{tmp_path}/missing")


def test_npz_dataset_and_its_errors(tmp_path, shared_data):
    mnist = data_lib.get_dataset(f"npz:{shared_data}/mnist.npz", image_size=(32, 32))
    assert (mnist.num_train, mnist.num_eval, mnist.num_classes) == (60000, 10000, 10)
    assert mnist.image_shape == (32, 32, 1)
    assert float(mnist.x_train[:, 2:30, 2:30].mean()) == pytest.approx(0.1307, abs=1e-3)
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"lacks keys \['x_test', 'y_test', 'y_train'\]"):
        data_lib.get_dataset(f"npz:{tmp_path}/bad.npz")


def write_tfds_metadata(name, data_dir, num_examples):
    """The split sizes mock_data needs, which the tfds wheel does not ship."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(data_dir))
    template = tfds.core.ShardedFileTemplate(data_dir=builder.data_dir, dataset_name=name,
                                             filetype_suffix="tfrecord", split="train")
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=[num_examples], num_bytes=0,
                            filename_template=template.replace(split=split))
        for split in ("train", data_lib.KNOWN_DATASETS[name][0])]))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


def test_tfds_mnist_pipeline_and_training_on_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    write_tfds_metadata("mnist", tmp_path / "tfds", 64)
    config = train.default_config()
    config.update(dataset="mnist", data_dir=str(tmp_path / "tfds"), image_size=(32, 32),
                  batch_size=32, eval_batch_size=24, train_steps=30, learning_rate=3e-3,
                  log_every_steps=1, checkpoint_every_steps=30, progress=False,
                  tensorboard=False, schedule="constant",
                  # mock_data swaps in a fake file system while it opens a split, which
                  # would race with a background checkpoint write.
                  async_checkpoints=False)
    with tfds.testing.mock_data(num_examples=64, data_dir=str(tmp_path / "tfds")):
        dataset = data_lib.get_dataset("mnist", data_dir=config.data_dir, image_size=(32, 32))
        assert (dataset.num_train, dataset.num_classes) == (64, 10)
        assert dataset.image_shape == (32, 32, 1)
        stream = dataset.train_batches(32, seed=0)
        first, second = next(stream), next(stream)
        stream.close()
        assert first["image"].shape == (32, 32, 32, 1) and first["image"].dtype == np.float32
        assert 0.0 <= first["image"].min() and first["image"].max() <= 1.0
        assert first["image"][:, :2].max() == 0.0  # 28x28 padded to 32x32
        resumed = dataset.train_batches(32, seed=0, start_step=1)
        np.testing.assert_array_equal(next(resumed)["image"], second["image"])
        resumed.close()
        masks = [b["mask"] for b in dataset.eval_batches(24)]
        assert [float(m.sum()) for m in masks] == [24, 24, 16]  # 64 examples, last batch padded
        result = train.train_and_evaluate(config, str(tmp_path / "run"), tasks.build)
    losses = [row["loss"] for row in _train_rows(tmp_path / "run")]
    # 64 random images with random labels: 30 steps of Adam memorise most of them.
    assert losses[0] > 2.0 and np.mean(losses[-3:]) < 0.6 * losses[0]
    assert result.metrics["count"] == 64


def _train_rows(workdir):
    import json

    with open(workdir / "metrics.jsonl") as f:
        return [row for row in map(json.loads, f) if row["split"] == "train"]


@pytest.mark.parametrize("name,size,augment", [("cifar10", None, "crop_flip"),
                                               ("imagenette", (40, 48), "inception_crop")])
def test_tfds_rgb_pipelines_crop_and_resize(tmp_path, name, size, augment):
    import tensorflow_datasets as tfds

    write_tfds_metadata(name, tmp_path, 16)
    with tfds.testing.mock_data(num_examples=16, data_dir=str(tmp_path)):
        dataset = data_lib.get_dataset(name, data_dir=str(tmp_path), image_size=size)
        expected = (32, 32, 3) if size is None else (*size, 3)
        assert dataset.image_shape == expected and dataset.augment == augment
        stream = dataset.train_batches(8, seed=1)
        batch = next(stream)
        stream.close()
        assert batch["image"].shape == (8, *expected)
        assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        eval_batch = next(dataset.eval_batches(8))
        assert eval_batch["image"].shape == (8, *expected) and eval_batch["mask"].sum() == 8
    np.testing.assert_allclose(dataset.std, data_lib.KNOWN_DATASETS[name][2])
