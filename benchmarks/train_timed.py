r"""Train and evaluate through the one loop, and write WORKDIR/timing.json: test error and
wall time split into start-up, compile, training and evaluation, with images/s.

  python benchmarks/train_timed.py \
      --config=experiments/configs/resnet20_cifar10.py:steps=64000 --workdir=/tmp/r20

start-up: process start until the loop is called (imports, reading and decoding the data);
compile: JAX's trace + lowering + XLA compile events (jax.monitoring) during the loop;
evaluation: inside the dataset's eval_batches (the loop fetches each batch's sums, so the
device work is done when the generator ends), less the compiles in it; training: the rest
of the loop (steps, logging, checkpoints); steady img/s: the median of the loop's logged
windows after the first (which holds the compile).
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.common import split_times  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file[:arg]")
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, metrics.jsonl, timing.json")
flags.mark_flags_as_required(["config", "workdir"])

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class TimedDataset:
    """Forwards everything to `dataset`; records the wall-clock windows of eval passes."""

    def __init__(self, dataset: Any):
        self._dataset = dataset
        self.eval_windows: list[tuple[float, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dataset, name)

    def eval_batches(self, *args, **kwargs):
        start = time.perf_counter()
        yield from self._dataset.eval_batches(*args, **kwargs)
        self.eval_windows.append((start, time.perf_counter()))


def main(argv):
    del argv
    import jax

    from experiments import common
    from jaxcnn import tasks, train

    common.quiet_logging()
    config, workdir = _CONFIG.value, _WORKDIR.value
    compiles: list[tuple[float, float]] = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: compiles.append((time.perf_counter(), duration))
        if event in COMPILE_EVENTS else None)
    task = tasks.build(config)
    dataset = TimedDataset(task.dataset)
    task = train.Task(task.model, dataset, task.loss_fn, task.eval_fn)
    jax.devices()  # backend start-up belongs to start-up
    loop_start = time.perf_counter()
    startup_s = loop_start - PROCESS_START
    result = train.train_and_evaluate(config, workdir, task)
    loop_end = time.perf_counter()
    times = split_times(loop_start, loop_end, compiles, dataset.eval_windows)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rates = [row["images_per_sec"] for row in map(json.loads, f)
                 if row["split"] == "train" and "images_per_sec" in row]
    steps = result.steps_run
    device = jax.devices()[0]
    timing = {
        "test_error_pct": 100 * (1 - result.metrics["top1"]),
        "test_accuracy": result.metrics["top1"], "test_loss": result.metrics["loss"],
        "eval_count": result.metrics["count"], "steps": steps,
        "batch_size": config.batch_size, "startup_s": startup_s, **times,
        "total_s": loop_end - PROCESS_START,
        "train_img_s": steps * config.batch_size / times["training_s"] if steps else None,
        "steady_img_s": statistics.median(rates[1:]) if len(rates) > 1 else None,
        "device": getattr(device, "device_kind", str(device)), "platform": device.platform,
        "jax": jax.__version__, "config": config.to_dict(),
    }
    with open(os.path.join(workdir, "timing.json"), "w") as f:
        json.dump(timing, f, indent=2, default=str)
    print("timing " + json.dumps({k: v for k, v in timing.items() if k != "config"}), flush=True)


if __name__ == "__main__":
    app.run(main)
