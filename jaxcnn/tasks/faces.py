"""The faces task: a FaceEncoder trained on identity folders with the mined triplet loss, an
ArcFace-style margin softmax, or both; evaluated on held-out people beside three classical
baselines fitted on the training people (raw pixels, Eigenfaces, Fisherfaces).

config.dataset is "faces:PATH", the folder whose people are evaluated; the training people
come from task.train_data (default: the same folder), so a finished run evaluates on a folder
of new people alone by replacing config.dataset.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcnn import faces, losses
from jaxcnn.data import faces as face_data
from jaxcnn.train import GatherAll, Task, UsageError, task_settings

NAME = "faces"
LOSSES = ("triplet", "arcface", "arcface+triplet")

DEFAULTS: dict[str, Any] = {
    "embedding_dim": 64,
    "head": "flatten",
    "loss": "triplet",
    "margin": 0.2,
    "mining": "batch_hard",
    "arcface_scale": 16.0,
    "arcface_margin": 0.3,
    "images_per_person": 4,
    "channels": 1,
    "augment": "flip",
    "flip_average": False,
    "train_data": "",
    "train_people": "",
    "eval_people": "",
    "eigenfaces": 100,
    "threshold": 0.0,
    "threshold_source": "",
}

HELP: dict[str, str] = {
    "embedding_dim": "length D of the L2-normalised embedding",
    "head": f"how the trunk's feature map becomes the embedding: one of {faces.HEADS}",
    "loss": f"training loss: one of {LOSSES} ('arcface+triplet' sums the two)",
    "margin": "triplet loss margin alpha (squared L2 between unit vectors, 0..4)",
    "mining": f"online triplet mining within each batch: one of {losses.TRIPLET_MINING}",
    "arcface_scale": "ArcFace logit scale s (cosines times s)",
    "arcface_margin": "ArcFace additive angular margin m, radians",
    "images_per_person": "K of the P people x K images batches (P = batch_size / K)",
    "channels": "1 (grayscale) or 3 (colour) input channels",
    "augment": f"training augmentation: one of {face_data.FACE_AUGMENTATIONS}",
    "flip_average": "inference embeds the image and its mirror image and averages them",
    "train_data": "folder of the training people ('' = config.dataset's folder)",
    "train_people": "training people, e.g. 's1-s20' ('' = every person of train_data)",
    "eval_people": "people evaluated when config.dataset is the training folder, e.g. "
                   "'s21-s30' ('' = all not trained on); another folder: all its people",
    "eigenfaces": "principal components kept by the Eigenfaces baseline",
    "threshold": "recognition threshold (squared L2), chosen on validation people; 0 = none",
    "threshold_source": "where task.threshold was chosen (printed by recognize)",
}


def settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """config.task on top of DEFAULTS; unknown keys and bad values raise UsageError."""
    task = task_settings(config, DEFAULTS).to_dict()
    choices = {"mining": losses.TRIPLET_MINING, "head": faces.HEADS, "loss": LOSSES,
               "augment": face_data.FACE_AUGMENTATIONS}
    for key, allowed in choices.items():
        if task[key] not in allowed:
            raise UsageError(f"config.task.{key} must be one of {allowed}; received "
                             f"{task[key]!r}")
    if task["embedding_dim"] < 1 or task["margin"] < 0 or task["threshold"] < 0:
        raise UsageError(f"config.task: embedding_dim >= 1, margin >= 0 and threshold >= 0 "
                         f"expected; received {task['embedding_dim']}, {task['margin']}, "
                         f"{task['threshold']}")
    return task


def data_folder(config: ml_collections.ConfigDict) -> str:
    """The folder of config.dataset 'faces:PATH' (the people evaluated)."""
    if not str(config.dataset).startswith("faces:"):
        raise UsageError(f"config.dataset must be 'faces:PATH' (a folder of person folders) "
                         f"for the faces task; received {config.dataset!r}")
    return config.dataset.removeprefix("faces:")


def dataset_from_config(config: ml_collections.ConfigDict) -> face_data.IdentityDataset:
    """The IdentityDataset of a faces config: training people and evaluated people."""
    task, root = settings(config), data_folder(config)
    for folder in (root, task["train_data"] or root):
        if not os.path.isdir(folder):
            raise UsageError(f"identity folder {folder!r} does not exist (config.dataset "
                             f"'faces:PATH' / config.task.train_data)")
    return face_data.identity_dataset(
        root, task["train_people"], task["eval_people"], tuple(config.image_size),
        task["channels"], task["images_per_person"], task["augment"],
        train_root=task["train_data"] or None)


def encoder_from_config(config: ml_collections.ConfigDict, num_classes: int) -> faces.FaceEncoder:
    """The FaceEncoder of a faces config (trunk config.model, kernels config.conv_impl as
    given); class centres for `num_classes` training people when the loss is ArcFace."""
    task = settings(config)
    kwargs = {"dtype": jnp.dtype(config.dtype), "conv_impl": config.conv_impl,
              **dict(config.model_kwargs or {})}
    centres = num_classes if task["loss"] != "triplet" else 0
    return faces.FaceEncoder(config.model, task["embedding_dim"], kwargs, task["flip_average"],
                             task["head"], centres)


def make_loss_fn(task: dict[str, Any]):
    """(train outputs {"embedding", "cosines"?}, batch) -> (loss, parts) for task['loss']."""
    margin, mining, kind = float(task["margin"]), task["mining"], task["loss"]
    scale, angle = float(task["arcface_scale"]), float(task["arcface_margin"])

    def loss_fn(outputs, batch):
        embeddings, labels = outputs["embedding"], batch["label"]
        parts = {}
        if kind != "arcface":
            parts["triplet_loss"] = losses.mined_triplet_loss(embeddings, labels, margin, mining)
            parts["active_triplets"] = losses.batch_all_triplet_loss(embeddings, labels,
                                                                     margin)[1]
        if kind != "triplet":
            parts["arcface_loss"] = losses.additive_angular_margin_loss(
                outputs["cosines"], labels, scale, angle)
        loss = parts.get("triplet_loss", 0.0) + parts.get("arcface_loss", 0.0)
        return loss, {"loss": loss, **parts}

    return loss_fn


def embedding_outputs(embeddings, batch):
    """Per-example outputs gathered for evaluation (a Task.output_fn)."""
    return {"embedding": embeddings, "label": batch["label"], "index": batch["index"]}


def make_metric_fn(dataset: face_data.IdentityDataset, task: dict[str, Any]):
    """Gathered {embedding, label, index} -> faces.flat_metrics for the model and the
    baselines (fitted once, on the training people only); pairs and draws with seed 0."""
    fit = functools.cache(lambda: faces.fit_baselines(
        dataset.train.images, dataset.train.labels, task["eigenfaces"]))
    threshold = task["threshold"] or None

    def metric_fn(outputs: dict[str, np.ndarray]) -> dict[str, float]:
        images = dataset.eval.images[outputs["index"]]
        reports = faces.held_out_reports(outputs["embedding"], images, outputs["label"], fit(),
                                         seed=0, threshold=threshold)
        return faces.flat_metrics(reports)

    return metric_fn


def recognition_threshold(task: dict[str, Any], given: float | None = None) -> tuple[float, str]:
    """(threshold, where it came from): `given` (the --threshold flag), else the run's
    task.threshold with its task.threshold_source; a run without one is a UsageError."""
    if given is not None:
        return float(given), "--threshold"
    if task["threshold"] > 0:
        return float(task["threshold"]), (f"the run's task.threshold, chosen on "
                                          f"{task['threshold_source'] or 'an unrecorded source'}")
    raise UsageError("this run has no task.threshold (chosen on validation people, e.g. by "
                     "`experiments.faces folds`): pass --threshold=T")


def build(config: ml_collections.ConfigDict) -> Task:
    """The faces Task of `config` (see the module docstring)."""
    task = settings(config)
    dataset = dataset_from_config(config)
    if config.normalize:
        raise UsageError("faces runs feed [0, 1] images: set config.normalize=False (the "
                         "training set's statistics are not saved with the run)")
    return Task(model=encoder_from_config(config, dataset.num_classes), dataset=dataset,
                loss_fn=make_loss_fn(task), output_fn=embedding_outputs,
                make_evaluator=lambda: GatherAll(make_metric_fn(dataset, task)),
                task_defaults=DEFAULTS)
