"""Anchor k-means: seeded restarts and the median update."""

import jax
import numpy as np
import pytest

from jaxcnn import detection


def _three_scales():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.uniform(0.02, 0.1, (60, 2)), rng.uniform(0.2, 0.5, (30, 2)),
                           rng.uniform(0.6, 0.9, (10, 2))]).astype(np.float32)


def test_restarts_are_never_worse_than_one_start():
    sizes = _three_scales()
    gains = []
    for seed in range(4):
        key = jax.random.PRNGKey(seed)
        one = float(detection.kmeans_anchors(sizes, 5, key=key, update="mean")[1])
        best = float(detection.kmeans_anchors(sizes, 5, key=key, restarts=8, update="mean")[1])
        assert best >= one
        gains.append(best - one)
    assert max(gains) > 0.02  # seed 0 starts in a poor local optimum (0.654 vs 0.696, mean)


def test_median_update_by_hand():
    # Two clusters of squares, sides {1, 1.2, 3} and {20, 22, 30}: medians 1.2 and 22
    # (means 1.73 and 24); same-centre IoU of squares s, c = min(s, c)^2 / max(s, c)^2.
    sides = np.array([1, 1.2, 3, 20, 22, 30], np.float32)
    sizes = np.stack([sides, sides], 1)
    anchors, mean_iou = detection.kmeans_anchors(sizes, 2, update="median")
    np.testing.assert_allclose(anchors, [[1.2, 1.2], [22, 22]], rtol=1e-6)
    ious = [1 / 1.44, 1, 1.44 / 9, 400 / 484, 1, 484 / 900]
    np.testing.assert_allclose(mean_iou, np.mean(ious), rtol=1e-6)
    means, _ = detection.kmeans_anchors(sizes, 2)
    np.testing.assert_allclose(means, [[5.2 / 3] * 2, [24, 24]], rtol=1e-6)
    with pytest.raises(ValueError, match="update must be one of"):
        detection.kmeans_anchors(sizes, 2, update="mode")
