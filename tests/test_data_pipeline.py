"""The Grain input pipeline reads exactly the batches of the algorithm it replaced.

The reference here is the pre-Grain algorithm written out independently: batch k of epoch e
takes rows k*B..(k+1)*B of base.epoch_order(seed, e) (faces: P x K people drawn with
default_rng([seed, step])), each host its contiguous slice, augmented with
default_rng([seed, e, k, process, 1]) (faces: [seed, step, process, 1]). Recorded results
(results/manifest.toml) depend on that order, so the comparison is bit for bit, with 0, 1
and 2 Grain worker processes, after a resume, and per process.
"""

import json

import numpy as np
import pytest
from test_train import small_config, tiny_mnist

from jaxcnn import train
from jaxcnn.data import arrays, base, detection, device, faces
from jaxcnn.errors import RunError
from jaxcnn.tasks import classification
from jaxcnn.train import checkpoint

STEPS = 7  # more than one epoch of every dataset below (crosses the boundary)


def _arrays(augment="crop_flip"):
    rng = np.random.default_rng(0)
    return arrays.ArrayDataset("toy", rng.random((40, 8, 8, 3), np.float32),
                               rng.integers(0, 3, 40).astype(np.int32),
                               rng.random((11, 8, 8, 3), np.float32),
                               rng.integers(0, 3, 11).astype(np.int32), 3, augment)


def _faces():
    rng = np.random.default_rng(1)

    def people(names, per):
        labels = np.repeat(np.arange(len(names)), per).astype(np.int32)
        files = tuple(f"{names[i]}/{j}.pgm" for i in range(len(names)) for j in range(per))
        return faces.IdentityImages(rng.random((len(labels), 12, 12, 1), np.float32), labels,
                                    tuple(names), files)

    return faces.IdentityDataset("faces:toy", people([f"s{i}" for i in range(1, 7)], 3),
                                 people(["s7", "s8"], 5), images_per_person=2,
                                 augment="faces")


def _detection():
    return detection.synthetic_scenes(24, 9, image_size=16, min_px=4, max_px=8,
                                      augment="flip",
                                      targets_fn=detection.localization_targets(3))


def _device():
    rng = np.random.default_rng(2)
    return device.DeviceImageDataset(
        "device:toy", rng.integers(0, 256, (30, 6, 6, 3), np.uint8),
        rng.integers(0, 2, 30).astype(np.int32), rng.integers(0, 256, (7, 6, 6, 3), np.uint8),
        rng.integers(0, 2, 7).astype(np.int32), 2)


KINDS = {"arrays": (_arrays, 8), "faces": (_faces, 6), "detection": (_detection, 8),
         "device": (_device, 8)}


