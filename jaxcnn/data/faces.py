"""Identity-folder face datasets (one folder per person) and a balanced P x K batch sampler.

The AT&T/ORL layout (`s1/1.pgm .. s40/10.pgm`) and folders of JPEG/PNG both work; images of
mixed sizes are resized, and read as grayscale (channels=1) or colour (channels=3).
Hold out people, not images: `split_people` gives disjoint train and evaluation people.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np

from jaxcnn.data import base
from jaxcnn.data.arrays import AUGMENTATIONS, augment_batch, to_float_images
from jaxcnn.data.offline import IMAGE_SUFFIXES
from jaxcnn.errors import RunError

Batch = dict[str, np.ndarray]
# "faces": flip + a random small rotation, scaling and shift + brightness/contrast jitter,
# the geometric distortions Chopra, Hadsell & LeCun (2005) trained their AT&T Siamese net with.
FACE_AUGMENTATIONS = (*AUGMENTATIONS, "faces")


def random_affine(
    images: np.ndarray, rng: np.random.Generator, max_degrees: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1), max_shift: float = 0.05,
) -> np.ndarray:
    """Each NHWC image rotated, scaled and shifted (fraction of its side) at random about
    its centre; bilinear sampling, edges extended."""
    n, h, w, _ = images.shape
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, n))[:, None, None]
    zoom = rng.uniform(*scale, n)[:, None, None]
    shift_y, shift_x = (rng.uniform(-max_shift, max_shift, (2, n)) * np.array([[h], [w]]))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dy = ys[None] - cy - shift_y[:, None, None]
    dx = xs[None] - cx - shift_x[:, None, None]
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    x_in = np.clip(cos * dx + sin * dy + cx, 0, w - 1)  # the inverse map: output -> input
    y_in = np.clip(-sin * dx + cos * dy + cy, 0, h - 1)
    x0, y0 = np.minimum(x_in.astype(int), w - 2), np.minimum(y_in.astype(int), h - 2)
    fx, fy = (x_in - x0)[..., None], (y_in - y0)[..., None]
    b = np.arange(n)[:, None, None]
    top = images[b, y0, x0] * (1 - fx) + images[b, y0, x0 + 1] * fx
    bottom = images[b, y0 + 1, x0] * (1 - fx) + images[b, y0 + 1, x0 + 1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def augment_faces(images: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The batch augmentation `kind` (FACE_AUGMENTATIONS) of NHWC images in [0, 1]."""
    if kind != "faces":
        return augment_batch(images, kind, rng)
    out = random_affine(augment_batch(images, "flip", rng), rng)
    n = len(out)
    contrast = rng.uniform(0.8, 1.2, n)[:, None, None, None]
    brightness = rng.uniform(-0.1, 0.1, n)[:, None, None, None]
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip((out - mean) * contrast + mean + brightness, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class IdentityImages:
    """Face images with their person: images float32 NHWC in [0, 1], labels index `names`."""

    images: np.ndarray
    labels: np.ndarray  # int32, index into names
    names: tuple[str, ...]
    files: tuple[str, ...]  # path of each image relative to the root, "person/file"

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or self.labels.shape != (n,) or len(self.files) != n:
            raise ValueError(
                f"images must be N,H,W,C with N labels and N files; got {self.images.shape}, "
                f"{self.labels.shape}, {len(self.files)} files")

    def subset(self, people: Sequence[str]) -> IdentityImages:
        """The images of `people` only, relabelled 0..len(people)-1 in the given order."""
        missing = [p for p in people if p not in self.names]
        if missing:
            raise ValueError(f"people {missing} are not among the {len(self.names)} read")
        index = {self.names.index(p): i for i, p in enumerate(people)}
        rows = np.array([i for i, label in enumerate(self.labels) if label in index], np.int64)
        labels = np.array([index[int(self.labels[i])] for i in rows], np.int32)
        return IdentityImages(self.images[rows], labels, tuple(people),
                              tuple(self.files[i] for i in rows))

    def image_number(self, person: str, number: int) -> int:
        """Row of the person's image numbered `number` (the last integer in its file name,
        LFW's name_0003.jpg and AT&T's 3.pgm are both number 3)."""
        for row, file in enumerate(self.files):
            folder, name = file.split("/", 1)
            digits = re.findall(r"\d+", os.path.splitext(name)[0])
            if folder == person and digits and int(digits[-1]) == number:
                return row
        raise ValueError(f"no image number {number} of {person!r} among the images read")


def _natural_key(text: str) -> list:
    """Sort key putting s2 before s10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def parse_people(spec: str | None, available: Sequence[str]) -> list[str]:
    """'s1-s20', 's1,s4,s7' or 's1-s5,s9' -> those names (checked against `available`).

    A range a-b takes the available names with a's prefix whose number lies in [a, b].
    None or '' means all available people, in natural order.
    """
    ordered = sorted(available, key=_natural_key)
    if not spec:
        return ordered
    chosen: list[str] = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        match = re.fullmatch(r"(\D*)(\d+)-(\D*)(\d+)", item)
        if match and match.group(1) == match.group(3):
            prefix, lo, hi = match.group(1), int(match.group(2)), int(match.group(4))
            names = [p for p in ordered if re.fullmatch(re.escape(prefix) + r"\d+", p)
                     and lo <= int(p[len(prefix):]) <= hi]
            if len(names) != hi - lo + 1:
                raise ValueError(f"people range {item!r}: found only {names} in the folder")
        elif item in available:
            names = [item]
        else:
            raise ValueError(f"person {item!r} not found; available: {ordered[:10]}...")
        chosen += [name for name in names if name not in chosen]
    return chosen


def read_identity_folder(
    root: str, image_size: tuple[int, int] = (64, 64), channels: int = 1,
    people: Sequence[str] | None = None, min_images: int = 2,
) -> IdentityImages:
    """Every image under root/<person>/, resized to image_size (H, W), with 1 or 3 channels.

    Raises ValueError naming every person with fewer than `min_images` images (a person
    with one image makes no same-person pair and no triplet).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"identity folder {root!r} does not exist")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (colour); received {channels}")
    available = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
    names = list(people) if people is not None else sorted(available, key=_natural_key)
    if not names:
        raise ValueError(f"identity folder {root!r} has no person subfolders")
    images, labels, files, too_few = [], [], [], []
    for label, person in enumerate(names):
        folder = os.path.join(root, person)
        if not os.path.isdir(folder):
            raise ValueError(f"person {person!r} has no folder under {root!r}")
        person_files = sorted((f for f in os.listdir(folder)
                               if f.lower().endswith(IMAGE_SUFFIXES)), key=_natural_key)
        if len(person_files) < min_images:
            too_few.append(f"{person} ({len(person_files)})")
            continue
        for file in person_files:
            images.append(read_image(os.path.join(folder, file), image_size, channels))
            labels.append(label)
            files.append(f"{person}/{file}")
    if too_few:
        raise ValueError(
            f"identity folder {root!r}: every person needs at least {min_images} images; "
            f"these have fewer: {', '.join(too_few)}")
    return IdentityImages(np.stack(images), np.array(labels, np.int32), tuple(names),
                          tuple(files))


