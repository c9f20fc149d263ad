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
