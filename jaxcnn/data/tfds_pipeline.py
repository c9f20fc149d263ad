"""TensorFlow Datasets input pipelines: Grain over the random-access data source where the
dataset is prepared as ArrayRecord, else tf.data (per-host splits, seeded, resumable by
skipping); padded eval either way."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import logging
import math
import os
import sys
from collections.abc import Iterator

import numpy as np

from jaxcnn.data import base
from jaxcnn.data.arrays import AUGMENTATIONS, augmented_train_batch, pad_to, to_float_images

Batch = base.Batch

# Per-dataset facts: eval split, per-channel mean/std of [0, 1] pixels, default augmentation.
KNOWN_DATASETS = {
    "mnist": ("test", (0.1307,), (0.3081,), "none"),
    "fashion_mnist": ("test", (0.2860,), (0.3530,), "none"),
    "cifar10": ("test", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "crop_flip"),
    "cifar100": ("test", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "crop_flip"),
    "imagenette": ("validation", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "inception_crop"),
    "imagenet2012": ("validation", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "inception_crop"),
}
EVAL_CROP_FRACTION = 0.875  # resize the short side to size / 0.875, then centre-crop


def import_tensorflow():
    """TensorFlow, imported on first use (TFDS data only) without its C++ start-up banners.

    TF 2.21 prints its oneDNN and CPU-feature lines before its logging reads
    TF_CPP_MIN_LOG_LEVEL, so stderr is redirected for the import itself; set
    TF_CPP_MIN_LOG_LEVEL=0 to see them. Later TF messages below WARNING stay hidden (level 1).
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        with _stderr_to_devnull(os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0"):
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]


@contextlib.contextmanager
def _stderr_to_devnull(enabled: bool):
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _tf():
    tf = import_tensorflow()
    # TF must never claim an accelerator that JAX is about to use.
    tf.config.set_visible_devices([], "GPU")
    return tf


def _not_prepared_message(name: str, builder_dir: str) -> str:
    return (
        f"TFDS dataset {name!r} is not prepared under {builder_dir!r}. Prepare it on a machine "
        f"with network access (`tfds build {name} --data_dir=DIR`, or run once with "
        f"config.download=True), then point config.data_dir at DIR; imagenet2012 also needs "
        f"the manual download in DIR/downloads/manual. Offline, use dataset='embedded_mnist', "
        f"'npz:PATH' or 'folder:PATH'."
    )


def open_builder(name: str, data_dir: str | None, download: bool):
    """The TFDS builder for `name`, prepared; fails at once with a how-to if it is not."""
    import tensorflow_datasets as tfds  # imports TensorFlow lazily, not yet

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(_unknown_name_message(name, tfds.list_builders(
            with_community_datasets=False))) from None  # TFDS's message lists ~500 names
    except Exception as error:  # registry problems: keep the first line only
        first = (str(error).splitlines() or [""])[0]
        raise ValueError(f"cannot open TFDS dataset {name!r} (data_dir={data_dir!r}): "
                         f"{type(error).__name__}: {first}") from error
    if download:
        import_tensorflow()  # before TFDS imports it, with its banners
        try:
            builder.download_and_prepare()
        except Exception as error:
            first = (str(error).splitlines() or [""])[0]
            raise RuntimeError(
                f"downloading TFDS dataset {name!r} into {builder.data_dir!r} failed "
                f"({type(error).__name__}: {first}). Check network access, or prepare it on "
                f"another machine (`tfds build {name} --data_dir=DIR`) and point "
                f"config.data_dir at DIR") from error
    elif not os.path.exists(os.path.join(builder.data_dir, "dataset_info.json")):
        raise FileNotFoundError(_not_prepared_message(name, builder.data_dir))
    import_tensorflow()  # before TFDS imports it, with its banners
    return builder


