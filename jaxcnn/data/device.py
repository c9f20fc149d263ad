"""Device-resident image datasets: uint8 images decoded once, gathered and augmented on the
accelerator inside the jit-compiled step, so the step never waits for the host.

The host yields only int32 row indices (a permutation per epoch keyed by (seed, epoch)).
The training loop places `device_arrays` on the devices once and passes them to the
compiled step as an argument (a closed-over array would be embedded in the program as a
constant: 300 MB of HLO and seconds of compile for CIFAR-10); there `device_transform`
gathers the rows, pads by 4 and crops, flips, and scales to float32 [0, 1]. The
augmentation of step s is a function of fold_in(key(seed), s) alone, so a resumed run
sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import tarfile

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data import base as data_base
from jaxcnn.data.offline import IMAGE_SUFFIXES, read_image_folder

DEVICE_AUGMENTATIONS = ("none", "flip", "crop_flip")
CROP_PAD = 4  # pixels of zero padding around each image before the random crop


@dataclasses.dataclass(frozen=True, eq=False)
class DeviceImageDataset(data_base.InMemorySplits, data_base.StepBatches):
    """uint8 NHWC train/test images and int32 labels, kept whole on the device."""

    name: str
    x_train: np.ndarray  # uint8 N,H,W,C
    y_train: np.ndarray  # int32 N
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augment: str = "crop_flip"

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.uint8 or x.ndim != 4:
                raise ValueError(f"{self.name}: x_{split} must be uint8 N,H,W,C; received "
                                 f"{x.dtype} {x.shape}")
            if y.ndim != 1 or len(y) != len(x):
                raise ValueError(f"{self.name}: y_{split} must have one label per image; "
                                 f"received shape {y.shape} for {len(x)} images")
        if self.augment not in DEVICE_AUGMENTATIONS:
            raise ValueError(f"augment must be one of {DEVICE_AUGMENTATIONS}; received "
                             f"{self.augment!r}")
        labels = np.concatenate([self.y_train, self.y_test])
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{self.name}: labels must lie in [0, {self.num_classes})")

    @property
    def mean(self) -> np.ndarray:
        """Per-channel mean of the train pixels in [0, 1]."""
        return self.x_train.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32) / 255.0

    @property
    def std(self) -> np.ndarray:
        """Per-channel standard deviation of the train pixels in [0, 1]."""
        return self.x_train.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32) / 255.0 \
            + 1e-6

    @property
    def device_arrays(self) -> dict[str, np.ndarray]:
        """What the loop places on the devices once (replicated) and passes to every step."""
        return {"train_image": self.x_train, "train_label": self.y_train.astype(np.int32),
                "eval_image": self.x_test, "eval_label": self.y_test.astype(np.int32)}

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return (data_base.INDEX,)

    def train_batch(self, global_batch: int, seed: int, step: int, *, process_index: int = 0,
                    process_count: int = 1) -> dict[str, np.ndarray]:
        """{"index": int32[local]}: this host's rows of train step `step`'s permutation slice."""
        _, _, rows = data_base.step_rows(global_batch, self.num_train, seed=seed, step=step,
                                         process_index=process_index,
                                         process_count=process_count)
        return {data_base.INDEX: rows.astype(np.int32)}

    def eval_examples(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Only the rows (added as "index" by eval_batch); padding rows point at row 0."""
        return {}

    def device_transform(self, batch: dict[str, jax.Array], rng: jax.Array,
                         train: bool) -> dict[str, jax.Array]:
        """Gather the batch's rows from the resident arrays; augment (train); scale to [0, 1].

        Runs inside the jit-compiled step. `batch` holds "index" (and "mask" for eval) plus
        the `device_arrays`; returns "image" float32 NHWC in [0, 1], "label" int32, "index"
        (the example order) and, for eval, the mask.
        """
        prefix = "train" if train else "eval"
        if f"{prefix}_image" not in batch:
            raise ValueError(f"{self.name}: device_transform needs the resident arrays "
                             f"{sorted(self.device_arrays)} in the batch; received keys "
                             f"{sorted(batch)}")
        index = batch[data_base.INDEX]
        images = jnp.take(batch[f"{prefix}_image"], index, axis=0)
        out = {"label": jnp.take(batch[f"{prefix}_label"], index, axis=0), data_base.INDEX: index}
        if train:
            images = augment_on_device(images, self.augment, rng)
        out[data_base.IMAGE] = images.astype(jnp.float32) / 255.0
        if data_base.MASK in batch:
            out[data_base.MASK] = batch[data_base.MASK]
        return out


