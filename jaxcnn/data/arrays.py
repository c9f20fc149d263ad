"""In-memory image datasets: batch k of epoch e a pure function of (seed, e, k), read by Grain."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from jaxcnn.data import base

Batch = base.Batch
AUGMENTATIONS = ("none", "crop_flip", "flip")


def to_float_images(images: np.ndarray) -> np.ndarray:
    """uint8 (or 0-255 float) N,H,W[,C] images -> float32 NHWC in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be N,H,W or N,H,W,C, got shape {images.shape}")
    if images.dtype == np.uint8 or images.max(initial=0) > 1.0:
        return (images.astype(np.float32) / 255.0).astype(np.float32)
    return images.astype(np.float32)


def check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Class labels (N,) as int32 after checking they are integers; `where` names file and key."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must have shape (N,), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where}: labels must be integer class indices 0..K-1, got dtype {labels.dtype} "
            f"(first values {labels[:3].tolist()}); convert them with astype(int) if they are "
            f"whole numbers, or map them to class indices"
        )
    return labels.astype(np.int32)


def check_classes(
    labels_by_split: dict[str, np.ndarray], num_classes: int, where: str,
    class_names: Sequence[str] | None = None, hint: str = "",
) -> None:
    """At least two classes; every label in [0, num_classes); every class in every split."""
    if num_classes < 2:
        raise ValueError(f"{where}: found {num_classes} class(es) {list(class_names or [])}; "
                         f"classification needs at least two")
    for split, labels in labels_by_split.items():
        if labels.size == 0:
            raise ValueError(f"{where}: {split} is empty (0 examples); every split needs "
                             f"examples, the test split for evaluation")
        outside = (labels < 0) | (labels >= num_classes)
        if outside.any():
            first = int(np.argmax(outside))
            raise ValueError(
                f"{where}: {split}[{first}] = {labels[first]} is outside [0, {num_classes}) "
                f"({int(outside.sum())} such labels); labels must be class indices{hint}")
        missing = np.setdiff1d(np.arange(num_classes), labels)
        if missing.size:
            shown = [class_names[c] for c in missing[:8]] if class_names else missing[:8].tolist()
            more = f" and {missing.size - 8} more" if missing.size > 8 else ""
            raise ValueError(
                f"{where}: {split} has no examples of class(es) {shown}{more} of {num_classes}; "
                f"every class needs examples in each split{hint}")


def pad_to(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Zero-pad NHWC images symmetrically to `size` (H, W), as LeNet-5 pads 28x28 digits."""
    h, w = images.shape[1:3]
    th, tw = size
    if (h, w) == (th, tw):
        return images
    if th < h or tw < w:
        raise ValueError(f"cannot pad images of size {(h, w)} to the smaller size {size}")
    top, left = (th - h) // 2, (tw - w) // 2
    return np.pad(images, ((0, 0), (top, th - h - top), (left, tw - w - left), (0, 0)))


def augment_batch(images: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Random crop after 4-pixel zero padding and/or horizontal flip, per image."""
    if kind == "none":
        return images
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; expected one of {AUGMENTATIONS}")
    n, h, w, _ = images.shape
    out = images
    if kind == "crop_flip":
        padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
        dy, dx = rng.integers(0, 9, size=n), rng.integers(0, 9, size=n)
        out = np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = rng.random(n) < 0.5
    out = np.where(flip[:, None, None, None], out[:, :, ::-1], out)
    return out.astype(np.float32)


def augmented_train_batch(
    read: Callable[[np.ndarray], Batch], num_train: int, augment: str, global_batch: int,
    seed: int, step: int, *, process_index: int = 0, process_count: int = 1,
) -> Batch:
    """Train batch `step` of `read(rows)` (an image batch, float NHWC in [0, 1], and labels):
    this host's rows of the epoch's permutation (base.step_rows), images augmented with the
    generator seeded by (seed, epoch, step in epoch, host, 1)."""
    epoch, index, rows = base.step_rows(global_batch, num_train, seed=seed, step=step,
                                        process_index=process_index,
                                        process_count=process_count)
    batch = read(rows)
    rng = np.random.default_rng([seed, epoch, index, process_index, 1])
    return {**batch, "image": augment_batch(batch["image"], augment, rng)}


@dataclasses.dataclass(frozen=True)
class ArrayDataset(base.InMemorySplits, base.StepBatches):
    """Train/test arrays in memory; batch k of epoch e is a pure function of (seed, e, k)."""

    name: str
    x_train: np.ndarray  # float32 NHWC in [0, 1]
    y_train: np.ndarray  # int32
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augment: str = "none"

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(
                    f"{self.name}: x_{split} must be N,H,W,C with y_{split} of length N, "
                    f"got {x.shape} and {y.shape}"
                )
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augment!r}; expected {AUGMENTATIONS}")
        for split in ("train", "test"):
            check_labels(getattr(self, f"y_{split}"), f"{self.name}: y_{split}")
        labels = np.concatenate([self.y_train, self.y_test])
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{self.name}: labels must lie in [0, {self.num_classes})")

    @property
    def mean(self) -> np.ndarray:
        return self.x_train.mean(axis=(0, 1, 2))

    @property
    def std(self) -> np.ndarray:
        return self.x_train.std(axis=(0, 1, 2)) + 1e-6

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return ("image", "label")

    def train_batch(self, global_batch: int, seed: int, step: int, *, process_index: int = 0,
                    process_count: int = 1) -> Batch:
        """Train batch `step`: this host's rows of the epoch's permutation, augmented."""
        return augmented_train_batch(self.train_examples, self.num_train, self.augment,
                                     global_batch, seed, step, process_index=process_index,
                                     process_count=process_count)

    def train_examples(self, rows: np.ndarray) -> Batch:
        return {"image": self.x_train[rows], "label": self.y_train[rows].astype(np.int32)}

    def eval_examples(self, rows: np.ndarray) -> Batch:
        return {"image": self.x_test[rows], "label": self.y_test[rows].astype(np.int32)}
