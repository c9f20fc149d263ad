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


# --- Localization (classification with localization, the lecture's y1-masked loss) ---


def _check_localization(y_pred: jax.Array, y_true: jax.Array) -> None:
    if y_pred.shape != y_true.shape or y_pred.ndim < 2 or y_pred.shape[-1] < 6:
        raise ValueError(
            "y_pred and y_true must share a shape (..., 5 + K) = (pc, bx, by, bh, bw, c1..cK) "
            f"with K >= 1, got {y_pred.shape} and {y_true.shape}")


def localization_loss(y_pred: jax.Array, y_true: jax.Array) -> jax.Array:
    """Batch mean of the lecture's loss: all 5+K squared errors if y1 = 1, else (y1 - yhat1)^2.

    y_pred, y_true: (B, 5 + K) (or (B, ..., 5 + K), summed over the middle axes).
    """
    y_pred, y_true = jnp.asarray(y_pred, jnp.float32), jnp.asarray(y_true, jnp.float32)
    _check_localization(y_pred, y_true)
    present = y_true[..., :1] == 1
    # where (not multiply) so the masked entries get exactly zero gradient, NaN or not.
    rest = jnp.where(present, jnp.square(y_pred[..., 1:] - y_true[..., 1:]), 0.0)
    per_vector = jnp.square(y_pred[..., 0] - y_true[..., 0]) + jnp.sum(rest, axis=-1)
    per_example = jnp.sum(per_vector.reshape(per_vector.shape[0], -1), axis=1)
    return jnp.mean(per_example)


def localization_loss_logistic(y_pred: jax.Array, y_true: jax.Array) -> jax.Array:
    """Batch mean of: logistic loss on pc + (if y1 = 1) squared box error + softmax CE on classes.

    y_pred holds raw outputs (pc logit, bx, by, bh, bw, class logits); y_true as in
    `localization_loss` (one-hot classes).
    """
    y_pred, y_true = jnp.asarray(y_pred, jnp.float32), jnp.asarray(y_true, jnp.float32)
    _check_localization(y_pred, y_true)
    present = y_true[..., 0] == 1
    objectness = optax.sigmoid_binary_cross_entropy(y_pred[..., 0], y_true[..., 0])
    box = jnp.sum(jnp.square(y_pred[..., 1:5] - y_true[..., 1:5]), axis=-1)
    classes = optax.softmax_cross_entropy(y_pred[..., 5:], y_true[..., 5:])
    per_vector = objectness + jnp.where(present, box + classes, 0.0)
    return jnp.mean(jnp.sum(per_vector.reshape(per_vector.shape[0], -1), axis=1))
