"""The verification protocol (one definition, used everywhere), host-side numpy over all pairs.

`make_pairs` (all same-person pairs + as many seeded different-person pairs), `kfold_accuracy`
(10 folds over pairs, threshold chosen on the 9 others), `roc_curve`, `val_at_far` (pooled
folds), `verification_report` (all of them), `one_shot_accuracy` (closed-set identification
from one enrolled image per person), `open_set_rejection` (people never enrolled), and LFW
pairs files. Distances are squared L2 between embeddings throughout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxcnn.faces.recognition import nearest_enrolled

# --- The verification protocol (host-side numpy over all pairs) ----------------------------

def make_pairs(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """((P, 2) index pairs, (P,) bool same): all same-person pairs (i < j) + as many
    different-person pairs drawn uniformly without replacement with `seed`, shuffled."""
    labels = np.asarray(labels)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    positives = np.stack([i[same], j[same]], 1)
    negatives_all = np.stack([i[~same], j[~same]], 1)
    if not len(positives) or not len(negatives_all):
        raise ValueError("labels must hold a person with 2 images and 2 different people")
    rng = np.random.default_rng(seed)
    take = rng.choice(len(negatives_all), min(len(positives), len(negatives_all)), replace=False)
    pairs = np.concatenate([positives, negatives_all[np.sort(take)]])
    is_same = np.concatenate([np.ones(len(positives), bool), np.zeros(len(take), bool)])
    order = rng.permutation(len(pairs))
    return pairs[order], is_same[order]


def pair_distances(embeddings: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(P,) squared L2 distances of the (P, 2) index pairs of (N, D) embeddings."""
    embeddings = np.asarray(embeddings, np.float64)
    return np.sum(np.square(embeddings[pairs[:, 0]] - embeddings[pairs[:, 1]]), axis=1)


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold (accept d <= t) with the highest accuracy on these pairs.

    Candidates are the midpoints between consecutive sorted distances and both ends; ties
    go to the smallest threshold.
    """
    d = np.sort(np.unique(distances))
    candidates = np.concatenate([[d[0] - 1.0], (d[:-1] + d[1:]) / 2, [d[-1] + 1.0]])
    accuracy = [np.mean((distances <= t) == same) for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def kfold_accuracy(
    distances: np.ndarray, same: np.ndarray, num_folds: int = 10,
    folds: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy per fold with the threshold chosen on the other folds; mean and std.

    `folds` gives each pair's fold; by default pair p is in fold p * num_folds // P (the
    pairs come shuffled from make_pairs, and in file order from an LFW pairs file).
    """
    distances, same = np.asarray(distances, np.float64), np.asarray(same, bool)
    if folds is None:
        folds = np.arange(len(distances)) * num_folds // len(distances)
    accuracies, thresholds = [], []
    for fold in range(num_folds):
        test = folds == fold
        threshold = best_threshold(distances[~test], same[~test])
        accuracies.append(float(np.mean((distances[test] <= threshold) == same[test])))
        thresholds.append(threshold)
    return {"accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
            "fold_accuracies": accuracies, "thresholds": thresholds}


def roc_curve(distances: np.ndarray, same: np.ndarray) -> dict[str, np.ndarray]:
    """VAL (true accept rate) and FAR (false accept rate) for every threshold d <= t."""
    distances, same = np.asarray(distances, np.float64), np.asarray(same, bool)
    thresholds = np.concatenate([[-np.inf], np.unique(distances)])
    accepted = distances[None, :] <= thresholds[:, None]
    val = np.sum(accepted & same, 1) / max(same.sum(), 1)
    far = np.sum(accepted & ~same, 1) / max((~same).sum(), 1)
    return {"far": far, "val": val, "thresholds": thresholds}


def val_at_far(distances: np.ndarray, same: np.ndarray, far: float) -> dict[str, float]:
    """VAL at the largest threshold whose FAR is <= `far` (pooled pairs), with the counts.

    With N negative pairs a FAR below 1/N means no false accept at all: `num_negatives`
    says how many negatives the figure rests on.
    """
    roc = roc_curve(distances, same)
    ok = np.flatnonzero(roc["far"] <= far)
    best = ok[-1]  # FAR and VAL grow with the threshold; threshold -inf always qualifies
    return {"val": float(roc["val"][best]), "far": float(roc["far"][best]),
            "threshold": float(roc["thresholds"][best]),
            "num_negatives": int((~np.asarray(same, bool)).sum()),
            "num_positives": int(np.asarray(same, bool).sum())}


