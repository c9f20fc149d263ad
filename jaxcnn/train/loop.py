"""One training loop for every task: `train_and_evaluate(config, workdir, task)`."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcnn.data import base as data_base
from jaxcnn.train import workdir as workdir_lib
from jaxcnn.train.checkpoint import Checkpointer, saved_steps
from jaxcnn.train.config import check_keys, validate_config
from jaxcnn.train.metrics import MetricWriter, Progress
from jaxcnn.train.program import Program, build_program
from jaxcnn.train.state import TrainState
from jaxcnn.train.task import Evaluator, Task, classification_task, concatenate_outputs


@dataclasses.dataclass(frozen=True)
class TrainResult:
    state: TrainState
    metrics: dict[str, float]  # the final evaluation
    steps_run: int  # steps this call executed (0 when it resumed an already finished run)


def _eval_outputs(program: Program, state: TrainState, with_sums: bool = True):
    """(summed metrics, gathered per-example outputs) for each eval batch, on the host.

    The outputs of every device and process arrive replicated (the eval step gathers them);
    padding rows are dropped here, so each batch lists its real examples in dataset order.
    """
    batches = program.task.dataset.eval_batches(
        program.eval_batch, process_index=jax.process_index(),
        process_count=jax.process_count())
    for batch in batches:
        sums, outputs = program.eval_step(state, program.to_global(batch))
        sums, outputs = jax.device_get((sums if with_sums else {}, outputs))
        if outputs:
            keep = outputs.pop(data_base.MASK) > 0
            outputs = {key: np.asarray(value)[keep] for key, value in outputs.items()}
        yield sums, outputs


def run_evaluator(program: Program, state: TrainState, evaluator: Evaluator) -> Evaluator:
    """Feed every eval batch's gathered outputs to `evaluator` and return it (for evaluators
    whose results are more than the floats of `result()`, e.g. top-k patches or curves)."""
    for _, outputs in _eval_outputs(program, state, with_sums=False):
        evaluator.update(outputs)
    return evaluator


def evaluate(program: Program, state: TrainState) -> dict[str, float]:
    """The task's metrics over the whole eval split: mean of its sums, then its evaluator's."""
    totals: dict[str, float] = {}
    evaluator = program.task.make_evaluator() if program.task.output_fn else None
    for sums, outputs in _eval_outputs(program, state):
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        if evaluator is not None:
            evaluator.update(outputs)
    result: dict[str, float] = {}
    if totals:
        count = max(totals.pop("count", 0.0), 1.0)
        result = {key: value if key in COUNTED_METRICS else value / count
                  for key, value in totals.items()}
        result["count"] = count
    if evaluator is not None:
        result.update(evaluator.result())
    return result


# Eval sums reported as totals rather than divided by the example count.
COUNTED_METRICS = ("nonfinite",)


def collect_outputs(program: Program, state: TrainState) -> dict[str, np.ndarray]:
    """Every eval example's per-example outputs (the task's output_fn), in dataset order."""
    if program.task.output_fn is None:
        raise ValueError("the task has no output_fn: nothing per example to collect")
    return concatenate_outputs([outputs for _, outputs in _eval_outputs(program, state)])


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    fetched = jax.device_get(history)
    return {key: float(np.mean([m[key] for m in fetched])) for key in fetched[0]}


_NONFINITE_HINTS = {
    "loss": "the parameters it started from were finite, so look at this step's batch (NaN or "
            "inf inputs) or lower learning_rate",
    "param_norm": "the loss was finite but the update was not (the gradients overflowed): "
                  "lower learning_rate or set grad_clip_norm",
}


def _check_finite(history: list[dict[str, Any]], first_step: int, last_good: int | None,
                  unverified: int | None, ckpt_dir: str) -> int | None:
    """Raise at the first non-finite loss or parameter norm; return the updated last good step.

    The loss of step s is computed from the parameters saved at step s - 1, so a saved step
    (`unverified`) becomes the last good checkpoint once the loss of the step after it is finite.
    """
    for offset, metrics in enumerate(jax.device_get(history)):
        step = first_step + offset + 1
        for key in ("loss", "param_norm"):
            value = float(metrics.get(key, 0.0))
            if not np.isfinite(value):
                good = "none" if last_good is None else f"step {last_good}"
                note = (f"; step {unverified} was saved but the loss after it is {value}"
                        if unverified is not None and unverified != last_good
                        and step == unverified + 1 and key == "loss" else "")
                raise FloatingPointError(
                    f"{key} became {value} at step {step}; last good checkpoint: {good} in "
                    f"{ckpt_dir} (finite parameters and a finite loss on the next step){note}. "
                    f"{_NONFINITE_HINTS[key]}"
                )
            if key == "loss" and unverified is not None and step == unverified + 1:
                last_good = unverified
    return last_good


@dataclasses.dataclass
class _RunIO:
    """Where a run writes: checkpoints, metrics, console progress."""

    checkpointer: Checkpointer
    writer: MetricWriter
    progress: Progress
    ckpt_dir: str


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, task: Task | None = None
) -> TrainResult:
    """Train `task` (default: config.model on config.dataset) and evaluate; resumes from workdir."""
    check_keys(config)
    validate_config(config)  # before any file is written
    with workdir_lib.writer_lock(workdir):  # one training per workdir, held by process 0
        return _train_and_evaluate(config, workdir, task)


def _train_and_evaluate(config, workdir, task) -> TrainResult:
    task = task or classification_task(config)
    program = build_program(config, task)
    if config.batch_size > task.dataset.num_train:
        raise ValueError(f"batch_size={config.batch_size} exceeds the {task.dataset.num_train} "
                         f"training examples of {config.dataset!r}; use a smaller batch_size")
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    checkpointer = Checkpointer(ckpt_dir, config.keep_checkpoints, config.async_checkpoints,
                                fingerprint=workdir_lib.run_fingerprint(program))
    start_step, state = checkpointer.restore_latest(program.abstract_state)
    if state is None:
        start_step = 0
        state = program.init_state()
    else:
        if is_main and config.progress:
            print(f"resuming from step {start_step} in {ckpt_dir}", flush=True)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    io = _RunIO(checkpointer=checkpointer,
                writer=MetricWriter(workdir, enabled=is_main, tensorboard=config.tensorboard),
                progress=Progress(program.total_steps, start_step,
                                  enabled=is_main and config.progress,
                                  label=config.get("progress_label") or ""),
                ckpt_dir=ckpt_dir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        try:
            state = _run(program, state, start_step, io)
            final = evaluate(program, state)
            io.writer.write(program.total_steps, "eval", final)
        finally:
            checkpointer.close()
            io.writer.close()
    if is_main:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump({"step": program.total_steps, **final}, f, indent=2)
        if config.progress:
            print(f"final eval at step {program.total_steps}: " +
                  "  ".join(f"{k} {v:.4f}" for k, v in final.items()), flush=True)
    return TrainResult(state, final, program.total_steps - start_step)


def restore_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, task: Task | None = None
) -> tuple[Program, int, TrainState]:
    """(program, step, state) of the latest readable checkpoint in workdir/checkpoints."""
    check_keys(config)
    validate_config(config)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not saved_steps(ckpt_dir):  # checked before Orbax creates folders or threads
        raise FileNotFoundError(
            f"no checkpoint in {ckpt_dir}: train first (python -m experiments.train "
            f"--workdir={workdir} ...) or pass the workdir of a finished run")
    task = task or classification_task(config)
    program = build_program(config, task)
    checkpointer = Checkpointer(ckpt_dir, config.keep_checkpoints, async_save=False,
                                read_only=True, fingerprint=workdir_lib.run_fingerprint(program))
    try:
        step, state = checkpointer.restore_latest(program.abstract_state)
    finally:
        checkpointer.close()
    if state is None:
        raise FileNotFoundError(f"no readable checkpoint in {ckpt_dir}")
    return program, step, state


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, task: Task | None = None
) -> tuple[int, dict[str, float]]:
    """(step, eval metrics) of the latest readable checkpoint in workdir/checkpoints."""
    program, step, state = restore_checkpoint(config, workdir, task)
    return step, evaluate(program, state)


def _run(program: Program, state: TrainState, start_step: int, io: _RunIO) -> TrainState:
    """The step loop: train, log, evaluate and checkpoint until program.total_steps."""
    config = program.config
    batches = data_base.prefetch(program.task.dataset.train_batches(
        config.batch_size, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count()), size=4)
    try:
        return _steps(program, state, start_step, batches, io)
    finally:
        batches.close()


def _steps(program: Program, state: TrainState, start_step: int, batches, io: _RunIO
           ) -> TrainState:
    config, total_steps = program.config, program.total_steps
    history: list[dict[str, Any]] = []
    last_good, unverified = None, io.checkpointer.latest_step()
    wait_time, window_start, window_first = 0.0, time.perf_counter(), start_step
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        batch = next(batches)
        wait_time += time.perf_counter() - t0
        state, metrics = program.train_step(state, program.to_global(batch))
        history.append(metrics)
        done = step + 1
        is_last = done == total_steps
        if done % config.log_every_steps == 0 or is_last:
            last_good = _check_finite(history, done - len(history), last_good, unverified,
                                      io.ckpt_dir)
            summary = _mean_metrics(history)
            elapsed = time.perf_counter() - window_start
            summary["images_per_sec"] = (done - window_first) * config.batch_size / elapsed
            summary["data_wait_fraction"] = wait_time / elapsed
            io.writer.write(done, "train", summary)
            io.progress.show(done, config.batch_size, {
                k: summary[k] for k in ("loss", "accuracy", "data_wait_fraction") if k in summary})
            history, wait_time = [], 0.0
            window_start, window_first = time.perf_counter(), done
        if config.eval_every_steps and done % config.eval_every_steps == 0 and not is_last:
            io.writer.write(done, "eval", evaluate(program, state))
        if done % config.checkpoint_every_steps == 0 or is_last:
            last_good = _check_finite(history, done - len(history), last_good, unverified,
                                      io.ckpt_dir)
            io.checkpointer.save(done, state)
            unverified = done
    return state