def augment_on_device(images: jax.Array, kind: str, rng: jax.Array) -> jax.Array:
    """Per-image random crop after CROP_PAD zero pixels each side, and/or horizontal flip.

    Same distribution as arrays.augment_batch (offsets uniform in [0, 2*CROP_PAD], flip with
    probability 1/2), drawn from `rng` so a step's augmentation is a pure function of it.
    """
    if kind == "none":
        return images
    if kind not in DEVICE_AUGMENTATIONS:
        raise ValueError(f"augment must be one of {DEVICE_AUGMENTATIONS}; received {kind!r}")
    n, h, w, _ = images.shape
    crop_rng, flip_rng = jax.random.split(rng)
    if kind == "crop_flip":
        offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * CROP_PAD + 1)
        padded = jnp.pad(images, ((0, 0), (CROP_PAD, CROP_PAD), (CROP_PAD, CROP_PAD), (0, 0)))
        images = jax.vmap(lambda image, dy, dx: jax.lax.dynamic_slice(
            image, (dy, dx, 0), (h, w, image.shape[-1])))(padded, offsets[:, 0], offsets[:, 1])
    flip = jax.random.bernoulli(flip_rng, 0.5, (n, 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images)


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("L" if image.mode in ("L", "I", "I;16", "1") else "RGB")
        return np.asarray(image)


def read_image_tarball(path: str, workers: int | None = None
                       ) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """{split: (uint8 NHWC images, int32 labels, class names)} from a .tar(.gz) holding
    SPLIT/CLASS/IMAGE files; classes sorted by name (the train split's), files by name."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image tarball {path!r} does not exist")
    files: dict[str, dict[str, list[tuple[str, bytes]]]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            parts = member.name.lstrip("./").split("/")
            if not member.isfile() or len(parts) != 3 or \
                    not parts[2].lower().endswith(IMAGE_SUFFIXES):
                continue
            split, label, name = parts
            files.setdefault(split, {}).setdefault(label, []).append(
                (name, tar.extractfile(member).read()))
    if "train" not in files or "test" not in files:
        raise ValueError(f"image tarball {path!r} must hold train/<class>/ and test/<class>/ "
                         f"images; found top-level folders {sorted(files)}")
    classes = sorted(files["train"])
    result = {}
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for split in ("train", "test"):
            unknown = set(files[split]) - set(classes)
            if unknown:
                raise ValueError(f"{path}: {split} has classes {sorted(unknown)} that train lacks")
            items = [(label, data) for label, name in enumerate(classes)
                     for _, data in sorted(files[split].get(name, []))]
            images = list(pool.map(_decode, [data for _, data in items], chunksize=256))
            shapes = {image.shape for image in images}
            if len(shapes) != 1:
                raise ValueError(f"{path}: {split} images have different shapes {sorted(shapes)}")
            result[split] = (np.stack(images), np.array([label for label, _ in items], np.int32),
                             classes)
    return result


def load_device_dataset(path: str, augment: str = "crop_flip") -> DeviceImageDataset:
    """A device-resident dataset from PATH/train + PATH/test class folders, or from a
    .tar/.tar.gz with that layout (read without unpacking)."""
    if os.path.isfile(path):
        splits = read_image_tarball(path)
        (x_train, y_train, classes), (x_test, y_test, _) = splits["train"], splits["test"]
    else:
        train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
        if not (os.path.isdir(train_dir) and os.path.isdir(test_dir)):
            raise FileNotFoundError(f"device dataset {path!r} must be a tarball or a folder "
                                    f"with train/ and test/ class folders")
        x_train, y_train, classes = read_image_folder(train_dir)
        x_test, y_test, _ = read_image_folder(test_dir, classes=classes)
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    return DeviceImageDataset(f"device:{path}", x_train, y_train, x_test, y_test, len(classes),
                              augment)
