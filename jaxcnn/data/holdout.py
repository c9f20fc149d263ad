"""A validation split carved from a dataset's training split (config.validation_fraction).

Settings are chosen on held-out training examples, never on the test split: with
`validation_fraction=f` a seeded share f of the training split (per class for labelled
arrays, by image for detection) is held out and replaces the eval split, and the model trains
on the rest. The carve's seed is fixed (not config.seed), so runs of several training seeds
are compared on the same held-out examples. Works for the datasets held in memory as
`x_train`/`x_test`-style arrays (ArrayDataset, DeviceImageDataset, DetectionDataset).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np


def holdout_rows(num: int, fraction: float, *, labels: np.ndarray | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of `num` examples, each sorted: round(fraction x n)
    drawn with `seed` from each class's n rows (`labels`, (num,) int) or from all rows."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1); received {fraction}")
    groups = {None: np.arange(num)} if labels is None else {
        int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    rng = np.random.default_rng(seed)
    held = []
    for label, rows in groups.items():
        count = int(round(fraction * len(rows)))
        if not 0 < count < len(rows):
            what = "examples" if label is None else f"examples of class {label}"
            raise ValueError(f"validation_fraction={fraction} of {len(rows)} training {what} "
                             f"leaves {count} held out and {len(rows) - count} to train on; "
                             "each needs at least one (more examples or another fraction)")
        held.append(rng.permutation(rows)[:count])
    held_rows = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(num), held_rows), held_rows


def _split_stems(dataset: Any) -> list[str]:
    """The array fields a split is made of: STEM for each STEM_train with a STEM_test."""
    names = {field.name for field in dataclasses.fields(dataset)}
    return [name[:-len("_train")] for name in sorted(names)
            if name.endswith("_train") and name[:-len("_train")] + "_test" in names]


def carve_validation(dataset: Any, fraction: float, *, seed: int = 0) -> Any:
    """`dataset` with its training split re-split: a seeded `fraction` of it (stratified by
    `y_train` when the dataset has labels, else by image) replaces the eval split."""
    if not dataclasses.is_dataclass(dataset) or "x" not in _split_stems(dataset):
        raise ValueError(f"validation_fraction needs a dataset held in memory as arrays "
                         f"(npz:, folder:, device:, embedded_mnist or a detection spec); "
                         f"{getattr(dataset, 'name', dataset)!r} is a "
                         f"{type(dataset).__name__}")
    labels = getattr(dataset, "y_train", None)
    train_rows, held_rows = holdout_rows(dataset.num_train, fraction, labels=labels, seed=seed)
    changes = {}
    for stem in _split_stems(dataset):
        whole = getattr(dataset, f"{stem}_train")
        changes[f"{stem}_train"], changes[f"{stem}_test"] = whole[train_rows], whole[held_rows]
    how = "per class" if labels is not None else "by image"
    print(f"validation split: {len(held_rows)} of the {dataset.num_train} training examples of "
          f"{dataset.name} ({fraction:g}, {how}, seed {seed}) replace the eval split; training "
          f"on the other {len(train_rows)}", flush=True)
    return dataclasses.replace(dataset, **changes)


def with_validation_split(opener: Callable[..., Any]) -> Callable[..., Any]:
    """`opener` (a dataset by name) with the keyword `validation_fraction` (default 0: the
    dataset's own eval split) and `validation_seed` (default 0): carve_validation applied."""

    @functools.wraps(opener)
    def open_dataset(*args: Any, validation_fraction: float = 0.0, validation_seed: int = 0,
                     **kwargs: Any) -> Any:
        dataset = opener(*args, **kwargs)
        if not validation_fraction:
            return dataset
        return carve_validation(dataset, validation_fraction, seed=validation_seed)

    return open_dataset