class ImageReadError(RunError, ValueError):
    """An image file in a folder that cannot be read; the message names it."""


def read_image(path: str, image_size: tuple[int, int], channels: int = 1) -> np.ndarray:
    """One image file as float32 (H, W, channels) in [0, 1], resized (bilinear) to image_size."""
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (colour); received {channels}")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
    except OSError as error:  # not an image, truncated, unreadable (PIL says which)
        raise ImageReadError(f"cannot read image {path} ({error}); remove or replace that "
                             "file") from None
    return to_float_images(np.asarray(image)[None])[0]


def list_people(root: str) -> list[str]:
    """The person folders under root, in natural order (s1, s2, ..., s10)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"identity folder {root!r} does not exist")
    return sorted((d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))),
                  key=_natural_key)


def read_tfds_lfw(
    data_dir: str | None = None, image_size: tuple[int, int] = (64, 64), channels: int = 3,
    min_images: int = 2, download: bool = False,
) -> IdentityImages:
    """TFDS `lfw` (needs the prepared dataset or a network) as IdentityImages.

    People with fewer than `min_images` images are left out (most LFW people have one).
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    data = tfds.as_numpy(tfds.load("lfw", split="train", data_dir=data_dir, download=download))
    by_person: dict[str, list[np.ndarray]] = {}
    for example in data:
        name = example["label"].decode() if isinstance(example["label"], bytes) else str(
            example["label"])
        image = tf.image.resize(example["image"], image_size).numpy()
        if channels == 1:
            image = image @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
        by_person.setdefault(name, []).append(image)
    names = sorted(p for p, imgs in by_person.items() if len(imgs) >= min_images)
    images, labels, files = [], [], []
    for label, name in enumerate(names):
        for number, image in enumerate(by_person[name], start=1):
            images.append(image)
            labels.append(label)
            files.append(f"{name}/{name}_{number:04d}.jpg")
    return IdentityImages(np.clip(np.stack(images) / 255.0, 0, 1).astype(np.float32),
                          np.array(labels, np.int32), tuple(names), tuple(files))


