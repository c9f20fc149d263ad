"""Every figure of held-out people for the model and the classical baselines, on the same
pairs and draws: `method_report` per method, `held_out_reports` for all, `flat_metrics` as the
evaluator's result (each name says which question it answers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxcnn.faces import protocol
from jaxcnn.faces.baselines import Projection

OPEN_SET_ACCEPTANCE = 0.9


def open_set_sizes(num_people: int) -> tuple[int, int]:
    """(enrolled, impostors) people per open-set draw: 5 + 5, or half and half of fewer
    (validation folds of 5 people: 3 + 2); (0, 0) below 3 people."""
    if num_people < 3:
        return 0, 0
    enrolled = min(5, (num_people + 1) // 2)
    return enrolled, min(5, num_people - enrolled)


def at_threshold(distances: np.ndarray, same: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, VAL (same-person pairs accepted) and FAR of the rule d <= threshold."""
    accept, same = np.asarray(distances) <= threshold, np.asarray(same, bool)
    return {"accuracy": float(np.mean(accept == same)), "val": float(np.mean(accept[same])),
            "far": float(np.mean(accept[~same])), "threshold": float(threshold)}


def method_report(
    embeddings: np.ndarray, labels: np.ndarray, seed: int = 0, pairs: np.ndarray | None = None,
    same: np.ndarray | None = None, folds: np.ndarray | None = None, num_folds: int = 10,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Verification (k-fold, VAL@FAR, ROC), one-shot and open-set figures of one embedding of
    the held-out images; with `threshold`, the verification figures at that fixed threshold."""
    labels = np.asarray(labels)
    if pairs is None:
        pairs, same = protocol.make_pairs(labels, seed)
    verification = protocol.verification_report(embeddings, labels, seed, num_folds, pairs,
                                                same, folds)
    report = {"verification": verification,
              "one_shot": protocol.one_shot_accuracy(embeddings, labels, seed=seed)}
    enrolled, impostors = open_set_sizes(len(np.unique(labels)))
    if enrolled:
        report["open_set"] = protocol.open_set_rejection(
            embeddings, labels, enrolled, impostors, OPEN_SET_ACCEPTANCE, seed=seed)
        report["open_set"].update(enrolled=enrolled, impostors=impostors)
    if threshold is not None:
        report["at_run_threshold"] = at_threshold(protocol.pair_distances(embeddings, pairs),
                                                  same, threshold)
    return report


def held_out_reports(
    embeddings: np.ndarray, images: np.ndarray, labels: np.ndarray,
    baselines: Mapping[str, Projection], seed: int = 0, threshold: float | None = None,
    **pairs: Any,
) -> dict[str, dict[str, Any]]:
    """method_report for the model's embeddings and for each baseline's projection of
    `images`, all on the same pairs (`pairs`, `same`, `folds`, `num_folds` if given) and draws."""
    reports = {"model": method_report(embeddings, labels, seed, threshold=threshold, **pairs)}
    for name, project in baselines.items():
        reports[name] = method_report(project(images), labels, seed, **pairs)
    return reports


def flat_metrics(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """{method}_{figure}: verification_10fold_accuracy (+ _std), val_at_far_{far},
    one_shot_accuracy, open_set_rejection (at 90 % acceptance); the model's best threshold
    on these pairs (pairs_threshold) and its figures at the run's stored threshold."""
    metrics: dict[str, float] = {}
    for name, report in reports.items():
        v = report["verification"]
        metrics[f"{name}_verification_10fold_accuracy"] = v["accuracy_mean"]
        metrics[f"{name}_verification_10fold_std"] = v["accuracy_std"]
        for far, figure in v["val_at_far"].items():
            metrics[f"{name}_val_at_far_{far}"] = figure["val"]
        metrics[f"{name}_one_shot_accuracy"] = report["one_shot"]["accuracy_mean"]
        if "open_set" in report:
            metrics[f"{name}_open_set_rejection"] = report["open_set"]["rejection_mean"]
        for key, value in report.get("at_run_threshold", {}).items():
            metrics[f"{name}_{key}_at_run_threshold"] = value
    metrics["model_pairs_threshold"] = reports["model"]["verification"]["threshold"]
    return metrics
