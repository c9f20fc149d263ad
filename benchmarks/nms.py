"""Greedy NMS: jaxcnn's jit while-loop vs a numpy loop vs a PyTorch loop, same boxes, same run.

PYTHONPATH=. .venv/bin/python benchmarks/nms.py [--sizes=1000,10000] [--max_out=100]

Every implementation is the same greedy algorithm (highest score first, suppress IoU >
threshold, ties to the lower index) and must return the same indices; the script checks.
The numpy and PyTorch loops are the usual "per kept box, IoU against the rest, vectorised"
form; the pure-Python reference of the tests (`detection.nms_numpy`) is timed on the
smallest size only. Times are medians of --repeats calls after one warm-up (jit: compiled).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import torch
from absl import app, flags

from jaxcnn import detection

_SIZES = flags.DEFINE_list("sizes", ["1000", "10000"], "Numbers of boxes.")
_MAX_OUT = flags.DEFINE_integer("max_out", 100, "Boxes kept at most (all implementations).")
_IOU = flags.DEFINE_float("iou_threshold", 0.5, "Suppress IoU above this.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed calls per implementation.")


def random_boxes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n boxes clustered around n/20 objects (as detector outputs are), and scores."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, (max(n // 20, 1), 2))
    sizes = rng.uniform(0.03, 0.2, (len(centres), 2))
    owner = rng.integers(0, len(centres), n)
    boxes = np.concatenate([centres[owner] + rng.normal(0, 0.02, (n, 2)),
                            sizes[owner] * rng.uniform(0.8, 1.25, (n, 2))], axis=1)
    return boxes.astype(np.float32), rng.random(n).astype(np.float32)


def numpy_loop(boxes, scores, iou_threshold, max_out):
    x1, y1 = boxes[:, 0] - boxes[:, 3] / 2, boxes[:, 1] - boxes[:, 2] / 2
    x2, y2 = boxes[:, 0] + boxes[:, 3] / 2, boxes[:, 1] + boxes[:, 2] / 2
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and len(keep) < max_out:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou_threshold]
    return np.array(keep)


def torch_loop(boxes, scores, iou_threshold, max_out):
    x1, y1 = boxes[:, 0] - boxes[:, 3] / 2, boxes[:, 1] - boxes[:, 2] / 2
    x2, y2 = boxes[:, 0] + boxes[:, 3] / 2, boxes[:, 1] + boxes[:, 2] / 2
    areas = (x2 - x1) * (y2 - y1)
    order = torch.argsort(-scores, stable=True)
    keep = []
    while order.numel() and len(keep) < max_out:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        iw = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        ih = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = iw * ih
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou_threshold]
    return np.array(keep)


def median_seconds(repeats: int, fn, *args) -> float:
    """Median wall time of fn(*args) over `repeats` calls after one warm-up call."""
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def jax_nms(boxes, scores, iou_threshold, max_out):
    indices, count = detection.nms(boxes, scores, iou_threshold, max_out)
    indices = jax.block_until_ready(indices)
    return np.asarray(indices)[: int(count)]


def main(argv):
    del argv
    torch.set_num_threads(os.cpu_count() or 1)
    threshold, max_out, repeats = _IOU.value, _MAX_OUT.value, _REPEATS.value
    print(f"cpus {os.cpu_count()}  jax {jax.__version__}  torch {torch.__version__}  "
          f"iou_threshold {threshold}  max_out {max_out}  median of {repeats}")
    print("| boxes | kept | jaxcnn jit ms | numpy loop ms | torch loop ms | python loop ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for position, size in enumerate(int(s) for s in _SIZES.value):
        boxes, scores = random_boxes(size)
        inputs = {"jaxcnn": (jax_nms, jax.device_put(boxes), jax.device_put(scores)),
                  "numpy": (numpy_loop, boxes, scores),
                  "torch": (torch_loop, torch.from_numpy(boxes), torch.from_numpy(scores))}
        kept = {name: fn(b, s, threshold, max_out) for name, (fn, b, s) in inputs.items()}
        for name, indices in kept.items():
            if not np.array_equal(indices, kept["jaxcnn"]):
                raise AssertionError(f"{name} kept other boxes than jaxcnn at {size} boxes")
        timings = [median_seconds(repeats, fn, b, s, threshold, max_out)
                   for fn, b, s in inputs.values()]
        python = "-"
        if position == 0:
            seconds = median_seconds(3, detection.nms_numpy, boxes, scores, threshold, max_out)
            python = f"{1e3 * seconds:.1f}"
        print(f"| {size} | {len(kept['jaxcnn'])} | "
              + " | ".join(f"{1e3 * t:.2f}" for t in timings) + f" | {python} |", flush=True)


if __name__ == "__main__":
    app.run(main)