@dataclasses.dataclass(frozen=True)
class IdentityDataset(base.StepBatches):
    """Train people and (disjoint) evaluation people on the project's dataset protocol.

    Train batches hold `people_per_batch` (P) identities x `images_per_person` (K) images,
    person-major; batch `step` is a pure function of (seed, step), so a run resumes
    exactly. A person with fewer than K images contributes K images drawn with replacement.
    Eval batches walk the evaluation people's images once, padded, with a `mask`.
    """

    name: str
    train: IdentityImages
    eval: IdentityImages
    images_per_person: int = 4
    augment: str = "none"

    def __post_init__(self):
        if self.images_per_person < 2:
            raise ValueError(
                f"images_per_person must be >= 2 (a triplet needs a positive); received "
                f"{self.images_per_person}")
        if self.augment not in FACE_AUGMENTATIONS:
            raise ValueError(
                f"unknown augmentation {self.augment!r}; expected {FACE_AUGMENTATIONS}")
        shared = set(self.train.names) & set(self.eval.names)
        if shared:
            raise ValueError(f"train and eval people must be disjoint; both hold {sorted(shared)}")
        if self.train.images.shape[1:] != self.eval.images.shape[1:]:
            raise ValueError(f"train images {self.train.images.shape[1:]} and eval images "
                             f"{self.eval.images.shape[1:]} must have one shape")

    @property
    def num_classes(self) -> int:
        return len(self.train.names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.train.images)

    @property
    def num_eval(self) -> int:
        return len(self.eval.images)

    @property
    def mean(self) -> np.ndarray:
        return self.train.images.mean(axis=(0, 1, 2))

    @property
    def std(self) -> np.ndarray:
        return self.train.images.std(axis=(0, 1, 2)) + 1e-6

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return ("image", "label")

    def people_per_batch(self, global_batch: int) -> int:
        """P = global_batch / K, checked against the number of train people."""
        k = self.images_per_person
        if global_batch % k or not 2 <= global_batch // k <= self.num_classes:
            raise ValueError(
                f"global batch {global_batch} must be P x images_per_person ({k}) with "
                f"2 <= P <= {self.num_classes} train people")
        return global_batch // k

    def steps_per_epoch(self, global_batch: int) -> int:
        return max(1, self.num_train // global_batch)

    def sample_rows(self, global_batch: int, seed: int, step: int) -> np.ndarray:
        """The train rows of batch `step`: P distinct people x K images, person-major."""
        p, k = self.people_per_batch(global_batch), self.images_per_person
        rng = np.random.default_rng([seed, step])
        people = rng.choice(self.num_classes, size=p, replace=False)
        rows = []
        for person in people:
            own = np.flatnonzero(self.train.labels == person)
            rows.append(rng.choice(own, size=k, replace=len(own) < k))
        return np.concatenate(rows)

    def check_train_batch(self, global_batch: int, process_count: int) -> None:
        base.local_batch_size(global_batch, process_count)
        self.people_per_batch(global_batch)

    def train_batch(self, global_batch: int, seed: int, step: int, *, process_index: int = 0,
                    process_count: int = 1) -> Batch:
        """Train batch `step`: this host's slice of its P x K rows, augmented."""
        local = base.local_batch_size(global_batch, process_count)
        rows = self.sample_rows(global_batch, seed, step)
        rows = rows[process_index * local : (process_index + 1) * local]
        rng = np.random.default_rng([seed, step, process_index, 1])
        return {"image": augment_faces(self.train.images[rows], self.augment, rng),
                "label": self.train.labels[rows].astype(np.int32)}

    def eval_examples(self, rows: np.ndarray) -> Batch:
        return {"image": self.eval.images[rows], "label": self.eval.labels[rows]}


def identity_dataset(
    root: str, train_people: str | None, eval_people: str | None,
    image_size: tuple[int, int] = (64, 64), channels: int = 1, images_per_person: int = 4,
    augment: str = "none", train_root: str | None = None,
) -> IdentityDataset:
    """Train people from `train_root` (default: root) and evaluation people from `root`.

    In one folder the people split by name (e.g. 's1-s20' / 's21-s30'; eval_people '' = all
    not trained on). When root is another folder (e.g. only new people), every person in it
    is evaluated and `eval_people` is not used; a person named like a training person is an
    error.
    """
    train_root = train_root or root
    train = parse_people(train_people, list_people(train_root))
    available = list_people(root)
    if os.path.realpath(train_root) == os.path.realpath(root):
        evaluate = parse_people(eval_people, available) if eval_people else [
            p for p in available if p not in train]
    else:
        evaluate = available
    return IdentityDataset(
        f"faces:{root}", read_identity_folder(train_root, image_size, channels, train),
        read_identity_folder(root, image_size, channels, evaluate), images_per_person, augment)
