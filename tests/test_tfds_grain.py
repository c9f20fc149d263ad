"""TFDS through Grain: a tiny ArrayRecord-prepared dataset read like the arrays kind; TFRecord
and inception_crop still through tf.data. Real files in a temporary data_dir, no network."""

import logging

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcnn import data as data_lib
from jaxcnn.data import tfds_pipeline

NAME, NUM_TRAIN, NUM_TEST = "jaxcnn_tiny_digits", 20, 7


def tiny_image(i: int) -> np.ndarray:
    return np.random.default_rng([7, i]).integers(0, 256, (8, 8, 3), dtype=np.uint8)


class JaxcnnTinyDigits(tfds.core.GeneratorBasedBuilder):
    """Example i: tiny_image(i), label i % 3; train i < 20, test 100 <= i < 107."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, NUM_TRAIN),
                "test": self._generate_examples(100, NUM_TEST)}

    def _generate_examples(self, start, count):
        for i in range(start, start + count):
            yield i, {"image": tiny_image(i), "label": i % 3}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """{file format: data_dir} with the tiny dataset prepared in that format, and "arrays":
    {split: (float images in [0, 1], labels)} in the ArrayRecord files' record order."""
    dirs = {}
    for file_format in ("array_record", "tfrecord"):
        dirs[file_format] = str(tmp_path_factory.mktemp(file_format))
        JaxcnnTinyDigits(data_dir=dirs[file_format], file_format=file_format
                         ).download_and_prepare()
    builder, dirs["arrays"] = JaxcnnTinyDigits(data_dir=dirs["array_record"]), {}
    for split, start, count in (("train", 0, NUM_TRAIN), ("test", 100, NUM_TEST)):
        records = builder.as_data_source(split)  # TFDS stores examples in a hashed order
        images = np.stack([r["image"] for r in records])
        written = [tiny_image(i) for i in range(start, start + count)]
        ids = [next(i for i, w in enumerate(written) if (w == image).all()) for image in images]
        assert sorted(ids) == list(range(count))
        dirs["arrays"][split] = (images / 255.0, (np.array(ids) + start) % 3)
    return dirs


def expected_train_batch(prepared, step, *, seed, batch, augment, process_index=0,
                         process_count=1):
    """Batch `step` computed here: the epoch's permutation, the host's slice, its augmentation."""
    x, y = prepared["arrays"]["train"]
    epoch, index = divmod(step, NUM_TRAIN // batch)
    order = np.random.default_rng([seed, epoch]).permutation(NUM_TRAIN)
    local = batch // process_count
    rows = order[index * batch:(index + 1) * batch][process_index * local:][:local]
    rng = np.random.default_rng([seed, epoch, index, process_index, 1])
    return data_lib.augment_batch(x[rows].astype(np.float32), augment, rng), y[rows]


def test_array_record_tfds_train_stream_is_the_arrays_kinds_and_resumes(prepared):
    dataset = data_lib.get_dataset(NAME, data_dir=prepared["array_record"], augment="crop_flip")
    assert dataset.reader == "grain" and dataset.tf_data_reason is None
    assert (dataset.num_train, dataset.num_eval, dataset.image_shape) == (20, 7, (8, 8, 3))
    stream = dataset.train_batches(8, seed=3)
    batches = [next(stream) for _ in range(5)]  # 2 steps an epoch: epochs 0, 1 and 2
    assert stream.get_state() == {"next_step": 5}
    stream.close()
    for step, batch in enumerate(batches):
        images, labels = expected_train_batch(prepared, step, seed=3, batch=8, augment="crop_flip")
        np.testing.assert_allclose(batch["image"], images, atol=1e-7)
        np.testing.assert_array_equal(batch["label"], labels)
        assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
    resumed = dataset.train_batches(8, seed=3)
    resumed.set_state({"next_step": 3})
    for batch in batches[3:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], batch["image"])
        np.testing.assert_array_equal(got["label"], batch["label"])
    resumed.close()


