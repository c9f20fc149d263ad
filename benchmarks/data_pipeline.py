"""Host input pipeline throughput (images/s, no model): train batches of the JPEG CIFAR-10
folder, AT&T faces (P x K, "faces" augmentation) and raccoon detection (flip), read the way
the training loop reads them, with 0, 1 and 2 Grain worker processes; with --old=DIR also
the implementation checked out in DIR (e.g. /work/main before Grain: its prefetch thread),
in a child process of the same run.

    PYTHONPATH=. .venv/bin/python benchmarks/data_pipeline.py --old=/work/main

The first batch (start-up: spawning and feeding the workers) is timed apart from the
following --batches batches, whose rate is the img/s figure. The CIFAR folder's decode
(its test split, 10,000 JPEGs) is timed as it is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

_OLD = flags.DEFINE_string("old", None, "a checkout whose jaxcnn is measured too (before)")
_MODE = flags.DEFINE_enum("mode", "new", ["new", "old"], "old: run as the --old child")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Grain worker counts (new)")
_BATCHES = flags.DEFINE_integer("batches", 100, "batches timed after the first")
_CIFAR = flags.DEFINE_string("cifar", "/work/data/cifar10", "JPEG CIFAR-10 (train/, test/)")
_FACES = flags.DEFINE_string("faces", "../shared/data/att_faces", "AT&T faces folder")
_RACCOON = flags.DEFINE_string("raccoon", "../shared/data/raccoon", "raccoon VOC folder")
_JSON = flags.DEFINE_string("json", None, "append one JSON line per measurement here")


def _datasets():
    """{name: (dataset, global batch)} and the CIFAR decode rate (img/s)."""
    import numpy as np

    from jaxcnn.data import arrays, detection, faces, offline

    start = time.perf_counter()
    x, y, _ = offline.read_image_folder(os.path.join(_CIFAR.value, "test"))
    decode = len(x) / (time.perf_counter() - start)
    images = arrays.to_float_images(x)
    cifar = arrays.ArrayDataset("cifar_folder", images, y, images[:1], y[:1],
                                int(np.max(y)) + 1, "crop_flip")
    people = faces.identity_dataset(_FACES.value, "s1-s20", "s21-s30", (64, 64), 1, 4, "faces")
    raccoon = detection.get_detection_dataset(f"voc_folder:{_RACCOON.value}",
                                              image_size=(96, 96), augment="flip", report=None)
    return {"cifar_folder": (cifar, 128), "faces": (people, 40),
            "raccoon": (raccoon, 32)}, decode


def _rate(batches, batch: int) -> tuple[float, float]:
    """(seconds to the first batch, img/s over the next --batches batches)."""
    start = time.perf_counter()
    next(batches)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
        next(batches)
    return first, _BATCHES.value * batch / (time.perf_counter() - start)


def measure(mode: str) -> list[dict]:
    """One row per (dataset, worker count) for the jaxcnn on sys.path."""
    from jaxcnn.data import base

    datasets, decode = _datasets()
    rows = [{"code": mode, "dataset": "cifar_folder_decode", "workers": 0,
             "img_per_s": round(decode, 1)}]
    for name, (dataset, batch) in datasets.items():
        for workers in ([None] if mode == "old" else [int(w) for w in _WORKERS.value]):
            if mode == "old":  # the loop wrapped the generator in a 4-deep prefetch thread
                batches = base.prefetch(dataset.train_batches(batch, seed=0), size=4)
            else:
                batches = dataset.train_batches(batch, seed=0, workers=workers)
            try:
                first, rate = _rate(batches, batch)
            finally:
                batches.close()
            rows.append({"code": mode, "dataset": name, "batch": batch,
                         "workers": "thread" if workers is None else workers,
                         "first_batch_s": round(first, 2), "img_per_s": round(rate, 1)})
    return rows


def main(argv):
    del argv
    rows = []
    if _OLD.value:
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--mode=old",
             f"--batches={_BATCHES.value}", f"--cifar={_CIFAR.value}",
             f"--faces={os.path.abspath(_FACES.value)}",
             f"--raccoon={os.path.abspath(_RACCOON.value)}"],
            env={**os.environ, "PYTHONPATH": os.path.abspath(_OLD.value)}, cwd=_OLD.value,
            capture_output=True, text=True, check=True)
        rows += [json.loads(line) for line in child.stdout.splitlines()
                 if line.startswith("{")]
    rows += measure(_MODE.value)
    load = os.getloadavg()
    for row in rows:
        row["load"] = [round(v, 2) for v in load]
        print(json.dumps(row), flush=True)
        if _JSON.value and _MODE.value == "new":
            with open(_JSON.value, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":  # Grain's spawned workers import this module: no work at import
    app.run(main)
