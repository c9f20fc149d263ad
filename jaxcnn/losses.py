"""Losses and metrics: pure, jit-able, batched functions of arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _check_logits_labels(logits: jax.Array, labels: jax.Array) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, classes), got shape {logits.shape}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must be (batch,) = {logits.shape[:1]} to match logits, got {labels.shape}"
        )


def cross_entropy(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example softmax cross-entropy (nats) of (B, K) logits against int labels (B,)."""
    _check_logits_labels(logits, labels)
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int = 1) -> jax.Array:
    """Per-example 1.0 where the label is among the k largest logits, else 0.0."""
    _check_logits_labels(logits, labels)
    k = min(k, logits.shape[-1])
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    # Rank = number of classes with a strictly larger logit (ties count in our favour).
    rank = jnp.sum(logits > label_logit, axis=-1)
    # Nothing compares greater than a NaN, so a diverged row would rank first: count it wrong
    # (an out-of-range label gathers a NaN too).
    valid = finite_rows(logits) & jnp.isfinite(label_logit[:, 0])
    return ((rank < k) & valid).astype(jnp.float32)


def finite_rows(logits: jax.Array) -> jax.Array:
    """Per-example bool (B,): True where every one of the (B, K) logits is finite."""
    return jnp.all(jnp.isfinite(logits), axis=-1)


