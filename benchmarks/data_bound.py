"""Is training data-bound? The training loop's img/s with the task's real input pipeline
against the same run fed one prepared batch over and over (no host work per step), in
alternating rounds of one process; and the `data_wait_fraction` each logs.

    PYTHONPATH=. .venv/bin/python benchmarks/data_bound.py --config=experiments/configs/faces_att.py
    PYTHONPATH=. .venv/bin/python benchmarks/data_bound.py \
        --config=experiments/configs/detect_raccoon.py --steps=40 --window=20

The loop dispatches a step and then asks for the next batch while that step may still be
computing (JAX's asynchronous dispatch), so time spent in `next(batches)` can overlap the
step: `data_wait_fraction` alone does not say the step waits. If the real pipeline's img/s
equals the repeated batch's, the input pipeline does not bound training, whatever the wait
fraction says; the img/s lost to it is 1 - real / repeated.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile

from absl import app, flags
from ml_collections import config_flags

from experiments.tables.harness import train_curve
from jaxcnn import tasks, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config (path.py:args)")
_STEPS = flags.DEFINE_integer("steps", 100, "training steps of each run")
_WINDOW = flags.DEFINE_integer("window", 50, "log window (steps); the last one is reported")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "alternating rounds (real, repeated)")
_OTHER = flags.DEFINE_string("other", None, "config overrides 'k=v,...' of a third run in each "
                             "round (e.g. \"dataset='device:PATH'\" beside a folder: dataset)")


class RepeatedBatch:
    """A dataset whose train stream is its first train batch, forever (no per-step host work)."""

    def __init__(self, dataset):
        self._dataset = dataset

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def train_batches(self, global_batch, **kwargs):
        stream = self._dataset.train_batches(global_batch, **kwargs)
        first = next(stream)
        if hasattr(stream, "close"):
            stream.close()
        return _Forever(first)


class _Forever:
    def __init__(self, batch):
        self._batch = batch

    def __next__(self):
        return self._batch

    def close(self):
        pass


def run(config, repeated: bool) -> dict:
    """One training run of `config`; its last window's img/s and data wait."""
    task = tasks.build(config)
    if repeated:
        task = dataclasses.replace(task, dataset=RepeatedBatch(task.dataset))
    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(config, workdir, task)
        (_, img_s), (_, wait) = (train_curve(workdir, key)[-1]
                                 for key in ("images_per_sec", "data_wait_fraction"))
    return {"img_s": img_s, "wait": wait}


def main(argv):
    del argv
    config = _CONFIG.value
    config.train_steps = _STEPS.value
    config.log_every_steps = _WINDOW.value
    config.checkpoint_every_steps = _STEPS.value
    config.eval_every_steps = None
    config.progress = False
    config.tensorboard = False
    variants = {"real": (config, False), "repeated": (config, True)}
    if _OTHER.value:
        variants["other"] = (train.override(config.copy_and_resolve_references(), _OTHER.value),
                             False)
    results = {name: [] for name in variants}
    for index in range(_ROUNDS.value):
        for name, (variant, repeated) in variants.items():
            results[name].append(run(variant, repeated))
            print(f"round {index + 1} {name}: {results[name][-1]}", flush=True)
    print(f"load {os.getloadavg()}")
    for name, rows in results.items():
        rates = [row["img_s"] for row in rows]
        waits = [row["wait"] for row in rows]
        each = ", ".join(f"{r:.0f}" for r in rates)
        print(f"{name:9s} img/s {statistics.mean(rates):7.1f} (each {each})"
              f"  data_wait_fraction {', '.join(f'{w:.3f}' for w in waits)}")
    rep = [row["img_s"] for row in results["repeated"]]
    for name in results:
        if name != "repeated":
            ratios = [row["img_s"] / b for row, b in zip(results[name], rep, strict=True)]
            print(f"{name} / repeated img/s per round: {', '.join(f'{r:.3f}' for r in ratios)} "
                  f"(mean {statistics.mean(ratios):.3f})")


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