def _unknown_name_message(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return (f"unknown dataset {name!r}.{hint} Offline choices: 'embedded_mnist', 'npz:PATH', "
            f"'folder:PATH'; TFDS has {len(known)} more (tensorflow_datasets.list_builders()).")


def tf_data_reason(info, augment: str) -> str | None:
    """Why a prepared TFDS dataset must read through tf.data; None where Grain can read it."""
    from tensorflow_datasets.core import file_adapters

    if augment not in AUGMENTATIONS:
        return (f"augment={augment!r} has no numpy version (Grain reads TFDS with "
                f"{', '.join(AUGMENTATIONS)})")
    formats = info.available_file_formats()
    if not formats & file_adapters.FileFormat.with_random_access():
        prepared = ", ".join(sorted(f.value for f in formats)) or "no recorded file format"
        return (f"it is prepared as {prepared}, without random access (`tfds build NAME "
                f"--file_format=array_record` prepares it for Grain)")
    return None


def fit_image(image: np.ndarray, size: tuple[int, int], pad: bool) -> np.ndarray:
    """One uint8 HWC image fitted to `size` (H, W) as the tf.data path fits it: centred zero
    padding when `pad`, else the short side resized (bilinear, antialiased) to
    max(size) / EVAL_CROP_FRACTION and the centre cropped."""
    if pad:
        return pad_to(image[None], size)[0]
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(size) / EVAL_CROP_FRACTION / min(h, w)
    new_h, new_w = round(h * scale), round(w * scale)  # both >= size: scale > max(size)/min
    resized = np.asarray(Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
                         .resize((new_w, new_h), Image.BILINEAR)).reshape(new_h, new_w, -1)
    top, left = (new_h - size[0]) // 2, (new_w - size[1]) // 2
    return resized[top:top + size[0], left:left + size[1]]


def _to_float(tf, image):
    return tf.cast(image, tf.float32) / 255.0


def _fit_eval(tf, image, size):
    """Pad a smaller image to `size`; resize+centre-crop a larger one (ImageNet eval)."""
    h, w = size
    shape = tf.shape(image)
    if image.shape[0] is not None and image.shape[0] <= h and image.shape[1] <= w:
        return tf.image.resize_with_crop_or_pad(image, h, w)
    scale = tf.cast(max(h, w), tf.float32) / EVAL_CROP_FRACTION / tf.cast(
        tf.minimum(shape[0], shape[1]), tf.float32)
    new = tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, new, antialias=True)
    return tf.image.resize_with_crop_or_pad(image, h, w)


def _augment(tf, image, size, kind, seed):
    """Train-time augmentation with stateless ops seeded per example (resumable)."""
    h, w = size
    if kind == "inception_crop":
        begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), tf.zeros([1, 0, 4]), seed=seed, area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3), use_image_if_no_bounding_boxes=True)
        image = tf.image.resize(tf.slice(image, begin, crop), (h, w), antialias=True)
    else:
        image = _fit_eval(tf, image, size)
        if kind == "crop_flip":
            image = tf.image.resize_with_crop_or_pad(image, h + 8, w + 8)
            image = tf.image.stateless_random_crop(image, (h, w, image.shape[-1]), seed=seed)
    if kind != "none":
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    return image


