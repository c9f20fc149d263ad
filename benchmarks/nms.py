"""Greedy NMS: jaxcnn's jit while-loop vs a numpy loop vs a PyTorch loop, same boxes, same run.

PYTHONPATH=. .venv/bin/python benchmarks/nms.py [--sizes=1000,10000] [--max_out=100]

Every implementation is the same greedy algorithm (highest score first, suppress IoU >
threshold, ties to the lower index) and must return the same indices; the script checks.
The numpy and PyTorch loops are the usual "per kept box, IoU against the rest, vectorised"
form; the pure-Python reference of the tests (`detection.nms_numpy`) is timed on the
smallest size only. After one warm-up call each (jit: compiled), the implementations take
turns, one call each per round, for --repeats rounds, so load from other processes hits
all of them alike; the table shows the best (and median) ms per implementation.
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
_REPEATS = flags.DEFINE_integer("repeats", 15, "Rounds (timed calls per implementation).")
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 1, "torch.set_num_threads; 0 = every core. The loop's tensors are small "
    "(N floats), so threads only add hand-offs (and spin under load).")


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


def alternate_seconds(repeats: int, calls: list) -> list[list[float]]:
    """Seconds of each (fn, *args) call, taking turns for `repeats` rounds after a warm-up."""
    for fn, *args in calls:
        fn(*args)
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for slot, (fn, *args) in enumerate(calls):
            start = time.perf_counter()
            fn(*args)
            times[slot].append(time.perf_counter() - start)
    return times


def jax_nms(boxes, scores, iou_threshold, max_out):
    indices, count = detection.nms(boxes, scores, iou_threshold, max_out)
    indices = jax.block_until_ready(indices)
    return np.asarray(indices)[: int(count)]


def main(argv):
    del argv
    torch.set_num_threads(_TORCH_THREADS.value or os.cpu_count() or 1)
    threshold, max_out, repeats = _IOU.value, _MAX_OUT.value, _REPEATS.value
    print(f"cpus {os.cpu_count()}  jax {jax.__version__}  torch {torch.__version__}  "
          f"torch threads {torch.get_num_threads()}  iou_threshold {threshold}  "
          f"max_out {max_out}  rounds {repeats}")
    print("| boxes | kept | jaxcnn jit ms best (median) | numpy loop | torch loop | python loop |")
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
        calls = [(fn, b, s, threshold, max_out) for fn, b, s in inputs.values()]
        if position == 0:
            calls.append((detection.nms_numpy, boxes, scores, threshold, max_out))
        cells = [f"{1e3 * min(t):.2f} ({1e3 * np.median(t):.2f})"
                 for t in alternate_seconds(repeats, calls)]
        cells += ["-"] * (4 - len(cells))
        print(f"| {size} | {len(kept['jaxcnn'])} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    app.run(main)
