"""Box formats: (cx, cy, h, w) relative to the image <-> corners (x1, y1, x2, y2) <-> pixels.

The project's boxes are the lecture's (b_x, b_y, b_h, b_w): centre x, centre y, height,
width, all as fractions of the image (x along the width, y down the height). Corners are
(x1, y1, x2, y2) in the same units unless converted to pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_last_axis(boxes: jax.Array, name: str = "boxes") -> None:
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {boxes.shape}")


def center_to_corners(boxes: jax.Array) -> jax.Array:
    """(..., 4) boxes (cx, cy, h, w) -> corners (x1, y1, x2, y2), same units."""
    boxes = jnp.asarray(boxes)
    _check_last_axis(boxes)
    cx, cy, h, w = jnp.moveaxis(boxes, -1, 0)
    return jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def corners_to_center(corners: jax.Array) -> jax.Array:
    """(..., 4) corners (x1, y1, x2, y2) -> boxes (cx, cy, h, w), same units."""
    corners = jnp.asarray(corners)
    _check_last_axis(corners, "corners")
    x1, y1, x2, y2 = jnp.moveaxis(corners, -1, 0)
    return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, y2 - y1, x2 - x1], axis=-1)


def to_pixels(boxes: jax.Array, height: int, width: int) -> jax.Array:
    """Relative (cx, cy, h, w) boxes -> pixel corners (x1, y1, x2, y2) of a height x width image."""
    scale = jnp.asarray([width, height, width, height], jnp.float32)
    return center_to_corners(boxes) * scale


def from_pixels(corners: jax.Array, height: int, width: int) -> jax.Array:
    """Pixel corners (x1, y1, x2, y2) of a height x width image -> relative (cx, cy, h, w)."""
    corners = jnp.asarray(corners, jnp.float32)
    _check_last_axis(corners, "corners")
    scale = jnp.asarray([width, height, width, height], jnp.float32)
    return corners_to_center(corners / scale)


def area(boxes: jax.Array) -> jax.Array:
    """Area h * w of (..., 4) (cx, cy, h, w) boxes, negative sizes counted as 0."""
    boxes = jnp.asarray(boxes)
    _check_last_axis(boxes)
    return jnp.maximum(boxes[..., 2], 0) * jnp.maximum(boxes[..., 3], 0)
