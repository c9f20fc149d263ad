"""Detection datasets: synthetic scenes, annotated files (VOC XML and YOLO txt folders, a
YOLO data.yaml, COCO JSON; read by jaxcnn.data.detection_formats), TFDS `voc`.

Every image comes with padded boxes (M, 4) as (cx, cy, h, w) relative to the image and
classes (M,) int32 with -1 for padding. Batches follow jaxcnn.data.arrays: "image", the
training targets that `targets_fn(boxes, classes)` makes (e.g. the localization vector),
and "boxes", "classes", "num_objects" for evaluation; eval batches are padded with "mask".
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable, Sequence

import numpy as np

from jaxcnn.data import base
from jaxcnn.data import detection_formats as formats
from jaxcnn.data.detection_formats import (  # noqa: F401  (re-exported)
    IMAGE_SUFFIXES,
    ON_ERROR,
    AnnotatedSplit,
    AnnotationError,
    Counts,
    crowd_class,
    read_coco,
    read_voc_folder,
    read_yolo_folder,
    read_yolo_yaml,
)
from jaxcnn.data.holdout import with_validation_split

Batch = base.Batch

LECTURE_CLASSES = ("pedestrian", "car", "motorcycle")  # class ids 0, 1, 2; pc = 0 is background
DETECTION_AUGMENTATIONS = ("none", "flip")
TargetsFn = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


# --- the dataset ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DetectionDataset(base.InMemorySplits, base.StepBatches):
    """Images with padded boxes; batch k of epoch e is a pure function of (seed, e, k)."""

    name: str
    x_train: np.ndarray  # float32 NHWC in [0, 1]
    boxes_train: np.ndarray  # float32 (N, M, 4) (cx, cy, h, w) relative
    classes_train: np.ndarray  # int32 (N, M), -1 = padding, -2 - k = crowd region of class k
    x_test: np.ndarray
    boxes_test: np.ndarray
    classes_test: np.ndarray
    class_names: tuple[str, ...]
    targets_fn: TargetsFn | None = None
    augment: str = "none"
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) left out by the reader
    counts: dict[str, Counts] = dataclasses.field(default_factory=dict)  # per split read

    def __post_init__(self):
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            boxes, classes = getattr(self, f"boxes_{split}"), getattr(self, f"classes_{split}")
            if (x.ndim != 4 or boxes.ndim != 3 or boxes.shape[-1] != 4
                    or classes.shape != boxes.shape[:2] or len(x) != len(boxes)):
                raise ValueError(
                    f"{self.name}: x_{split} (N,H,W,C), boxes_{split} (N,M,4) and "
                    f"classes_{split} (N,M) must agree, got {x.shape}, {boxes.shape}, "
                    f"{classes.shape}")
            if classes.size and classes.max() >= len(self.class_names):
                raise ValueError(f"{self.name}: classes_{split} must lie in "
                                 f"[-1, {len(self.class_names)}), got max {classes.max()}")
        if self.augment not in DETECTION_AUGMENTATIONS:
            raise ValueError(f"augment must be one of {DETECTION_AUGMENTATIONS}, "
                             f"got {self.augment!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def mean(self) -> np.ndarray:
        return self.x_train.mean(axis=(0, 1, 2))

    @property
    def std(self) -> np.ndarray:
        return self.x_train.std(axis=(0, 1, 2)) + 1e-6

    def _batch(self, images, boxes, classes) -> Batch:
        batch = {"image": images, "boxes": boxes.astype(np.float32),
                 "classes": classes.astype(np.int32),
                 "num_objects": (classes >= 0).sum(axis=1).astype(np.int32)}
        if self.targets_fn is not None:
            batch.update(self.targets_fn(batch["boxes"], batch["classes"]))
        return batch

    @property
    def batch_keys(self) -> tuple[str, ...]:
        empty = np.zeros((0, *self.boxes_train.shape[1:]), np.float32)
        return tuple(self._batch(self.x_train[:0], empty, self.classes_train[:0]))

    def train_batch(self, global_batch: int, seed: int, step: int, *, process_index: int = 0,
                    process_count: int = 1) -> Batch:
        """Train batch `step`: this host's rows of the epoch's permutation, flipped at random."""
        epoch, index, rows = base.step_rows(global_batch, self.num_train, seed=seed, step=step,
                                            process_index=process_index,
                                            process_count=process_count)
        images, boxes = self.x_train[rows], self.boxes_train[rows].copy()
        if self.augment == "flip":
            flip = np.random.default_rng([seed, epoch, index, process_index, 1]).random(
                len(rows)) < 0.5
            images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
            boxes[..., 0] = np.where(flip[:, None], 1.0 - boxes[..., 0], boxes[..., 0])
        return self._batch(images, boxes, self.classes_train[rows])

    def eval_batch(self, global_batch: int, number: int, *, process_index: int = 0,
                   process_count: int = 1) -> Batch:
        """Padded eval batch `number` (padding: no objects, class -1), `index` and `mask`."""
        rows, mask = base.eval_rows(global_batch, self.num_eval, number,
                                    process_index=process_index, process_count=process_count)
        local = len(mask)
        batch = self._batch(base.pad_rows(self.x_test[rows], local),
                            base.pad_rows(self.boxes_test[rows], local),
                            base.pad_rows(self.classes_test[rows], local, fill=-1))
        return {**batch, "index": base.pad_rows(rows.astype(np.int32), local), "mask": mask}


def localization_targets(num_classes: int) -> TargetsFn:
    """Targets for classification with localization: "target" (B, 5+K) from each first object."""

    def targets(boxes: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
        present = classes[:, 0] >= 0
        y = np.zeros((len(classes), 5 + num_classes), np.float32)
        y[:, 0] = present
        y[present, 1:5] = boxes[present, 0]
        y[present, 5 + classes[present, 0]] = 1.0
        return {"target": y}

    return targets


def pad_objects(boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray],
                max_objects: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (n_i, 4) boxes and (n_i,) classes -> (N, M, 4) and (N, M) padded with -1."""
    m = max_objects or max([len(c) for c in classes] + [1])
    out_boxes = np.zeros((len(boxes), m, 4), np.float32)
    out_classes = np.full((len(boxes), m), -1, np.int32)
    for i, (b, c) in enumerate(zip(boxes, classes)):
        if len(c) > m:
            raise ValueError(f"image {i} has {len(c)} objects, more than max_objects={m}")
        out_boxes[i, :len(c)], out_classes[i, :len(c)] = np.asarray(b).reshape(-1, 4), c
    return out_boxes, out_classes


