"""Face verification and recognition with a learned similarity d(x1, x2) = ||f(x1) - f(x2)||^2.

- `FaceEncoder`: a registry network + an L2-normalised embedding; the Siamese pair is the
  same parameters applied to both images.
- The verification protocol (one definition, used everywhere): `make_pairs` (all
  same-person pairs + as many seeded different-person pairs), `kfold_accuracy` (10 folds
  over pairs, threshold chosen on the 9 others), `roc_curve`, `val_at_far` (pooled folds).
- `enroll` / `recognize`: one image per person; the nearest enrolled identity, or
  NOT_RECOGNISED when it is farther than the threshold.
- Host-side reports over all embeddings + labels (`verification_report`,
  `one_shot_accuracy`, `open_set_rejection`) for the evaluation of held-out people.

Distances are squared L2 between embeddings throughout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import losses, models

NOT_RECOGNISED = "not recognised"


# --- The encoder ---------------------------------------------------------------------------

HEADS = ("flatten", "avg", "classifier")


def embedding_backbone(trunk: str, embedding_dim: int, head: str = "flatten",
                       **kwargs: Any) -> Any:
    """(B, H, W, C) images, train -> (B, embedding_dim) unnormalised vectors; call it inside a
    compact module (its layers become that module's children).

    head 'flatten' / 'avg': `models.get_trunk(trunk)`'s last feature map, flattened (keeps
    where a feature is: right for aligned faces) or globally averaged (any input size), then
    one linear projection named 'embedding'. head 'classifier': the whole registry model with
    its classifier resized to `embedding_dim` (its hidden fully connected layers kept).
    """
    if head not in HEADS:
        raise ValueError(f"head: expected one of {HEADS}; received {head!r}")
    if head == "classifier":
        return models.get_model(trunk, num_classes=embedding_dim, **kwargs)
    features, projection = models.get_trunk(trunk, **kwargs), nn.Dense(embedding_dim,
                                                                        name="embedding")

    def backbone(x: jax.Array, train: bool) -> jax.Array:
        fmap = features(x, train).astype(jnp.float32)
        vector = jnp.mean(fmap, axis=(1, 2)) if head == "avg" else fmap.reshape(len(fmap), -1)
        return projection(vector)

    return backbone


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows of (B, D) x scaled to unit L2 norm (finite gradient at 0)."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), -1, keepdims=True), eps))


class FaceEncoder(nn.Module):
    """f(x): NHWC images in [0, 1] -> (B, embedding_dim) unit-norm float32 embeddings.

    The registry trunk `trunk` + `head` (see embedding_backbone) + L2 normalisation. With
    `flip_average`, inference (train=False) embeds the image and its mirror image and
    normalises their sum (a mirror-symmetric f for a net trained with flips).
    """

    trunk: str = "lenet5"
    embedding_dim: int = 64
    trunk_kwargs: Any = None  # dict of registry kwargs (conv_impl, dtype, ...)
    flip_average: bool = False
    head: str = "flatten"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        backbone = embedding_backbone(self.trunk, self.embedding_dim, self.head,
                                      **(self.trunk_kwargs or {}))
        z = backbone(x, train).astype(jnp.float32)
        if self.flip_average and not train:
            z = l2_normalize(z) + l2_normalize(backbone(x[:, :, ::-1], train).astype(jnp.float32))
        return l2_normalize(z)


def siamese_distance(model: nn.Module, variables: Any, x1: jax.Array, x2: jax.Array) -> jax.Array:
    """d(x1, x2) = ||f(x1) - f(x2)||^2 per pair, both images through the same parameters."""
    f1 = model.apply(variables, x1, train=False)
    f2 = model.apply(variables, x2, train=False)
    return jnp.sum(jnp.square(f1 - f2), axis=-1)


# --- Verification and recognition ----------------------------------------------------------

def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """(N, M) squared L2 distances between the rows of (N, D) a and (M, D) b."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be (N, D) and (M, D) with one D; got {a.shape}, "
                         f"{b.shape}")
    return jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)


def verify(emb_a: jax.Array, emb_b: jax.Array, threshold: float) -> jax.Array:
    """True where ||emb_a - emb_b||^2 <= threshold (same person), per row of (B, D) or (D,)."""
    emb_a, emb_b = jnp.asarray(emb_a), jnp.asarray(emb_b)
    if emb_a.shape != emb_b.shape:
        raise ValueError(f"emb_a and emb_b must have one shape; got {emb_a.shape}, {emb_b.shape}")
    return jnp.sum(jnp.square(emb_a - emb_b), axis=-1) <= threshold


@dataclasses.dataclass(frozen=True)
class Database:
    """Enrolled people: one embedding each (one-shot)."""

    embeddings: np.ndarray  # (K, D)
    names: tuple[str, ...]


def enroll(embeddings: Any, names: Sequence[str]) -> Database:
    """A database of one (D,) embedding per person; a name given twice is an error."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(names) != len(embeddings):
        raise ValueError(f"embeddings must be (K, D) with K names; got {embeddings.shape} and "
                         f"{len(names)} names")
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if repeated:
        raise ValueError(f"one image per person (one-shot): {repeated} enrolled more than once")
    return Database(embeddings, tuple(names))


def nearest_enrolled(emb: jax.Array, gallery: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(index, squared distance) of the nearest gallery row for each row of (N, D) emb."""
    d = squared_distances(emb, gallery)
    index = jnp.argmin(d, axis=1)
    return index, jnp.take_along_axis(d, index[:, None], axis=1)[:, 0]


