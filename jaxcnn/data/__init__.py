"""Datasets: TFDS pipelines, the embedded offline MNIST, .npz arrays and image folders.

Every dataset follows the protocol `jaxcnn.data.base.Dataset` (class count, image shape,
split sizes, mean/std, resumable `train_batches`, padded and masked `eval_batches`).
"""

from __future__ import annotations

from jaxcnn.data.arrays import ArrayDataset, augment_batch, pad_to, to_float_images
from jaxcnn.data.base import Dataset, prefetch
from jaxcnn.data.offline import embedded_mnist, load_image_folder, load_npz, read_image_folder
from jaxcnn.data.tfds_pipeline import KNOWN_DATASETS, TFDSDataset

OFFLINE_DATASETS = ("embedded_mnist",)

__all__ = [
    "ArrayDataset", "Dataset", "TFDSDataset", "KNOWN_DATASETS", "augment_batch", "embedded_mnist",
    "get_dataset", "load_image_folder", "load_npz", "pad_to", "prefetch", "read_image_folder",
    "to_float_images",
]


def get_dataset(
    name: str, *, data_dir: str | None = None, image_size: tuple[int, int] | None = None,
    augment: str | None = None, download: bool = False, num_classes: int | None = None,
):
    """Open a dataset by name: 'embedded_mnist', 'npz:PATH', 'folder:PATH' or a TFDS name.

    `num_classes`, when given, is checked against the data (and fixes an npz's class count).
    TensorFlow is imported only for TFDS names.
    """
    size = tuple(image_size) if image_size else None
    if name == "embedded_mnist":
        if num_classes not in (None, 10):
            raise ValueError(f"embedded_mnist has 10 classes, but num_classes={num_classes}")
        return embedded_mnist(size or (32, 32), augment=augment or "none")
    if name.startswith("npz:"):
        return load_npz(name[4:], size, augment or "none", num_classes=num_classes)
    if name.startswith("folder:"):
        return load_image_folder(name[7:], size, augment or "none", num_classes=num_classes)
    return TFDSDataset(name, data_dir=data_dir, image_size=size, augment=augment,
                       download=download, num_classes=num_classes)
