"""The face encoder f(x): a registry trunk + a head + an L2-normalised embedding.

The Siamese pair is the same parameters applied to both images (`siamese_distance`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import models

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

    With `num_classes` > 0 the module also holds one unit-norm centre per training person
    (`class_centres`, D x num_classes) for a margin softmax: in training it returns
    {"embedding": (B, D), "cosines": (B, num_classes)}; at inference only the embedding.
    """

    trunk: str = "lenet5"
    embedding_dim: int = 64
    trunk_kwargs: Any = None  # dict of registry kwargs (conv_impl, dtype, ...)
    flip_average: bool = False
    head: str = "flatten"
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> Any:
        backbone = embedding_backbone(self.trunk, self.embedding_dim, self.head,
                                      **(self.trunk_kwargs or {}))
        z = backbone(x, train).astype(jnp.float32)
        if self.flip_average and not train:
            z = l2_normalize(z) + l2_normalize(backbone(x[:, :, ::-1], train).astype(jnp.float32))
        z = l2_normalize(z)
        if not self.num_classes:
            return {"embedding": z} if train else z
        # Created at init (train=False) too, so the training step finds them.
        centres = self.param("class_centres", nn.initializers.normal(1.0),
                             (self.embedding_dim, self.num_classes))
        cosines = z @ l2_normalize(centres.T).T
        return {"embedding": z, "cosines": cosines} if train else z


def siamese_distance(model: nn.Module, variables: Any, x1: jax.Array, x2: jax.Array) -> jax.Array:
    """d(x1, x2) = ||f(x1) - f(x2)||^2 per pair, both images through the same parameters."""
    f1 = model.apply(variables, x1, train=False)
    f2 = model.apply(variables, x2, train=False)
    return jnp.sum(jnp.square(f1 - f2), axis=-1)