# --- synthetic scenes -------------------------------------------------------------------

# Shape-by-outline drawing. Each returns a boolean mask over the box's pixel grid, where
# u, v are the pixel centres' positions across the box's width and height in [0, 1].


def _disc(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _rect(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _pedestrian(u, v, aspect):
    head = _disc(u, v, 0.5, 0.11, 0.2, 0.1)
    torso = _rect(u, v, 0.3, 0.7, 0.2, 0.6)
    arms = _rect(u, v, 0.05, 0.95, 0.24, 0.33)
    legs = _rect(u, v, 0.28, 0.45, 0.6, 1.0) | _rect(u, v, 0.55, 0.72, 0.6, 1.0)
    return head | torso | arms | legs


def _car(u, v, aspect):
    body = _rect(u, v, 0.0, 1.0, 0.4, 0.78)
    cabin = _rect(u, v, 0.22, 0.72, 0.05, 0.4) & (v >= 0.4 - 0.35 * (u - 0.22) / 0.12)
    rv = 0.22
    ru = rv * aspect  # round wheels: aspect = box height / width
    wheels = _disc(u, v, 0.22, 1 - rv, ru, rv) | _disc(u, v, 0.78, 1 - rv, ru, rv)
    return body | cabin | wheels


def _motorcycle(u, v, aspect):
    rv = 0.3
    ru = rv * aspect
    rings = ((_disc(u, v, ru, 1 - rv, ru, rv) & ~_disc(u, v, ru, 1 - rv, ru * 0.5, rv * 0.5))
             | (_disc(u, v, 1 - ru, 1 - rv, ru, rv)
                & ~_disc(u, v, 1 - ru, 1 - rv, ru * 0.5, rv * 0.5)))
    frame = _rect(u, v, ru, 1 - ru, 0.5, 0.62)
    seat = _rect(u, v, 0.25, 0.55, 0.38, 0.5)
    fork = _rect(u, v, 0.68, 0.76, 0.0, 0.7)
    bar = _rect(u, v, 0.6, 0.9, 0.0, 0.08)
    return rings | frame | seat | fork | bar


_SHAPES = (_pedestrian, _car, _motorcycle)
# Height / width of each class's box, sampled in this range.
_ASPECT = ((1.8, 2.6), (0.45, 0.65), (0.6, 0.8))


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random textured background: smooth colour noise plus stripes or checks."""
    coarse = rng.random((size // 16 + 2, size // 16 + 2, 3))
    yy = np.linspace(0, coarse.shape[0] - 1.001, size)
    xx = np.linspace(0, coarse.shape[1] - 1.001, size)
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = (yy - y0)[:, None, None], (xx - x0)[None, :, None]
    smooth = (coarse[y0][:, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1][:, x0] * fy * (1 - fx)
              + coarse[y0][:, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1][:, x0 + 1] * fy * fx)
    period = rng.integers(3, 9)
    grid_y, grid_x = np.mgrid[:size, :size]
    kind = rng.integers(3)
    if kind == 0:
        pattern = ((grid_x + grid_y) // period) % 2
    elif kind == 1:
        pattern = ((grid_x // period) + (grid_y // period)) % 2
    else:
        pattern = rng.random((size, size)) > 0.5
    base = rng.uniform(0.2, 0.8, 3)
    image = 0.5 * base + 0.3 * smooth + 0.15 * pattern[..., None] * rng.uniform(-1, 1, 3)
    return np.clip(image, 0, 1)


def _object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    for _ in range(50):
        colour = rng.random(3)
        if np.linalg.norm(colour - background) > 0.45:
            return colour
    return 1.0 - background


def _sample_box(rng, cls, size, min_px, max_px, centre_range=None):
    """A (cx, cy, h, w) pixel box of class `cls` inside the image; None if it cannot fit."""
    aspect = rng.uniform(*_ASPECT[cls])
    longest = rng.uniform(min_px, max_px)
    h, w = (longest, longest / aspect) if aspect >= 1 else (longest * aspect, longest)
    h, w = max(h, min(min_px, longest) * 0.5), max(w, min(min_px, longest) * 0.5)
    if centre_range is None:
        (x_lo, x_hi), (y_lo, y_hi) = (w / 2, size - w / 2), (h / 2, size - h / 2)
    else:
        (x_lo, x_hi), (y_lo, y_hi) = centre_range
        x_lo, x_hi = max(x_lo, w / 2), min(x_hi, size - w / 2)
        y_lo, y_hi = max(y_lo, h / 2), min(y_hi, size - h / 2)
        if x_lo > x_hi or y_lo > y_hi:
            return None
    return np.array([rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi), h, w])


def _shape_pixels(box_px: np.ndarray, cls: int, size: int) -> tuple[tuple[slice, slice],
                                                                      np.ndarray]:
    """(the box's region of a size x size image, mask of class `cls`'s shape in it)."""
    cx, cy, h, w = box_px
    x0, x1 = int(np.floor(cx - w / 2)), int(np.ceil(cx + w / 2))
    y0, y1 = int(np.floor(cy - h / 2)), int(np.ceil(cy + h / 2))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    u, v = (xx - (cx - w / 2)) / w, (yy - (cy - h / 2)) / h
    mask = _SHAPES[cls](u, v, h / w) & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    return (slice(y0, y1), slice(x0, x1)), mask


def _draw(image: np.ndarray, box_px: np.ndarray, cls: int, colour: np.ndarray) -> None:
    region, mask = _shape_pixels(box_px, cls, image.shape[0])
    image[region][mask] = colour


def scene_labels(boxes: np.ndarray, classes: np.ndarray, size: int) -> np.ndarray:
    """Per-pixel labels (B, size, size) int32 of generated scenes from their (B, M, 4)
    relative boxes and (B, M) classes (-1 padding): 0 background, class + 1 where the
    object's shape was drawn, larger objects first as `synthetic_scene` draws them."""
    labels = np.zeros((len(boxes), size, size), np.int32)
    for out, scene_boxes, scene_classes in zip(labels, boxes, classes):
        valid = scene_classes >= 0
        boxes_px = scene_boxes[valid].astype(np.float64) * size
        for i in np.argsort(-(boxes_px[:, 2] * boxes_px[:, 3]), kind="stable"):
            region, mask = _shape_pixels(boxes_px[i], int(scene_classes[valid][i]), size)
            out[region][mask] = scene_classes[valid][i] + 1
    return labels


def synthetic_scene(
    seed: int, index: int, *, image_size: int = 96, min_objects: int = 1, max_objects: int = 6,
    min_px: float = 10, max_px: float = 48, grid: int = 6, shared_cell_every: int = 3,
    single_object: bool = False, background_fraction: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scene `index` of stream `seed`: image (S, S, 3) float32, boxes (n, 4) relative, classes (n,).

    Every `shared_cell_every`-th scene (index % k == 0) puts two object centres in one cell
    of the grid x grid layout; single_object draws 0 (with background_fraction) or 1 object.
    """
    rng = np.random.default_rng([seed, index])
    image = _texture(rng, image_size)
    background = image.mean(axis=(0, 1))
    if single_object:
        count = 0 if rng.random() < background_fraction else 1
    else:
        count = int(rng.integers(min_objects, max_objects + 1))
    classes = rng.integers(0, len(_SHAPES), count)
    boxes: list[np.ndarray] = []
    share = (not single_object) and count >= 2 and index % shared_cell_every == 0
    for k, cls in enumerate(classes):
        for _ in range(100):
            if share and k == 1:
                cell = image_size / grid
                col, row = (np.floor(boxes[0][:2] / cell)).astype(int)
                box = _sample_box(rng, cls, image_size, min_px, max_px,
                                  ((col * cell, (col + 1) * cell - 1e-3),
                                   (row * cell, (row + 1) * cell - 1e-3)))
                if box is None:
                    continue
                break
            box = _sample_box(rng, cls, image_size, min_px, max_px)
            # Keep objects recognisable: little overlap with the others (except the pair).
            if all(_pixel_iou(box, other) < 0.2 for other in boxes):
                break
        else:
            classes = classes[:k]
            break
        boxes.append(box)
    boxes_px = np.array(boxes).reshape(-1, 4)
    # Large objects first, so a small one sharing a cell stays visible on top.
    for i in np.argsort(-(boxes_px[:, 2] * boxes_px[:, 3]), kind="stable"):
        _draw(image, boxes_px[i], int(classes[i]), _object_colour(rng, background))
    image += rng.normal(0, 0.02, image.shape)
    relative = boxes_px / image_size
    return (np.clip(image, 0, 1).astype(np.float32), relative.astype(np.float32),
            classes.astype(np.int32))


def _pixel_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[0] + a[3] / 2, b[0] + b[3] / 2) - max(a[0] - a[3] / 2, b[0] - b[3] / 2))
    ih = max(0.0, min(a[1] + a[2] / 2, b[1] + b[2] / 2) - max(a[1] - a[2] / 2, b[1] - b[2] / 2))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def synthetic_scenes(
    num_train: int, num_test: int, *, seed: int = 0, single_object: bool = False,
    targets_fn: TargetsFn | None = None, augment: str = "none", **scene_kwargs,
) -> DetectionDataset:
    """A DetectionDataset of generated scenes; test scenes come from another stream (seed+1)."""
    splits = []
    for stream, count in ((seed * 2, num_train), (seed * 2 + 1, num_test)):
        scenes = [synthetic_scene(stream, i, single_object=single_object, **scene_kwargs)
                  for i in range(count)]
        images = np.stack([s[0] for s in scenes])
        boxes, classes = pad_objects([s[1] for s in scenes], [s[2] for s in scenes],
                                     1 if single_object else scene_kwargs.get("max_objects", 6))
        splits.append((images, boxes, classes))
    (x_tr, b_tr, c_tr), (x_te, b_te, c_te) = splits
    name = "synthetic_single" if single_object else "synthetic_scenes"
    return DetectionDataset(name, x_tr, b_tr, c_tr, x_te, b_te, c_te, LECTURE_CLASSES,
                            targets_fn, augment)


# --- annotated files (readers in jaxcnn.data.detection_formats) ------------------------

Report = Callable[[str], None]


def _from_splits(name: str, train: AnnotatedSplit, test: AnnotatedSplit,
                 targets_fn: TargetsFn | None, augment: str) -> DetectionDataset:
    """One DetectionDataset from two read splits, padded to one object count."""
    if train.names != test.names:
        raise AnnotationError(f"{name}: train and test name different classes: "
                              f"{train.names} vs {test.names}")
    boxes, classes = pad_objects(train.boxes + test.boxes, train.classes + test.classes)
    n = len(train.files)
    counts = ({"all": train.counts} if train.counts is test.counts
              else {"train": train.counts, "test": test.counts})
    problems = tuple(train.problems) + tuple(p for p in test.problems if p not in train.problems)
    return DetectionDataset(name, train.images, boxes[:n], classes[:n], test.images, boxes[n:],
                            classes[n:], train.names, targets_fn, augment, problems, counts)


def _subset(split: AnnotatedSplit, rows: np.ndarray) -> AnnotatedSplit:
    rows = np.flatnonzero(rows)
    return AnnotatedSplit([split.files[i] for i in rows], split.images[rows],
                          [split.boxes[i] for i in rows], [split.classes[i] for i in rows],
                          split.names, split.counts)


def _split_from_csv(root: str, files: list[str], test_fraction: float) -> np.ndarray:
    """Test-set flags: from root/test_labels.csv (the raccoon layout) if present, else seeded."""
    listed = os.path.join(root, "test_labels.csv")
    if os.path.isfile(listed):
        with open(listed) as handle:
            test_files = {row["filename"] for row in csv.DictReader(handle)}
        return np.array([os.path.basename(f) in test_files for f in files])
    return np.random.default_rng(0).random(len(files)) < test_fraction


def _split_folders(root: str) -> tuple[str, str] | None:
    """(train, eval) subfolder names of root/images when it holds split folders."""
    folder = os.path.join(root, "images")
    subdirs = {d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))}
    train = next((d for d in sorted(subdirs) if d.startswith("train")), None)
    held = next((d for prefix in ("val", "test") for d in sorted(subdirs)
                 if d.startswith(prefix)), None)  # validation first: tests are reported once
    return (train, held) if train and held else None


def load_detection_folder(
    root: str, *, layout: str = "voc", image_size: tuple[int, int] = (96, 96),
    class_names: Sequence[str] | None = None, on_error: str = "skip",
    test_fraction: float = 0.2, targets_fn: TargetsFn | None = None, augment: str = "none",
    report: Report | None = print,
) -> DetectionDataset:
    """A VOC ("voc": images/ + annotations/) or YOLO ("yolo": images/ + labels/) folder.

    A YOLO folder whose images/ holds train* and val* (or test*) folders reads those as
    the splits; otherwise the split follows root/test_labels.csv when it exists (as in
    ../shared/data/raccoon), else a seeded test_fraction. `report` gets the summary lines.
    """
    if layout not in ("voc", "yolo"):
        raise ValueError(f"layout must be 'voc' or 'yolo', got {layout!r}")
    name = f"{layout}_folder:{root}"
    if layout == "yolo" and os.path.isdir(os.path.join(root, "images")):
        pair = _split_folders(root)
        if pair:
            names = formats.yolo_names(root, class_names)
            splits = [formats.read_yolo_images(
                formats.image_files(os.path.join(root, "images", sub)), names,
                where=root, image_size=image_size,
                on_error=on_error) for sub in pair]
            for sub, split in zip(pair, splits):
                if report:
                    report(split.counts.line(f"{name} {sub}"))
            return _from_splits(name, *splits, targets_fn, augment)
    read = (formats.read_voc_folder(root, image_size=image_size, class_names=class_names,
                                    on_error=on_error) if layout == "voc" else
            formats.read_yolo_folder(root, class_names, image_size=image_size,
                                     on_error=on_error))
    test = _split_from_csv(root, read.files, test_fraction)
    if report:
        report(read.counts.line(name) + f"; split {int((~test).sum())} train / "
               f"{int(test.sum())} test")
    return _from_splits(name, _subset(read, ~test), _subset(read, test), targets_fn, augment)


def load_yolo_yaml(
    path: str, *, eval_split: str = "val", image_size: tuple[int, int] = (96, 96),
    class_names: Sequence[str] | None = None, on_error: str = "skip",
    targets_fn: TargetsFn | None = None, augment: str = "none", report: Report | None = print,
) -> DetectionDataset:
    """A YOLO/ultralytics dataset YAML: its train split, evaluated on `eval_split` (val/test)."""
    spec = formats.read_yolo_yaml(path)
    names = formats.declared_names(class_names, path, spec.names)
    if eval_split not in ("val", "test"):
        raise ValueError(f"eval_split must be 'val' or 'test', got {eval_split!r}")
    splits = []
    for split in ("train", eval_split):
        if not spec.splits.get(split):
            raise AnnotationError(f"{path}: no images for split {split!r} (splits with images: "
                                  f"{sorted(k for k, v in spec.splits.items() if v)})")
        read = formats.read_yolo_images(spec.splits[split], names, where=spec.root,
                                        image_size=image_size, on_error=on_error)
        if report:
            report(read.counts.line(f"yolo_yaml:{path} {split}"))
        splits.append(read)
    return _from_splits(f"yolo_yaml:{path}", *splits, targets_fn, augment)


def load_coco(
    annotation_file: str, image_dir: str | None = None, *, eval_file: str | None = None,
    eval_image_dir: str | None = None, image_size: tuple[int, int] = (96, 96),
    class_names: Sequence[str] | None = None, on_error: str = "skip", test_fraction: float = 0.2,
    targets_fn: TargetsFn | None = None, augment: str = "none", report: Report | None = print,
) -> DetectionDataset:
    """COCO instances JSON (+ images): trained on it and evaluated on eval_file, or without
    one on a seeded test_fraction of its images."""
    name = f"coco:{annotation_file}" + (f",{eval_file}" if eval_file else "")
    train = formats.read_coco(annotation_file, image_dir, image_size=image_size,
                              class_names=class_names, on_error=on_error)
    if eval_file is None:
        test = np.random.default_rng(0).random(len(train.files)) < test_fraction
        if report:
            report(train.counts.line(name) + f"; split {int((~test).sum())} train / "
                   f"{int(test.sum())} test")
        return _from_splits(name, _subset(train, ~test), _subset(train, test), targets_fn,
                            augment)
    held = formats.read_coco(eval_file, eval_image_dir, image_size=image_size,
                             class_names=train.names, on_error=on_error)
    for split, read in (("train", train), ("test", held)):
        if report:
            report(read.counts.line(f"{name} {split}"))
    return _from_splits(name, train, held, targets_fn, augment)


# --- TFDS ---------------------------------------------------------------------------------


def tfds_boxes_to_center(bboxes: np.ndarray) -> np.ndarray:
    """TFDS BBoxFeature rows (ymin, xmin, ymax, xmax), relative -> (cx, cy, h, w)."""
    ymin, xmin, ymax, xmax = np.moveaxis(np.asarray(bboxes, np.float32), -1, 0)
    return np.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, ymax - ymin, xmax - xmin], axis=-1)


def load_tfds_voc(
    *, data_dir: str | None = None, name: str = "voc/2007", image_size: tuple[int, int] = (96, 96),
    max_objects: int = 42, download: bool = False, targets_fn: TargetsFn | None = None,
) -> DetectionDataset:
    """TFDS Pascal VOC (train / test) in memory, resized; needs the prepared data or a network."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")
    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    names = tuple(builder.info.features["objects"]["label"].names)
    splits = []
    for split in ("train", "test"):
        images, boxes, classes = [], [], []
        for example in tfds.as_numpy(builder.as_dataset(split=split)):
            image = tf.image.resize(example["image"], image_size).numpy() / 255.0
            images.append(image.astype(np.float32))
            boxes.append(tfds_boxes_to_center(example["objects"]["bbox"]))
            classes.append(example["objects"]["label"].astype(np.int32))
        splits.append((np.stack(images), *pad_objects(boxes, classes, max_objects)))
    (x_tr, b_tr, c_tr), (x_te, b_te, c_te) = splits
    return DetectionDataset(f"tfds:{name}", x_tr, b_tr, c_tr, x_te, b_te, c_te, names,
                            targets_fn)


DETECTION_SPECS = ("synthetic_scenes", "synthetic_single", "voc_folder:DIR", "yolo_folder:DIR",
                   "yolo_yaml:DATA.yaml[:val|:test]",
                   "coco:ANNOTATIONS.json[:IMAGES_DIR][,EVAL.json[:IMAGES_DIR]]", "voc",
                   "voc/2007")


def _coco_part(part: str) -> tuple[str, str | None]:
    """'ANN.json[:IMAGES_DIR]' -> (ANN.json, IMAGES_DIR or None)."""
    path, sep, images = part.partition(".json:")
    return (path + ".json", images) if sep else (part, None)


def is_detection_spec(name: str) -> bool:
    """Whether config.dataset names a detection dataset (one of DETECTION_SPECS)."""
    return (name in ("synthetic_scenes", "synthetic_single", "voc") or name.startswith(
        ("voc/", "voc_folder:", "yolo_folder:", "yolo_yaml:", "coco:")))


@with_validation_split  # validation_fraction=f: a held-out share of train is the eval split
def get_detection_dataset(
    name: str, *, image_size: tuple[int, int] | None = None, data_dir: str | None = None,
    targets_fn: TargetsFn | None = None, num_train: int = 2000, num_test: int = 500,
    seed: int = 0, on_error: str = "skip", class_names: Sequence[str] | None = None,
    augment: str = "none", download: bool = False, report: Report | None = print,
) -> DetectionDataset:
    """A detection dataset by spec (DETECTION_SPECS); `report` gets the readers' summary lines."""
    if name in ("synthetic_scenes", "synthetic_single"):
        size = tuple(image_size or (96, 96))
        if size[0] != size[1]:
            raise ValueError(f"synthetic scenes are square, got image_size {size}")
        return synthetic_scenes(num_train, num_test, seed=seed, image_size=size[0],
                                single_object=name == "synthetic_single", targets_fn=targets_fn,
                                augment=augment)
    size = tuple(image_size or (96, 96))
    common = {"image_size": size, "class_names": class_names, "on_error": on_error,
              "targets_fn": targets_fn, "augment": augment, "report": report}
    for prefix, layout in (("voc_folder:", "voc"), ("yolo_folder:", "yolo")):
        if name.startswith(prefix):
            return load_detection_folder(name[len(prefix):], layout=layout, **common)
    if name.startswith("yolo_yaml:"):
        path, split = name[len("yolo_yaml:"):], "val"
        for suffix in (":val", ":test"):
            if path.endswith(suffix):
                path, split = path[:-len(suffix)], suffix[1:]
        return load_yolo_yaml(path, eval_split=split, **common)
    if name.startswith("coco:"):
        parts = name[len("coco:"):].split(",")
        if len(parts) > 2 or not parts[0]:
            raise ValueError(f"expected coco:ANNOTATIONS.json[:IMAGES_DIR][,EVAL.json"
                             f"[:IMAGES_DIR]], got {name!r}")
        (ann, images), (eval_ann, eval_images) = _coco_part(parts[0]), (
            _coco_part(parts[1]) if len(parts) == 2 else (None, None))
        return load_coco(ann, images, eval_file=eval_ann, eval_image_dir=eval_images, **common)
    if name == "voc" or name.startswith("voc/"):
        return load_tfds_voc(data_dir=data_dir, name="voc/2007" if name == "voc" else name,
                             image_size=size, download=download, targets_fn=targets_fn)
    raise ValueError(f"unknown detection dataset {name!r}; expected one of "
                     f"{', '.join(DETECTION_SPECS)}")
