"""Which run a checkpoint belongs to: the config keys and facts that shape the state and its
inputs, stored inside every checkpoint step (item `fingerprint`) and compared on resume.

`run_fingerprint(program)` makes it; `check_fingerprint` refuses checkpoints written under
another one, naming the keys that differ. Checkpoints from before the fingerprint was an item
of the step fall back to `checkpoints/fingerprint.json` (`read_legacy`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np

from jaxcnn.errors import RunError

LEGACY_NAME = "fingerprint.json"


class FingerprintMismatchError(RunError, ValueError):
    """The checkpoints in a workdir were written by a run with another fingerprint."""


def _canonical(value: Any) -> Any:
    """JSON-comparable form: tuples become lists, ConfigDicts dicts, numpy scalars floats."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple | np.ndarray):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def tree_path(path: tuple) -> str:
    """'params/conv1/kernel' for a jax key path (dict keys, attributes and indices alike)."""
    names = []
    for key in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                names.append(str(getattr(key, attribute)))
                break
        else:
            names.append(str(key))
    return "/".join(names)


def state_layout(tree: Any) -> dict[str, str]:
    """{path: 'dtype[shape]'} of every array leaf (arrays or ShapeDtypeStructs)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tree_path(path): f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}"
            for path, leaf in leaves}


def _normalization(config: Any, dataset: Any) -> list[list[float]] | None:
    """[mean, std] per channel (4 decimals) the inputs are normalised with; None when off."""
    if not config.get("normalize", True):
        return None
    mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
    if mean is None or std is None:
        return None
    return [np.round(np.asarray(v, np.float64).reshape(-1), 4).tolist() for v in (mean, std)]


def run_fingerprint(program: Any) -> dict[str, Any]:
    """The config keys (and derived facts) that shape a Program's state or its inputs.

    model, model_kwargs, dataset, image size and shape, classes, augmentation, normalisation
    (the switch and the per-channel statistics, which tell two datasets of one shape apart),
    optimiser, parameter dtypes, the task's keys (defaults with config.task on top) and the
    layout of every state array (which catches what no key names, e.g. changed model code).
    """
    config, dataset, abstract_state = program.config, program.task.dataset, program.abstract_state
    params = getattr(abstract_state, "params", abstract_state)
    task_keys = dict(getattr(program.task, "task_defaults", {}) or {})
    task_keys.update((config.get("task") or {}).items())
    return _canonical({
        "model": config.model,
        "model_kwargs": config.get("model_kwargs", {}),
        "dataset": config.dataset,
        "image_size": config.get("image_size"),
        "image_shape": tuple(dataset.image_shape),
        "num_classes": int(dataset.num_classes),
        "augment": config.get("augment"),
        "normalize": bool(config.get("normalize", True)),
        "normalization": _normalization(config, dataset),
        "optimizer": config.optimizer,
        "param_dtypes": sorted({np.dtype(leaf.dtype).name for leaf in jax.tree.leaves(params)}),
        "task": task_keys,
        "state_layout": state_layout(abstract_state),
    })


# The keys that name the data rather than shape the state: a finished run evaluated on other
# data on purpose (`evaluate --data`) compares the rest (normalisation statistics included, so a
# run that normalises its inputs is still refused on data with other statistics).
DATA_KEYS = ("dataset",)


def differing_keys(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ (or that only one of the fingerprints has), sorted."""
    return sorted(key for key in set(stored) | set(current)
                  if stored.get(key, "<absent>") != current.get(key, "<absent>"))


def read_legacy(checkpoint_dir: str) -> dict[str, Any] | None:
    """`checkpoints/fingerprint.json` of a run from before fingerprints lived in each step."""
    path = os.path.join(checkpoint_dir, LEGACY_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def describe_difference(key: str, stored: Any, current: Any, limit: int = 5) -> str:
    """The difference in one key; for nested dicts (the state layout) the first few leaves."""
    if isinstance(stored, dict) and isinstance(current, dict) and key == "state_layout":
        paths = differing_keys(stored, current)
        shown = [f"{p} {stored.get(p, '<absent>')} vs {current.get(p, '<absent>')}"
                 for p in paths[:limit]]
        more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
        return f"{key}: {len(paths)} arrays differ: " + "; ".join(shown) + more
    return f"{key}: {stored!r} in the checkpoints, {current!r} in this config"


def mismatch_error(checkpoint_dir: str, what: str, lines: list[str]) -> FingerprintMismatchError:
    """The one-line refusal: which keys differ, how, and the three ways out."""
    workdir = os.path.dirname(os.path.abspath(checkpoint_dir))
    return FingerprintMismatchError(
        f"refusing to use the checkpoints in {checkpoint_dir}: {what} ({'; '.join(lines)}). "
        f"Nothing was changed or deleted. Use the original config "
        f"({os.path.join(workdir, 'config.json')}), another --workdir, or start over "
        f"deliberately by moving {checkpoint_dir} away.")


def check_fingerprint(checkpoint_dir: str, stored: dict[str, Any] | None,
                      current: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
    """Raise FingerprintMismatchError if `stored` (a checkpoint's) differs from `current`
    in a key other than `ignore`.

    Keys the stored fingerprint lacks were not recorded by the version that wrote it: they
    are not compared (with a warning), so older runs stay resumable.
    """
    if stored is None:
        return
    unrecorded = sorted(set(current) - set(stored))
    if unrecorded:
        logging.warning("the checkpoints in %s do not record %s (written by an older version): "
                        "not compared", checkpoint_dir, ", ".join(unrecorded))
    keys = [key for key in differing_keys(stored, current)
            if key not in unrecorded and key not in ignore]
    if keys:
        lines = [describe_difference(key, stored.get(key, "<absent>"),
                                     current.get(key, "<absent>")) for key in keys]
        raise mismatch_error(checkpoint_dir, f"they were written by a run that differs in "
                             f"{', '.join(keys)}", lines)