def reference_batch(dataset, global_batch, seed, step, process_index=0, process_count=1):
    """Step `step`'s batch by the pre-Grain algorithm (see the module docstring)."""
    local = global_batch // process_count
    mine = slice(process_index * local, (process_index + 1) * local)
    if isinstance(dataset, faces.IdentityDataset):
        rng = np.random.default_rng([seed, step])
        people = rng.choice(dataset.num_classes, size=global_batch // 2, replace=False)
        rows = np.concatenate([rng.choice(np.flatnonzero(dataset.train.labels == p), size=2,
                                          replace=False) for p in people])[mine]
        rng = np.random.default_rng([seed, step, process_index, 1])
        return {"image": faces.augment_faces(dataset.train.images[rows], "faces", rng),
                "label": dataset.train.labels[rows]}
    epoch, index = divmod(step, dataset.num_train // global_batch)
    order = np.random.default_rng([seed, epoch]).permutation(dataset.num_train)
    rows = order[index * global_batch:(index + 1) * global_batch][mine]
    rng = np.random.default_rng([seed, epoch, index, process_index, 1])
    if isinstance(dataset, device.DeviceImageDataset):
        return {"index": rows.astype(np.int32)}
    if isinstance(dataset, arrays.ArrayDataset):
        return {"image": arrays.augment_batch(dataset.x_train[rows], "crop_flip", rng),
                "label": dataset.y_train[rows]}
    images, boxes = dataset.x_train[rows], dataset.boxes_train[rows].copy()
    flip = rng.random(len(rows)) < 0.5
    boxes[..., 0] = np.where(flip[:, None], 1.0 - boxes[..., 0], boxes[..., 0])
    classes = dataset.classes_train[rows]
    return {"image": np.where(flip[:, None, None, None], images[:, :, ::-1], images),
            "boxes": boxes, "classes": classes, "num_objects": (classes >= 0).sum(axis=1),
            **detection.localization_targets(3)(boxes, classes)}


def assert_batches_equal(actual, expected, where):
    assert sorted(actual) == sorted(expected), where
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{where}: {key}")
        assert actual[key].dtype == np.asarray(expected[key]).dtype or key != "image", where


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_train_stream_is_the_reference_bit_for_bit_resumed_and_per_process(kind):
    make, batch = KINDS[kind]
    dataset = make()
    stream = dataset.train_batches(batch, seed=4)
    for step in range(STEPS):
        assert_batches_equal(next(stream), reference_batch(dataset, batch, 4, step),
                             f"{kind} step {step}")
    assert stream.get_state() == {"next_step": STEPS}
    resumed = dataset.train_batches(batch, seed=4, start_step=5)
    assert_batches_equal(next(resumed), reference_batch(dataset, batch, 4, 5), f"{kind} @5")
    restored = dataset.train_batches(batch, seed=4)
    restored.set_state({"next_step": 6})  # the checkpoint's way back in
    assert_batches_equal(next(restored), reference_batch(dataset, batch, 4, 6), f"{kind} st6")
    second = next(dataset.train_batches(batch, seed=4, start_step=3, process_index=1,
                                        process_count=2))
    assert_batches_equal(second, reference_batch(dataset, batch, 4, 3, 1, 2), f"{kind} p1")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_eval_lists_every_example_once_in_order_on_each_process(kind):
    dataset = KINDS[kind][0]()
    for count in (1, 2):
        rows, real = [], []
        for process in range(count):
            for batch in dataset.eval_batches(4, process_index=process, process_count=count):
                assert len(batch["mask"]) == 4 // count
                rows.append(batch["index"][batch["mask"] > 0])
                real.append(int(batch["mask"].sum()))
        # Each host's batch g holds rows g*4 + host*local ..; all of them, once.
        assert sorted(np.concatenate(rows).tolist()) == list(range(dataset.num_eval))
        assert sum(real) == dataset.num_eval


def test_padded_detection_eval_rows_hold_no_objects():
    last = list(_detection().eval_batches(4))[-1]  # 9 scenes: 1 real row, 3 padding
    assert last["mask"].tolist() == [1, 0, 0, 0]
    assert (last["classes"][1:] == -1).all() and (last["num_objects"][1:] == 0).all()
    assert (last["target"][1:] == 0).all()


def test_two_workers_resume_into_one_worker_with_the_same_batches():
    """The saved state {next_step} is independent of the worker count (Grain mp_prefetch)."""
    dataset = _faces()
    stream = dataset.train_batches(6, seed=9, workers=2)
    try:
        for step in range(3):
            assert_batches_equal(next(stream), reference_batch(dataset, 6, 9, step), step)
        state = json.loads(json.dumps(stream.get_state()))  # as the checkpoint stores it
    finally:
        stream.close()
    resumed = dataset.train_batches(6, seed=9, workers=1)
    resumed.set_state(state)
    try:
        for step in range(3, 5):
            assert_batches_equal(next(resumed), reference_batch(dataset, 6, 9, step), step)
    finally:
        resumed.close()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_with_worker_processes_is_the_reference(kind, workers):
    make, batch = KINDS[kind]
    dataset = make()
    stream = dataset.train_batches(batch, seed=2, start_step=2, workers=workers)
    try:
        for step in range(2, 2 + STEPS):
            assert_batches_equal(next(stream), reference_batch(dataset, batch, 2, step),
                                 f"{kind} {workers} workers step {step}")
    finally:
        stream.close()


def test_bad_worker_count_and_state_are_named():
    with pytest.raises(ValueError, match="data_workers must be >= 0"):
        next(_arrays().train_batches(8, seed=0, workers=-1))
    with pytest.raises(ValueError, match="next_step"):
        _arrays().train_batches(8, seed=0).set_state({"step": 3})


def test_epoch_order_is_cached_read_only():
    order = base.epoch_order(1, 0, 10)
    assert base.epoch_order(1, 0, 10) is order
    assert sorted(order.tolist()) == list(range(10))
    with pytest.raises(ValueError):
        order[0] = 3


def test_checkpoint_holds_the_iterator_state_and_a_resume_restores_it(tmp_path):
    config = small_config(train_steps=6, checkpoint_every_steps=3, keep_checkpoints=3)
    task = classification.make_task(train.resolve_platform(config), tiny_mnist())
    train.train_and_evaluate(config, str(tmp_path), task=task)
    reader = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), async_save=False,
                                     read_only=True)
    try:
        assert [reader.data_state(s) for s in (3, 6)] == [{"next_step": 3}, {"next_step": 6}]
    finally:
        reader.close()
    # A step whose data state names another step is refused, not silently misread.
    data_dir = tmp_path / "checkpoints" / "6" / checkpoint.DATA_ITEM
    with open(data_dir / "metadata", "w") as f:  # the JSON handler's file
        json.dump({"next_step": 2}, f)
    config.train_steps = 9
    with pytest.raises(RunError, match="data iterator state"):
        train.train_and_evaluate(config, str(tmp_path), task=task)