def recognize(emb: Any, database: Database, threshold: float):
    """(name, distance) of the nearest enrolled person, name NOT_RECOGNISED beyond threshold.

    A (D,) embedding gives one (str, float); (N, D) gives (list of N names, (N,) distances).
    """
    emb = np.asarray(emb, np.float32)
    single = emb.ndim == 1
    batch = emb[None] if single else emb
    if batch.ndim != 2 or batch.shape[1] != database.embeddings.shape[1]:
        raise ValueError(f"emb must be (D,) or (N, D) with D = {database.embeddings.shape[1]}; "
                         f"got {emb.shape}")
    index, distance = map(np.asarray, nearest_enrolled(batch, database.embeddings))
    names = [database.names[i] if d <= threshold else NOT_RECOGNISED
             for i, d in zip(index, distance, strict=True)]
    return (names[0], float(distance[0])) if single else (names, distance)


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


# --- Triplet training through jaxcnn.train -------------------------------------------------

TASK_DEFAULTS = {
    "embedding_dim": 64,
    "margin": 0.2,
    "mining": "batch_hard",  # losses.TRIPLET_MINING
    "images_per_person": 4,  # K of the P x K batches; P = batch_size / K
    "channels": 1,
    "augment": "flip",  # data.faces.FACE_AUGMENTATIONS ('faces': flip + affine + lighting)
    "train_people": "",  # e.g. 's1-s20'; '' = all people not evaluated
    "eval_people": "",  # e.g. 's21-s30'; '' = all people not trained on
    "flip_average": False,  # inference embeds image + mirror image (FaceEncoder)
    "head": "flatten",  # HEADS: how the trunk's feature map becomes the embedding
}


def task_config(config) -> dict[str, Any]:
    """config.task's keys on top of TASK_DEFAULTS; unknown keys and bad values raise."""
    from jaxcnn.train import task_settings

    task = task_settings(config, TASK_DEFAULTS).to_dict()
    if task["mining"] not in losses.TRIPLET_MINING:
        raise ValueError(f"config.task.mining must be one of {losses.TRIPLET_MINING}; "
                         f"received {task['mining']!r}")
    if task["head"] not in HEADS:
        raise ValueError(f"config.task.head must be one of {HEADS}; received {task['head']!r}")
    if task["embedding_dim"] < 1 or task["margin"] < 0:
        raise ValueError(f"config.task: embedding_dim >= 1 and margin >= 0 expected; received "
                         f"{task['embedding_dim']}, {task['margin']}")
    return task


def encoder_from_config(config) -> FaceEncoder:
    """The FaceEncoder of a faces config: trunk config.model, embedding config.task."""
    kwargs = dict(config.model_kwargs or {})
    kwargs.setdefault("dtype", jnp.dtype(config.dtype))
    # config.conv_impl as resolved for the platform by train.build_program (resolve_platform).
    kwargs.setdefault("conv_impl", config.conv_impl)
    options = task_config(config)
    return FaceEncoder(config.model, options["embedding_dim"], kwargs, options["flip_average"],
                       options["head"])


def nearest_neighbour_correct(
    embeddings: jax.Array, labels: jax.Array, mask: jax.Array
) -> jax.Array:
    """Per row 1.0 where its nearest other (unmasked) row of the batch has its label."""
    d = losses.pairwise_squared_distances(embeddings)
    valid = mask.astype(bool)
    d = jnp.where(valid[None, :] & ~jnp.eye(len(labels), dtype=bool), d, jnp.inf)
    return (labels[jnp.argmin(d, axis=1)] == labels).astype(jnp.float32)


def triplet_task(config, dataset) -> Any:
    """A jaxcnn.train.Task: FaceEncoder trained with the mined triplet loss on P x K batches.

    Evaluation on the held-out people: the loop gathers every embedding and label
    (`embedding_outputs`) and `held_out_metrics` computes the verification protocol,
    one-shot and open-set figures on all of them; plus leave-one-out nearest-neighbour
    accuracy within each eval batch (the whole set when eval_batch_size >= its size).
    """
    from jaxcnn.train import GatherAll, Task

    options = task_config(config)
    margin, mining = float(options["margin"]), options["mining"]

    def loss_fn(embeddings, batch):
        loss = losses.mined_triplet_loss(embeddings, batch["label"], margin, mining)
        _, active = losses.batch_all_triplet_loss(embeddings, batch["label"], margin)
        return loss, {"loss": loss, "active_triplets": active}

    def eval_fn(embeddings, batch):
        mask = batch["mask"].astype(jnp.float32)
        correct = nearest_neighbour_correct(embeddings, batch["label"], mask)
        return {"nn_accuracy": jnp.sum(correct * mask), "count": jnp.sum(mask)}

    return Task(model=encoder_from_config(config), dataset=dataset, loss_fn=loss_fn,
                eval_fn=eval_fn, output_fn=embedding_outputs,
                make_evaluator=lambda: GatherAll(held_out_metrics), task_defaults=TASK_DEFAULTS)


def embedding_outputs(embeddings: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-example outputs to gather for the held-out evaluation (a Task.output_fn)."""
    return {"embedding": embeddings, "label": batch["label"]}


def held_out_metrics(outputs: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Verification, one-shot and open-set figures from all gathered embeddings + labels."""
    embeddings, labels = outputs["embedding"], outputs["label"]
    verification = verification_report(embeddings, labels, seed)
    metrics = {"verification_accuracy": verification["accuracy_mean"],
               "verification_accuracy_std": verification["accuracy_std"],
               "one_shot_accuracy": one_shot_accuracy(embeddings, labels, seed=seed)[
                   "accuracy_mean"]}
    for far, figure in verification["val_at_far"].items():
        metrics[f"val_at_far_{far}"] = figure["val"]
    if len(np.unique(labels)) >= 10:
        metrics["open_set_rejection"] = open_set_rejection(embeddings, labels, seed=seed)[
            "rejection_mean"]
    return metrics