def test_array_record_tfds_process_slices_and_padded_eval(prepared):
    dataset = data_lib.get_dataset(NAME, data_dir=prepared["array_record"], augment="none")
    whole = dataset.train_batches(8, seed=5)
    halves = [dataset.train_batches(8, seed=5, process_index=p, process_count=2)
              for p in (0, 1)]
    for _ in range(3):
        batch, parts = next(whole), [next(h) for h in halves]
        for key in ("image", "label"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])
    for stream in (whole, *halves):
        stream.close()
    x, y = prepared["arrays"]["test"]
    # 7 examples, global batch 6 over 2 hosts: batch 0 rows 0-2 | 3-5, batch 1 row 6 | none.
    for process, rows in ((0, [[0, 1, 2], [6]]), (1, [[3, 4, 5], []])):
        got = list(dataset.eval_batches(6, process_index=process, process_count=2))
        assert len(got) == 2
        for batch, real in zip(got, rows):
            n = len(real)
            np.testing.assert_array_equal(batch["mask"], [1.0] * n + [0.0] * (3 - n))
            np.testing.assert_array_equal(batch["index"][:n], real)
            np.testing.assert_array_equal(batch["label"][:n], y[real])
            np.testing.assert_allclose(batch["image"][:n], x[real], atol=1e-7)
            assert not batch["image"][n:].any()


def test_tfrecord_or_inception_crop_keeps_tf_data_and_says_why(prepared, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = data_lib.get_dataset(NAME, data_dir=prepared["tfrecord"], augment="flip")
        assert dataset.reader == "tf.data" and "tfrecord, without random access" in caplog.text
        caplog.clear()
        cropped = data_lib.get_dataset(NAME, data_dir=prepared["array_record"],
                                       augment="inception_crop")
    assert cropped.reader == "tf.data" and "augment='inception_crop'" in caplog.text
    assert caplog.text.count("reads through tf.data") == 1
    stream = dataset.train_batches(4, seed=0)
    batch = next(stream)
    stream.close()
    x, _ = prepared["arrays"]["train"]
    flipped = np.concatenate([x, x[:, :, ::-1]])
    for image in batch["image"]:  # a training image, mirrored or not
        assert np.abs(flipped - image).max(axis=(1, 2, 3)).min() < 1e-6
    with pytest.raises(ValueError, match="unknown augmentation 'crop'"):
        data_lib.get_dataset(NAME, data_dir=prepared["array_record"], augment="crop")


def test_grain_resize_matches_the_tf_data_resize(prepared):
    size = (6, 5)  # larger images: short side to 6 / 0.875 = 7 (8x8 -> 7x7), centre crop
    dataset = data_lib.get_dataset(NAME, data_dir=prepared["array_record"], image_size=size)
    assert dataset.reader == "grain" and not dataset.pad_only
    batch = next(dataset.eval_batches(8))
    tf = tfds_pipeline.import_tensorflow()
    x, _ = prepared["arrays"]["test"]
    expected = np.stack([tfds_pipeline._fit_eval(tf, tf.constant(image, tf.float32), size)
                         for image in x])
    assert batch["image"].shape == (8, 6, 5, 3)
    # PIL resizes the uint8 image, TF the float one: within a couple of grey levels.
    np.testing.assert_allclose(batch["image"][:7], expected, atol=3 / 255)


@pytest.mark.slow
def test_array_record_tfds_stream_is_the_same_with_worker_processes(prepared):
    dataset = data_lib.get_dataset(NAME, data_dir=prepared["array_record"], augment="crop_flip")
    stream = dataset.train_batches(8, seed=1)
    expected = [next(stream) for _ in range(6)]
    stream.close()
    workers = dataset.train_batches(8, seed=1, workers=2)
    got = [next(workers) for _ in range(4)]
    workers.close()
    resumed = dataset.train_batches(8, seed=1, workers=1)
    resumed.set_state({"next_step": 4})
    got += [next(resumed) for _ in range(2)]
    resumed.close()
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
