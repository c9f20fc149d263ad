"""Datasets: TFDS pipelines, the embedded offline MNIST, .npz arrays and image folders.

Every dataset follows the protocol `jaxcnn.data.base.Dataset` (class count, image shape,
split sizes, mean/std, resumable `train_batches`, padded and masked `eval_batches`).
"""

from __future__ import annotations

from jaxcnn.data.arrays import ArrayDataset, augment_batch, pad_to, to_float_images
from jaxcnn.data.base import Dataset
from jaxcnn.data.detection import (
    DETECTION_SPECS,
    AnnotationError,
    DetectionDataset,
    get_detection_dataset,
    is_detection_spec,
    load_coco,
    load_detection_folder,
    load_yolo_yaml,
    localization_targets,
    synthetic_scenes,
)
from jaxcnn.data.device import DeviceImageDataset, load_device_dataset
from jaxcnn.data.holdout import carve_validation, with_validation_split
from jaxcnn.data.offline import embedded_mnist, load_image_folder, load_npz, read_image_folder
from jaxcnn.data.tfds_pipeline import KNOWN_DATASETS, TFDSDataset

OFFLINE_DATASETS = ("embedded_mnist",)

__all__ = [
    "DETECTION_SPECS", "AnnotationError", "ArrayDataset", "Dataset", "DetectionDataset",
    "DeviceImageDataset", "KNOWN_DATASETS", "TFDSDataset", "augment_batch", "carve_validation",
    "embedded_mnist",
    "get_dataset", "get_detection_dataset", "is_detection_spec", "load_coco",
    "load_detection_folder", "load_device_dataset", "load_image_folder", "load_npz",
    "load_yolo_yaml", "localization_targets", "pad_to", "read_image_folder",
    "synthetic_scenes", "to_float_images",
]


@with_validation_split  # validation_fraction=f: a held-out share of train is the eval split
def get_dataset(
    name: str, *, data_dir: str | None = None, image_size: tuple[int, int] | None = None,
    augment: str | None = None, download: bool = False, num_classes: int | None = None,
):
    """Open a dataset by name: 'embedded_mnist', 'npz:PATH', 'folder:PATH', 'device:PATH'
    (a folder or tarball with train/ and test/ class folders, kept on the accelerator and
    augmented there), a detection spec (DETECTION_SPECS: voc_folder:, yolo_folder:,
    yolo_yaml:, coco:, synthetic_scenes; -> get_detection_dataset) or a TFDS name (read
    through Grain where prepared as ArrayRecord, else tf.data: TFDSDataset.tf_data_reason).

    `num_classes`, when given, is checked against the data (and fixes an npz's class count).
    `validation_fraction` (jaxcnn.data.holdout): that share of the training split, held out
    per class (by image for detection), replaces the eval split.
    TensorFlow is imported only for TFDS names.
    """
    size = tuple(image_size) if image_size else None
    if name == "embedded_mnist":
        if num_classes not in (None, 10):
            raise ValueError(f"embedded_mnist has 10 classes, but num_classes={num_classes}")
        return embedded_mnist(size or (32, 32), augment=augment or "none")
    if name.startswith("npz:"):
        return load_npz(name[4:], size, augment or "none", num_classes=num_classes)
    if name.startswith("device:"):
        if size is not None:
            raise ValueError(f"image_size must be None for {name!r} (images keep their "
                             f"stored size on the device); received {size}")
        dataset = load_device_dataset(name[7:], augment or "crop_flip")
        if num_classes not in (None, dataset.num_classes):
            raise ValueError(f"{name} has {dataset.num_classes} classes, but "
                             f"num_classes={num_classes}")
        return dataset
    if is_detection_spec(name) and not (name == "voc" or name.startswith("voc/")):  # TFDS
        return get_detection_dataset(name, image_size=size, data_dir=data_dir,
                                     augment=augment or "none", download=download)
    if name.startswith("folder:"):
        return load_image_folder(name[7:], size, augment or "none", num_classes=num_classes)
    return TFDSDataset(name, data_dir=data_dir, image_size=size, augment=augment,
                       download=download, num_classes=num_classes)
