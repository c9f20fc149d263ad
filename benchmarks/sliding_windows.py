"""Sliding windows: the crop classifier on every 14x14 window vs its convolutional form.

PYTHONPATH=. .venv/bin/python -m benchmarks.sliding_windows [--workdir=DIR] [--repeats=10]

On one held-out 96x96 scene: seconds (best of --repeats, jit-compiled) and MACs
(jaxcnn.counting) of each form, and the largest difference between their outputs. DIR is a
crop_classifier run (experiments/configs/sliding.py); without it the classifier is freshly
initialised (the timing and the MACs do not depend on the weights).
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from jaxcnn import counting
from jaxcnn.data.detection import synthetic_scene
from jaxcnn.detection import sliding

_WORKDIR = flags.DEFINE_string("workdir", None, "A crop_classifier run; default: random init.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls per form (the best is reported).")


def _best_time(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def benchmark_sliding_windows(classifier_params: dict, image: np.ndarray,
                              num_outputs: int = 4, repeats: int = 5) -> dict[str, float]:
    """Naive (classifier per 14x14 window) vs convolutional form on one (H, W, C) image.

    Returns seconds (best of `repeats`, jit-compiled) and MACs (jaxcnn.counting) of each,
    and the largest difference between their outputs.
    """
    images = jnp.asarray(image)[None]
    conv_params = sliding.to_convolutional(classifier_params)
    naive = jax.jit(lambda p, x: sliding.naive_window_logits(p, x, num_outputs))
    conv_model = sliding.ConvCropClassifier(num_outputs)
    conv = jax.jit(lambda p, x: conv_model.apply({"params": p}, x))
    out_naive, out_conv = naive(classifier_params, images), conv(conv_params, images)
    windows = out_naive.shape[1] * out_naive.shape[2]
    crop_macs = counting.total_macs(counting.summary(
        sliding.CropClassifier(num_outputs), (sliding.WINDOW, sliding.WINDOW, image.shape[-1])))
    conv_macs = counting.total_macs(counting.summary(conv_model, images.shape[1:]))
    naive_s = _best_time(naive, classifier_params, images, repeats=repeats)
    conv_s = _best_time(conv, conv_params, images, repeats=repeats)
    return {"windows": windows, "naive_seconds": naive_s, "conv_seconds": conv_s,
            "speedup": naive_s / conv_s, "naive_macs": windows * crop_macs,
            "conv_macs": conv_macs, "mac_ratio": windows * crop_macs / conv_macs,
            "max_abs_difference": float(jnp.max(jnp.abs(out_naive - out_conv)))}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs a restore at INFO
    image = synthetic_scene(3, 0)[0]  # a held-out scene (test stream of scenes_seed 1)
    if _WORKDIR.value:
        from jaxcnn import tasks

        params = tasks.load_run(_WORKDIR.value).state.params
    else:
        params = sliding.CropClassifier(4).init(
            jax.random.PRNGKey(0), jnp.zeros((1, sliding.WINDOW, sliding.WINDOW, 3)))["params"]
    print(json.dumps(benchmark_sliding_windows(params, image, repeats=_REPEATS.value), indent=2))


if __name__ == "__main__":
    app.run(main)
