"""Datasets: TFDS pipelines, the embedded offline MNIST, .npz arrays and image folders.

Every dataset exposes the same interface: `num_classes`, `image_shape`, `num_train`,
`num_eval`, `mean`/`std` (per channel, of [0, 1] pixels), `steps_per_epoch(batch)`,
`train_batches(global_batch, seed=, start_step=, process_index=, process_count=)` (endless,
resumable at any step) and `eval_batches(global_batch, ...)` (padded, with a `mask`).
"""

from __future__ import annotations

from jaxcnn.data.arrays import ArrayDataset, augment_batch, pad_to, to_float_images
from jaxcnn.data.detection import (
    AnnotationError,
    DetectionDataset,
    get_detection_dataset,
    load_detection_folder,
    localization_targets,
    synthetic_scenes,
)
from jaxcnn.data.offline import embedded_mnist, load_image_folder, load_npz, read_image_folder
from jaxcnn.data.tfds_pipeline import KNOWN_DATASETS, TFDSDataset

OFFLINE_DATASETS = ("embedded_mnist",)

__all__ = [
    "AnnotationError", "DetectionDataset", "get_detection_dataset", "load_detection_folder",
    "localization_targets", "synthetic_scenes",
    "ArrayDataset", "TFDSDataset", "KNOWN_DATASETS", "augment_batch", "embedded_mnist",
    "get_dataset", "load_image_folder", "load_npz", "pad_to", "read_image_folder",
    "to_float_images",
]


def get_dataset(
    name: str, *, data_dir: str | None = None, image_size: tuple[int, int] | None = None,
    augment: str | None = None, download: bool = False,
):
    """Open a dataset by name: 'embedded_mnist', 'npz:PATH', 'folder:PATH' or a TFDS name."""
    size = tuple(image_size) if image_size else None
    if name == "embedded_mnist":
        return embedded_mnist(size or (32, 32), augment=augment or "none")
    if name.startswith("npz:"):
        return load_npz(name[4:], size, augment or "none")
    if name.startswith("folder:"):
        return load_image_folder(name[7:], size, augment or "none")
    return TFDSDataset(name, data_dir=data_dir, image_size=size, augment=augment,
                       download=download)