@dataclasses.dataclass
class TFDSDataset(base.StepBatches):
    """A TFDS classification dataset with the same batch interface as ArrayDataset.

    Prepared as ArrayRecord (random access), it reads through Grain like the arrays kind:
    train batch k is the augmented rows base.step_rows(.., k, ..) of the train split, with
    the iterator state {"next_step": k}. Otherwise (`tf_data_reason`, logged once) tf.data.
    """

    name: str
    data_dir: str | None = None
    image_size: tuple[int, int] | None = None
    augment: str | None = None
    download: bool = False
    train_split: str = "train"
    eval_split: str | None = None
    shuffle_buffer: int = 16_384
    num_classes: int | None = None  # when given, must match the dataset's label feature

    def __post_init__(self):
        known = KNOWN_DATASETS.get(self.name, ("test", None, None, "none"))
        self.eval_split = self.eval_split or known[0]
        self.augment = self.augment or known[3]
        choices = (*AUGMENTATIONS, "inception_crop")  # inception_crop: tf.data only
        if self.augment not in choices:
            raise ValueError(f"unknown augmentation {self.augment!r} for TFDS dataset "
                             f"{self.name!r}; expected one of {choices}")
        self.builder = open_builder(self.name, self.data_dir, self.download)
        info = self.builder.info
        image_feature = info.features["image"]
        native = image_feature.shape[:2]
        if self.image_size is None:
            if None in native:
                raise ValueError(f"{self.name} has variable image sizes; set config.image_size")
            self.image_size = tuple(native)
        # As _fit_eval: a fixed size no larger than image_size is padded, others resized.
        self.pad_only = None not in native and all(n <= s for n, s in zip(native, self.image_size))
        self.channels = image_feature.shape[-1]
        classes = getattr(info.features["label"], "num_classes", None) \
            if "label" in info.features else None
        if classes is None:
            raise ValueError(f"TFDS dataset {self.name!r} has no ClassLabel feature 'label' "
                             f"(features: {list(info.features)}); it is not a classification set")
        if self.num_classes is not None and self.num_classes != classes:
            raise ValueError(f"TFDS dataset {self.name!r} has {classes} classes but "
                             f"config.num_classes={self.num_classes}")
        if classes < 2:
            raise ValueError(f"TFDS dataset {self.name!r} has {classes} class(es); "
                             f"classification needs at least two")
        self.num_classes = classes
        splits = info.splits
        for role, split in (("train", self.train_split), ("eval", self.eval_split)):
            examples = splits[split].num_examples if split in splits else 0
            if not examples:
                raise ValueError(f"TFDS dataset {self.name!r}: the {role} split {split!r} is "
                                 f"missing or empty (splits: {list(splits)})")
            setattr(self, f"num_{role}", examples)
        channels = self.channels
        self.mean = np.array(known[1] or (0.5,) * channels, np.float32)
        self.std = np.array(known[2] or (0.25,) * channels, np.float32)
        self.tf_data_reason = tf_data_reason(info, self.augment)
        self.sources = None
        if self.tf_data_reason:
            logging.warning("TFDS %s reads through tf.data, not Grain: %s", self.name,
                            self.tf_data_reason)
        else:
            self.sources = {split: self.builder.as_data_source(split=split)
                            for split in (self.train_split, self.eval_split)}

    @property
    def reader(self) -> str:
        """'grain' (random-access data source) or 'tf.data'."""
        return "tf.data" if self.sources is None else "grain"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return ("image", "label")

    def steps_per_epoch(self, global_batch: int) -> int:
        return max(1, self.num_train // global_batch)

    def check_train_batch(self, global_batch: int, process_count: int) -> None:
        base.check_batch(global_batch, self.num_train, process_count)

    def read_examples(self, split: str, rows: np.ndarray) -> Batch:
        """Examples `rows` of `split` from its data source: images fitted to image_size
        (float32 NHWC in [0, 1]) and int32 labels."""
        source = self.sources[split]  # an ArrayRecordDataSource: __getitems__ reads a batch
        examples = source.__getitems__(rows.tolist()) if len(rows) else []
        images = [fit_image(e["image"], self.image_size, self.pad_only) for e in examples]
        return {"image": to_float_images(np.stack(images)) if images
                else np.zeros((0, *self.image_shape), np.float32),
                "label": np.array([e["label"] for e in examples], np.int32)}

    def train_batch(self, global_batch: int, seed: int, step: int, *, process_index: int = 0,
                    process_count: int = 1) -> Batch:
        """Train batch `step` read from the data source, augmented as ArrayDataset's."""
        return augmented_train_batch(
            functools.partial(self.read_examples, self.train_split), self.num_train,
            self.augment, global_batch, seed, step, process_index=process_index,
            process_count=process_count)

    def eval_examples(self, rows: np.ndarray) -> Batch:
        return self.read_examples(self.eval_split, rows)

    def train_batches(
        self, global_batch: int, *, seed: int, start_step: int = 0,
        process_index: int = 0, process_count: int = 1, workers: int = 0,
    ) -> Iterator[Batch]:
        """Endless local batches from `start_step` on: Grain's StepIterator (state
        {"next_step": k}, `workers` processes) where the data has random access, else tf.data."""
        if self.sources is None:
            return self._tf_train_batches(global_batch, seed=seed, start_step=start_step,
                                          process_index=process_index,
                                          process_count=process_count)
        return super().train_batches(global_batch, seed=seed, start_step=start_step,
                                     process_index=process_index, process_count=process_count,
                                     workers=workers)

    def eval_batches(
        self, global_batch: int, *, process_index: int = 0, process_count: int = 1
    ) -> Iterator[Batch]:
        """Every eval example once, padded with a `mask`, with its `index` (Grain or tf.data)."""
        if self.sources is None:
            return self._tf_eval_batches(global_batch, process_index=process_index,
                                         process_count=process_count)
        return super().eval_batches(global_batch, process_index=process_index,
                                    process_count=process_count)

    def _host_split(self, split: str, process_index: int, process_count: int, drop: bool):
        import tensorflow_datasets as tfds

        if process_count == 1:
            return split
        return tfds.even_splits(split, n=process_count, drop_remainder=drop)[process_index]

    def _read(self, split: str, shuffle_seed: int | None):
        import tensorflow_datasets as tfds

        read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
        return self.builder.as_dataset(
            split=split, shuffle_files=shuffle_seed is not None, read_config=read_config,
            decoders={"image": tfds.decode.SkipDecoding()},
        )

    def _tf_train_batches(
        self, global_batch: int, *, seed: int, start_step: int = 0,
        process_index: int = 0, process_count: int = 1,
    ) -> Iterator[Batch]:
        """tf.data's endless local batches from `start_step` on (skipping is done before
        decoding); tf.data parallelises itself (AUTOTUNE), so config.data_workers is unused."""
        tf = _tf()
        local = base.local_batch_size(global_batch, process_count)
        split = self._host_split(self.train_split, process_index, process_count, True)
        ds = self._read(split, shuffle_seed=seed).repeat()
        ds = ds.shuffle(min(self.shuffle_buffer, self.num_train), seed=seed,
                        reshuffle_each_iteration=True)
        ds = ds.enumerate().skip(start_step * local)
        decoder = self.builder.info.features["image"]
        size, kind, base_seed = self.image_size, self.augment, seed

        def prepare(index, example):
            image = _to_float(tf, decoder.decode_example(example["image"]))
            example_seed = tf.stack([tf.cast(base_seed, tf.int64), index])
            return {"image": _augment(tf, image, size, kind, example_seed),
                    "label": tf.cast(example["label"], tf.int32)}

        ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        yield from ds.as_numpy_iterator()

    def _tf_eval_batches(
        self, global_batch: int, *, process_index: int = 0, process_count: int = 1
    ) -> Iterator[Batch]:
        """tf.data: each host's share once; every host yields the same number of batches."""
        tf = _tf()
        local = base.local_batch_size(global_batch, process_count)
        split = self._host_split(self.eval_split, process_index, process_count, False)
        decoder = self.builder.info.features["image"]
        size = self.image_size
        # Position in the whole eval split, so gathered outputs can be put in dataset order.
        offset = sum(self.builder.info.splits[
            self._host_split(self.eval_split, i, process_count, False)].num_examples
            for i in range(process_index))

        def prepare(index, example):
            image = _to_float(tf, decoder.decode_example(example["image"]))
            return {"image": _fit_eval(tf, image, size),
                    "label": tf.cast(example["label"], tf.int32),
                    "index": tf.cast(index + offset, tf.int32), "mask": tf.constant(1.0)}

        ds = self._read(split, shuffle_seed=None).enumerate().map(
            prepare, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(local).prefetch(tf.data.AUTOTUNE)
        num_batches = math.ceil(math.ceil(self.num_eval / process_count) / local)
        produced = 0
        for batch in ds.as_numpy_iterator():
            if produced == num_batches:
                break
            yield {key: base.pad_rows(value, local) for key, value in batch.items()}
            produced += 1
        empty = {"image": np.zeros((local, *self.image_shape), np.float32),
                 "label": np.zeros((local,), np.int32), "index": np.zeros((local,), np.int32),
                 "mask": np.zeros((local,), np.float32)}
        for _ in range(produced, num_batches):
            yield empty
