"""config.validation_fraction: a seeded, held-out share of the training split as the eval split."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcnn import data
from jaxcnn.data import holdout
from jaxcnn.data.arrays import ArrayDataset
from jaxcnn.tasks import classification, detector
from jaxcnn.train import default_config, task_settings


def _tagged_arrays(counts: list[int]) -> ArrayDataset:
    """Training images whose every pixel is the row number (so rows can be traced), labels
    with `counts` examples per class, interleaved."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int32)
    labels = labels[np.random.default_rng(5).permutation(len(labels))]
    x = np.broadcast_to(np.arange(len(labels), dtype=np.float32)[:, None, None, None],
                        (len(labels), 2, 2, 1)).copy()
    return ArrayDataset("tagged", x, labels, x[:3] * 0, labels[:3], len(counts))


def _rows(images: np.ndarray) -> list[int]:
    return [int(v) for v in images[:, 0, 0, 0]]


def test_held_out_rows_are_disjoint_cover_the_train_split_and_keep_class_proportions():
    dataset = _tagged_arrays([50, 30, 20])
    carved = holdout.carve_validation(dataset, 0.2, seed=3)
    train, held = _rows(carved.x_train), _rows(carved.x_test)
    assert not set(train) & set(held)
    assert sorted(train + held) == list(range(100))  # union: the original training split
    assert len(held) == 20 and carved.num_train == 80 and carved.num_eval == 20
    # 20 % of each class: 10 of 50, 6 of 30, 4 of 20 (and the labels travel with the images)
    assert np.bincount(carved.y_test).tolist() == [10, 6, 4]
    assert np.bincount(carved.y_train).tolist() == [40, 24, 16]
    assert (carved.y_test == dataset.y_train[held]).all()
    assert (carved.y_train == dataset.y_train[train]).all()
    # normalisation statistics come from the 80 training rows only
    assert float(carved.mean[0]) == pytest.approx(np.mean(train))


def test_the_carve_is_a_function_of_its_seed():
    dataset = _tagged_arrays([50, 30, 20])
    first = _rows(holdout.carve_validation(dataset, 0.2, seed=0).x_test)
    assert _rows(holdout.carve_validation(dataset, 0.2, seed=0).x_test) == first
    assert _rows(holdout.carve_validation(dataset, 0.2, seed=1).x_test) != first


def test_detection_splits_by_image_and_boxes_travel_with_their_image():
    scenes = data.synthetic_scenes(20, 4, image_size=32, min_px=4, max_px=12, grid=2)
    carved = holdout.carve_validation(scenes, 0.25, seed=0)
    assert (carved.num_train, carved.num_eval) == (15, 5)
    whole = np.concatenate([carved.x_train, carved.x_test])
    # every original training image appears exactly once, with its own boxes and classes
    for i in range(20):
        where = [j for j in range(20) if np.array_equal(whole[j], scenes.x_train[i])]
        assert len(where) == 1
        j = where[0]
        boxes = np.concatenate([carved.boxes_train, carved.boxes_test])[j]
        classes = np.concatenate([carved.classes_train, carved.classes_test])[j]
        assert np.array_equal(boxes, scenes.boxes_train[i])
        assert np.array_equal(classes, scenes.classes_train[i])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(ValueError, match=r"validation_fraction must lie in \(0, 1\); received"):
        holdout.holdout_rows(10, fraction)


def test_too_few_examples_are_refused_naming_the_class():
    with pytest.raises(ValueError, match="0.2 of 2 training examples of class 1 leaves 0 held "
                                         "out and 2 to train on"):
        holdout.carve_validation(_tagged_arrays([10, 2]), 0.2)
    with pytest.raises(ValueError, match="0.9 of 3 training examples leaves 3 held out and 0"):
        holdout.holdout_rows(3, 0.9)


def test_a_dataset_not_held_as_arrays_is_refused():
    class Streamed:
        name = "cifar10"

    with pytest.raises(ValueError, match="needs a dataset held in memory as arrays .* "
                                         "'cifar10' is a Streamed"):
        holdout.carve_validation(Streamed(), 0.2)


def test_the_config_key_reaches_classification_and_detection(capsys):
    config = default_config()
    config.validation_fraction = 0.1
    mnist = classification.dataset_from_config(config)
    assert (mnist.num_train, mnist.num_eval) == (3600, 400)  # of the 4,000 embedded digits
    assert np.bincount(mnist.y_test).tolist() == [40] * 10  # 10 % of each digit's 400
    assert "validation split: 400 of the 4000 training examples of embedded_mnist (0.1, per " \
           "class, seed 0) replace the eval split; training on the other 3600" in \
           capsys.readouterr().out
    config.dataset, config.image_size = "synthetic_scenes", (96, 96)
    config.task = {"synthetic_train": 10, "synthetic_test": 3}
    settings = task_settings(config, detector.DEFAULTS)
    scenes = detector.dataset_from_config(config, settings)
    assert (scenes.num_train, scenes.num_eval) == (9, 1)  # the 3 test scenes are not used
    config.validation_fraction = 0.0
    assert detector.dataset_from_config(config, settings).num_eval == 3


def test_raccoon_validation_images_are_32_of_its_160_training_images(shared_data):
    spec = f"voc_folder:{shared_data}/raccoon"
    whole = data.get_detection_dataset(spec, report=None)
    carved = data.get_detection_dataset(spec, report=None, validation_fraction=0.2)
    assert (whole.num_train, whole.num_eval) == (160, 40)
    assert (carved.num_train, carved.num_eval) == (128, 32)
    train = {image.tobytes() for image in whole.x_train}
    test = {image.tobytes() for image in whole.x_test}
    held = {image.tobytes() for image in carved.x_test}
    assert held <= train and not held & test  # never a test image (one image is there twice)
    assert held | {image.tobytes() for image in carved.x_train} == train