def verification_report(
    embeddings: np.ndarray, labels: np.ndarray, seed: int = 0, num_folds: int = 10,
    pairs: np.ndarray | None = None, same: np.ndarray | None = None,
    folds: np.ndarray | None = None,
) -> dict[str, Any]:
    """The protocol on (N, D) embeddings: 10-fold accuracy, VAL@FAR=1e-3/1e-2, the ROC.

    Pairs come from make_pairs(labels, seed) unless given (an LFW pairs file).
    """
    if pairs is None:
        pairs, same = make_pairs(labels, seed)
    distances = pair_distances(embeddings, pairs)
    report = kfold_accuracy(distances, same, num_folds, folds)
    report["val_at_far"] = {str(far): val_at_far(distances, same, far) for far in (1e-3, 1e-2)}
    report["roc"] = roc_curve(distances, same)
    report["threshold"] = best_threshold(distances, same)  # on all pairs: for deployment
    report["num_pairs"] = len(pairs)
    return report


def one_shot_accuracy(
    embeddings: np.ndarray, labels: np.ndarray, draws: int = 20, seed: int = 0,
) -> dict[str, float]:
    """Enrol one random image per person, recognise all the others (closed set); mean, std
    over `draws` seeded choices of the enrolled images."""
    embeddings, labels = np.asarray(embeddings, np.float32), np.asarray(labels)
    people = np.unique(labels)
    rng = np.random.default_rng(seed)
    accuracies = []
    for _ in range(draws):
        gallery = np.array([rng.choice(np.flatnonzero(labels == p)) for p in people])
        queries = np.setdiff1d(np.arange(len(labels)), gallery)
        index, _ = nearest_enrolled(embeddings[queries], embeddings[gallery])
        accuracies.append(float(np.mean(people[np.asarray(index)] == labels[queries])))
    return {"accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
            "draws": draws}


def open_set_rejection(
    embeddings: np.ndarray, labels: np.ndarray, num_enrolled: int = 5, num_impostors: int = 5,
    acceptance: float = 0.9, draws: int = 20, seed: int = 0,
) -> dict[str, float]:
    """Rejection rate of people never enrolled, at the threshold accepting `acceptance` of
    the enrolled people's queries.

    Each draw enrols one image of each of `num_enrolled` random people, queries with their
    other images (the threshold is the `acceptance` quantile of these queries' nearest
    distances) and with all images of `num_impostors` other people (rejected when their
    nearest distance exceeds the threshold). Also the rank-1 accuracy of the accepted
    genuine queries. Mean and std over `draws` seeded draws.
    """
    embeddings, labels = np.asarray(embeddings, np.float32), np.asarray(labels)
    people = np.unique(labels)
    if len(people) < num_enrolled + num_impostors:
        raise ValueError(f"labels hold {len(people)} people; need num_enrolled + num_impostors"
                         f" = {num_enrolled + num_impostors}")
    rng = np.random.default_rng(seed)
    rejected, identified = [], []
    for _ in range(draws):
        chosen = rng.permutation(people)[: num_enrolled + num_impostors]
        enrolled, impostors = chosen[:num_enrolled], chosen[num_enrolled:]
        gallery = np.array([rng.choice(np.flatnonzero(labels == p)) for p in enrolled])
        genuine = np.setdiff1d(np.flatnonzero(np.isin(labels, enrolled)), gallery)
        strangers = np.flatnonzero(np.isin(labels, impostors))
        g_index, g_dist = map(np.asarray, nearest_enrolled(embeddings[genuine],
                                                           embeddings[gallery]))
        _, s_dist = nearest_enrolled(embeddings[strangers], embeddings[gallery])
        threshold = np.quantile(g_dist, acceptance, method="inverted_cdf")
        rejected.append(float(np.mean(np.asarray(s_dist) > threshold)))
        accepted = g_dist <= threshold
        identified.append(float(np.mean(enrolled[g_index[accepted]] == labels[genuine][accepted])))
    return {"rejection_mean": float(np.mean(rejected)), "rejection_std": float(np.std(rejected)),
            "accepted_identification_mean": float(np.mean(identified)),
            "acceptance": acceptance, "draws": draws}


# --- LFW pairs files -----------------------------------------------------------------------

def read_pairs_file(path: str) -> tuple[list[tuple[str, int, str, int]], int]:
    """LFW pairs.txt: (name1, number1, name2, number2) per pair, and the number of folds.

    The first line is `folds pairs_per_fold` (or only `pairs`); then `name n1 n2` for a
    same-person pair and `name1 n1 name2 n2` for a different-person one.
    """
    with open(path) as f:
        lines = [line.split() for line in f if line.strip()]
    if not lines or not all(part.isdigit() for part in lines[0]):
        raise ValueError(f"pairs file {path!r}: the first line must be 'folds pairs_per_fold'")
    num_folds = int(lines[0][0]) if len(lines[0]) == 2 else 1
    pairs = []
    for number, fields in enumerate(lines[1:], start=2):
        if len(fields) == 3:
            pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2])))
        elif len(fields) == 4:
            pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
        else:
            raise ValueError(f"pairs file {path!r} line {number}: expected 3 or 4 fields, got "
                             f"{fields}")
    return pairs, num_folds
