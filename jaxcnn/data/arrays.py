"""In-memory image datasets with deterministic, resumable, per-host batching."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

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


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
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
        labels = np.concatenate([self.y_train, self.y_test])
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{self.name}: labels must lie in [0, {self.num_classes})")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_eval(self) -> int:
        return len(self.x_test)

    @property
    def mean(self) -> np.ndarray:
        return self.x_train.mean(axis=(0, 1, 2))

    @property
    def std(self) -> np.ndarray:
        return self.x_train.std(axis=(0, 1, 2)) + 1e-6

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return ("image", "label")

    def steps_per_epoch(self, global_batch: int) -> int:
        return max(1, self.num_train // global_batch)

    def train_batches(
        self, global_batch: int, *, seed: int, start_step: int = 0,
        process_index: int = 0, process_count: int = 1,
    ) -> Iterator[Batch]:
        """Endless local batches from `start_step` on; each host yields its slice."""
        for epoch, index, rows in base.train_rows(
                global_batch, self.num_train, seed=seed, start_step=start_step,
                process_index=process_index, process_count=process_count):
            rng = np.random.default_rng([seed, epoch, index, process_index, 1])
            yield {
                "image": augment_batch(self.x_train[rows], self.augment, rng),
                "label": self.y_train[rows].astype(np.int32),
            }

    def eval_batches(
        self, global_batch: int, *, process_index: int = 0, process_count: int = 1
    ) -> Iterator[Batch]:
        """Every test example once; the last batch is padded and `mask` marks real rows."""
        for rows, mask in base.eval_rows(global_batch, self.num_eval,
                                         process_index=process_index,
                                         process_count=process_count):
            local = len(mask)
            yield {"image": base.pad_rows(self.x_test[rows], local),
                   "label": base.pad_rows(self.y_test[rows].astype(np.int32), local),
                   "index": base.pad_rows(rows.astype(np.int32), local),
                   "mask": mask}