def classification_loss(
    outputs: jax.Array | tuple[jax.Array, ...], labels: jax.Array,
    label_smoothing: float = 0.0, aux_weight: float = 0.3,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean cross-entropy and accuracy; auxiliary heads (GoogLeNet) add aux_weight x theirs."""
    logits, *aux = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    loss = jnp.mean(cross_entropy(logits, labels, label_smoothing))
    for head in aux:
        loss = loss + aux_weight * jnp.mean(cross_entropy(head, labels, label_smoothing))
    accuracy = jnp.mean(topk_correct(logits, labels, 1))
    return loss, {"loss": loss, "accuracy": accuracy}


def classification_eval_sums(
    logits: jax.Array, labels: jax.Array, mask: jax.Array
) -> dict[str, jax.Array]:
    """Masked sums over a (padded) eval batch: loss, top-1 and top-5 correct, count.

    `nonfinite` counts the examples with a NaN or infinite logit; they are never correct, and
    their loss (NaN or inf) is kept in the loss sum so that a diverged model cannot score.
    """
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    mask = mask.astype(jnp.float32)
    # Padding rows may hold anything: keep them out of the sums with where, not a product.
    real = mask > 0
    return {
        "loss": jnp.sum(jnp.where(real, cross_entropy(logits, labels), 0.0)),
        "top1": jnp.sum(topk_correct(logits, labels, 1) * mask),
        "top5": jnp.sum(topk_correct(logits, labels, 5) * mask),
        "nonfinite": jnp.sum(jnp.where(real, ~finite_rows(logits), False).astype(jnp.float32)),
        "count": jnp.sum(mask),
    }


# --- Triplet loss and online triplet mining (face embeddings) -------------------------------

TRIPLET_MINING = ("batch_all", "batch_hard", "semi_hard")


def _check_embeddings(name: str, x: jax.Array) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be (batch, dim) embeddings, got shape {x.shape}")


def triplet_loss(
    anchor: jax.Array, positive: jax.Array, negative: jax.Array, margin: float = 0.2
) -> jax.Array:
    """mean(max(||a-p||^2 - ||a-n||^2 + margin, 0)) over (B, D) anchors, positives, negatives."""
    _check_embeddings("anchor", anchor)
    for name, x in (("positive", positive), ("negative", negative)):
        if x.shape != anchor.shape:
            raise ValueError(f"{name} must have the anchor's shape {anchor.shape}, got {x.shape}")
    d_ap = jnp.sum(jnp.square(anchor - positive), axis=-1)
    d_an = jnp.sum(jnp.square(anchor - negative), axis=-1)
    return jnp.mean(jnp.maximum(d_ap - d_an + margin, 0.0))


def pairwise_squared_distances(x: jax.Array) -> jax.Array:
    """(B, B) squared L2 distances between the rows of (B, D) x.

    Computed from differences, not |a|^2 + |b|^2 - 2ab: exactly 0 (never negative) for
    coinciding rows, and without a square root the gradient there is finite (0).
    """
    _check_embeddings("embeddings", x)
    x = x.astype(jnp.float32)
    return jnp.sum(jnp.square(x[:, None, :] - x[None, :, :]), axis=-1)


def _triplet_masks(labels: jax.Array, mask: jax.Array | None, batch: int):
    """(positive-pair mask, negative-pair mask), both (B, B) bool, padding excluded."""
    if labels.shape != (batch,):
        raise ValueError(f"labels must be (batch,) = ({batch},), got {labels.shape}")
    valid = jnp.ones((batch,), bool) if mask is None else mask.astype(bool)
    both = valid[:, None] & valid[None, :]
    same = labels[:, None] == labels[None, :]
    positive = same & ~jnp.eye(batch, dtype=bool) & both
    return positive, ~same & both


def batch_all_triplet_loss(
    embeddings: jax.Array, labels: jax.Array, margin: float = 0.2, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """(mean loss over the triplets with positive loss, fraction of valid triplets that are).

    Every (anchor, positive, negative) of the batch with labels[a] == labels[p], a != p and
    labels[n] != labels[a]; rows where `mask` is 0 take no part.
    """
    d = pairwise_squared_distances(embeddings)
    positive, negative = _triplet_masks(labels, mask, embeddings.shape[0])
    valid = positive[:, :, None] & negative[:, None, :]  # [a, p, n]
    losses_apn = jnp.maximum(d[:, :, None] - d[:, None, :] + margin, 0.0) * valid
    active = jnp.sum(losses_apn > 0)
    loss = jnp.sum(losses_apn) / jnp.maximum(active, 1)
    return loss, active / jnp.maximum(jnp.sum(valid), 1)


def batch_hard_triplet_loss(
    embeddings: jax.Array, labels: jax.Array, margin: float = 0.2, mask: jax.Array | None = None
) -> jax.Array:
    """Mean over anchors of max(hardest-positive d - hardest-negative d + margin, 0).

    Hermans et al. 2017: per anchor the farthest same-identity and the nearest other-identity
    embedding of the batch; anchors lacking either take no part.
    """
    d = pairwise_squared_distances(embeddings)
    positive, negative = _triplet_masks(labels, mask, embeddings.shape[0])
    hardest_positive = jnp.max(jnp.where(positive, d, -jnp.inf), axis=1)
    hardest_negative = jnp.min(jnp.where(negative, d, jnp.inf), axis=1)
    usable = jnp.any(positive, axis=1) & jnp.any(negative, axis=1)
    per_anchor = jnp.maximum(
        jnp.where(usable, hardest_positive - hardest_negative, 0.0) + margin, 0.0)
    return jnp.sum(per_anchor * usable) / jnp.maximum(jnp.sum(usable), 1)


def semi_hard_triplet_loss(
    embeddings: jax.Array, labels: jax.Array, margin: float = 0.2, mask: jax.Array | None = None
) -> jax.Array:
    """FaceNet's semi-hard mining: mean over (anchor, positive) pairs of the triplet loss.

    For each pair the negative is the nearest one farther than the positive
    (d_ap < d_an); when there is none, the farthest negative (all are then harder than the
    positive). Pairs whose anchor has no negative take no part.
    """
    d = pairwise_squared_distances(embeddings)
    positive, negative = _triplet_masks(labels, mask, embeddings.shape[0])
    d_ap, d_an = d[:, :, None], d[:, None, :]  # [a, p, 1], [a, 1, n]
    farther = negative[:, None, :] & (d_an > d_ap)
    semi_hard = jnp.min(jnp.where(farther, d_an, jnp.inf), axis=2)
    farthest = jnp.max(jnp.where(negative, d, -jnp.inf), axis=1)[:, None]
    chosen = jnp.where(jnp.any(farther, axis=2), semi_hard, farthest)
    pairs = positive & jnp.any(negative, axis=1)[:, None]
    per_pair = jnp.maximum(jnp.where(pairs, d - chosen, 0.0) + margin, 0.0)
    return jnp.sum(per_pair * pairs) / jnp.maximum(jnp.sum(pairs), 1)


def mined_triplet_loss(
    embeddings: jax.Array, labels: jax.Array, margin: float = 0.2, mining: str = "batch_hard",
    mask: jax.Array | None = None,
) -> jax.Array:
    """The triplet loss of a batch of embeddings with identity labels, triplets mined online."""
    if mining == "batch_all":
        return batch_all_triplet_loss(embeddings, labels, margin, mask)[0]
    if mining == "batch_hard":
        return batch_hard_triplet_loss(embeddings, labels, margin, mask)
    if mining == "semi_hard":
        return semi_hard_triplet_loss(embeddings, labels, margin, mask)
    raise ValueError(f"mining must be one of {TRIPLET_MINING}; received {mining!r}")


def additive_angular_margin_loss(
    cosines: jax.Array, labels: jax.Array, scale: float = 16.0, margin: float = 0.3
) -> jax.Array:
    """ArcFace (Deng et al. 2019): mean cross-entropy of s * cos(theta_j), with the angle to the
    true class widened to theta_y + margin (radians); (B, C) cosines between unit-norm
    embeddings and unit-norm class centres, (B,) int labels.

    Where theta_y + margin would pass pi (cos(theta + m) stops decreasing) the target logit is
    cos(theta_y) - m sin(m) instead, as in the paper's code, so it keeps falling with theta_y.
    """
    if cosines.ndim != 2 or labels.shape != (cosines.shape[0],):
        raise ValueError(f"cosines must be (batch, classes) and labels (batch,); got "
                         f"{cosines.shape} and {labels.shape}")
    cos = jnp.clip(cosines.astype(jnp.float32), -1.0, 1.0)
    sin = jnp.sqrt(jnp.maximum(1.0 - jnp.square(cos), 1e-12))
    widened = cos * jnp.cos(margin) - sin * jnp.sin(margin)  # cos(theta + m)
    widened = jnp.where(cos > jnp.cos(jnp.pi - margin), widened, cos - margin * jnp.sin(margin))
    target = jax.nn.one_hot(labels, cos.shape[1], dtype=bool)
    logits = scale * jnp.where(target, widened, cos)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


# --- neural style transfer (Gatys et al. 2015): content, Gram/style, total variation ------


def _check_activations(name: str, a: jax.Array) -> None:
    if a.ndim < 3:
        raise ValueError(f"{name} must be activations (..., nH, nW, nC); received shape {a.shape}")


def _check_pair(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    _check_activations(name_a, a)
    _check_activations(name_b, b)
    if a.shape[-3:] != b.shape[-3:]:
        raise ValueError(
            f"{name_b} must have {name_a}'s (nH, nW, nC) = {a.shape[-3:]}; received {b.shape}"
        )


def content_cost(a_C: jax.Array, a_G: jax.Array) -> jax.Array:
    """1/2 ||a_C - a_G||^2 summed over (nH, nW, nC) of one layer; the mean over leading axes.

    a_C may lack a_G's batch axes (one content image for a batch of generated ones).
    """
    _check_pair("a_C", a_C, "a_G", a_G)
    per_image = 0.5 * jnp.sum(jnp.square(a_G - a_C), axis=(-3, -2, -1))
    return jnp.mean(per_image)


def gram_matrix(a: jax.Array) -> jax.Array:
    """Gram matrices G_kk' = sum_ij a_ijk a_ijk': activations (..., nH, nW, nC) -> (..., nC, nC)."""
    _check_activations("a", a)
    return jnp.einsum("...ijk,...ijl->...kl", a, a, precision=jax.lax.Precision.HIGHEST)


def style_cost_from_gram(gram_S: jax.Array, a_G: jax.Array) -> jax.Array:
    """style_cost with the style image's Gram matrix (..., nC, nC) precomputed."""
    _check_activations("a_G", a_G)
    n_h, n_w, n_c = a_G.shape[-3:]
    if gram_S.shape[-2:] != (n_c, n_c):
        raise ValueError(f"gram_S must be (..., {n_c}, {n_c}) for a_G {a_G.shape}; "
                         f"received {gram_S.shape}")
    squared = jnp.sum(jnp.square(gram_S - gram_matrix(a_G)), axis=(-2, -1))
    return jnp.mean(squared) / float(2 * n_h * n_w * n_c) ** 2


def style_cost(a_S: jax.Array, a_G: jax.Array) -> jax.Array:
    """One layer's style cost 1/(2 nH nW nC)^2 ||G(a_S) - G(a_G)||_F^2; mean over leading axes."""
    _check_pair("a_S", a_S, "a_G", a_G)
    return style_cost_from_gram(gram_matrix(a_S), a_G)


def weighted_style_cost(
    a_S: dict[str, jax.Array], a_G: dict[str, jax.Array], weights: dict[str, float]
) -> jax.Array:
    """sum_l weights[l] * style_cost(a_S[l], a_G[l]) over the layers named in `weights`."""
    missing = sorted(set(weights) - set(a_S)) + sorted(set(weights) - set(a_G))
    if missing:
        raise ValueError(f"weights name layers without activations in a_S/a_G: {missing}")
    return sum(w * style_cost(a_S[name], a_G[name]) for name, w in weights.items())


def total_variation(images: jax.Array) -> jax.Array:
    """Sum of squared differences between vertical and horizontal neighbours of each
    (..., H, W, C) image; the mean over leading axes."""
    _check_activations("images", images)
    dy = jnp.square(images[..., 1:, :, :] - images[..., :-1, :, :]).sum(axis=(-3, -2, -1))
    dx = jnp.square(images[..., :, 1:, :] - images[..., :, :-1, :]).sum(axis=(-3, -2, -1))
    return jnp.mean(dy + dx)


# --- Localization (classification with localization, the lecture's y1-masked loss) ---


def _check_localization(y_pred: jax.Array, y_true: jax.Array) -> None:
    if y_pred.shape != y_true.shape or y_pred.ndim < 2 or y_pred.shape[-1] < 6:
        raise ValueError(
            "y_pred and y_true must share a shape (..., 5 + K) = (pc, bx, by, bh, bw, c1..cK) "
            f"with K >= 1, got {y_pred.shape} and {y_true.shape}")


def localization_loss(
    y_pred: jax.Array, y_true: jax.Array, box_weight: float = 1.0
) -> jax.Array:
    """Batch mean of the lecture's loss: all 5+K squared errors if y1 = 1, else (y1 - yhat1)^2.

    y_pred, y_true: (B, 5 + K) (or (B, ..., 5 + K), summed over the middle axes).
    box_weight scales the four box terms (YOLO's lambda_coord; 1 is the lecture's loss).
    """
    y_pred, y_true = jnp.asarray(y_pred, jnp.float32), jnp.asarray(y_true, jnp.float32)
    _check_localization(y_pred, y_true)
    present = y_true[..., :1] == 1
    weights = jnp.ones(y_true.shape[-1] - 1).at[:4].set(box_weight)
    # where (not multiply) so the masked entries get exactly zero gradient, NaN or not.
    rest = jnp.where(present, weights * jnp.square(y_pred[..., 1:] - y_true[..., 1:]), 0.0)
    per_vector = jnp.square(y_pred[..., 0] - y_true[..., 0]) + jnp.sum(rest, axis=-1)
    per_example = jnp.sum(per_vector.reshape(per_vector.shape[0], -1), axis=1)
    return jnp.mean(per_example)


def localization_loss_logistic(
    y_pred: jax.Array, y_true: jax.Array, box_weight: float = 1.0
) -> jax.Array:
    """Batch mean of: logistic loss on pc + (if y1 = 1) squared box error + softmax CE on classes.

    y_pred holds raw outputs (pc logit, bx, by, bh, bw, class logits); y_true as in
    `localization_loss` (one-hot classes).
    """
    y_pred, y_true = jnp.asarray(y_pred, jnp.float32), jnp.asarray(y_true, jnp.float32)
    _check_localization(y_pred, y_true)
    present = y_true[..., 0] == 1
    objectness = optax.sigmoid_binary_cross_entropy(y_pred[..., 0], y_true[..., 0])
    box = box_weight * jnp.sum(jnp.square(y_pred[..., 1:5] - y_true[..., 1:5]), axis=-1)
    classes = optax.softmax_cross_entropy(y_pred[..., 5:], y_true[..., 5:])
    per_vector = objectness + jnp.where(present, box + classes, 0.0)
    return jnp.mean(jnp.sum(per_vector.reshape(per_vector.shape[0], -1), axis=1))
