"""One training loop for every task: `train_and_evaluate(config, workdir, task)`.

`task` is a built Task or a function config -> Task (`jaxcnn.tasks.build` selects the task
from config.task.name); the trainer itself knows no task.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcnn.data import base as data_base
from jaxcnn.errors import RunError
from jaxcnn.train import lock as lock_lib
from jaxcnn.train.checkpoint import Checkpointer, saved_steps
from jaxcnn.train.config import check_keys, validate_config
from jaxcnn.train.faults import fault_point
from jaxcnn.train.fingerprint import DATA_KEYS, run_fingerprint
from jaxcnn.train.metrics import MetricWriter, Progress
from jaxcnn.train.preemption import Preempted, SignalFlag, catch_signals
from jaxcnn.train.program import Program, TaskBuilder, build_program
from jaxcnn.train.state import TrainState
from jaxcnn.train.task import Evaluator, Task, concatenate_outputs


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


def eval_sums(program: Program, state: TrainState) -> dict[str, np.ndarray]:
    """The task's eval sums totalled over the eval split (scalars or arrays, float64)."""
    totals: dict[str, np.ndarray] = {}
    for sums, _ in _eval_outputs(program, state):
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64)
    return totals


def metrics_from_sums(task: Task, totals: dict[str, np.ndarray]) -> dict[str, float]:
    """Scalar sums divided by the example count (COUNTED_METRICS stay totals), plus the
    task's eval_metrics of all totals; an array sum needs eval_metrics to become numbers."""
    arrays = sorted(key for key, value in totals.items() if np.ndim(value))
    if arrays and task.eval_metrics is None:
        raise ValueError(f"eval sums {arrays} are arrays: the task needs eval_metrics to turn "
                         f"them into numbers")
    if not totals:
        return {}
    count = max(float(totals.get("count", 0.0)), 1.0)
    result = {key: float(value) if key in COUNTED_METRICS else float(value) / count
              for key, value in totals.items() if key != "count" and key not in arrays}
    result["count"] = count
    if task.eval_metrics is not None:
        result.update({key: float(value) for key, value in task.eval_metrics(totals).items()})
    return result


def evaluate(program: Program, state: TrainState) -> dict[str, float]:
    """The task's metrics over the whole eval split: from its sums, then its evaluator's."""
    totals: dict[str, np.ndarray] = {}
    evaluator = program.task.make_evaluator() if program.task.output_fn else None
    for sums, outputs in _eval_outputs(program, state):
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64)
        if evaluator is not None:
            evaluator.update(outputs)
    result = metrics_from_sums(program.task, totals)
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
    signals: SignalFlag = dataclasses.field(default_factory=SignalFlag)
    losses: list[float] = dataclasses.field(default_factory=list)  # each logged train loss


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, task: Task | TaskBuilder
) -> TrainResult:
    """Train `task` (a Task, or config -> Task such as jaxcnn.tasks.build) and evaluate;
    resumes from workdir."""
    check_keys(config)
    validate_config(config)  # before any file is written
    try:
        # One training per workdir (held by process 0); SIGTERM/SIGINT stop at a step boundary.
        with catch_signals() as signals, lock_lib.writer_lock(workdir):
            return _train_and_evaluate(config, workdir, task, signals)
    except OSError as error:  # a full or read-only disk under the metrics, config, ...
        if not lock_lib.is_disk_error(error):
            raise
        raise lock_lib.disk_error(error, error.filename or workdir, "write the run") from None


def _train_and_evaluate(config, workdir, task, signals: SignalFlag) -> TrainResult:
    program = build_program(config, task)
    task = program.task
    if config.batch_size > task.dataset.num_train:
        raise ValueError(f"batch_size={config.batch_size} exceeds the {task.dataset.num_train} "
                         f"training examples of {config.dataset!r}; use a smaller batch_size")
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    checkpointer = Checkpointer(ckpt_dir, config.keep_checkpoints, config.async_checkpoints,
                                fingerprint=run_fingerprint(program))
    start_step, state = checkpointer.restore_latest(program.abstract_state)
    data_state = None
    if state is None:
        start_step = 0
        state = program.init_state()
    else:
        data_state = checkpointer.data_state(start_step)
        if is_main and config.progress:
            print(f"resuming from step {start_step} in {ckpt_dir}", flush=True)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(_saved_config(program, config).to_json_best_effort(indent=2))

    io = _RunIO(checkpointer=checkpointer,
                writer=MetricWriter(workdir, enabled=is_main, tensorboard=config.tensorboard),
                progress=Progress(program.total_steps, start_step,
                                  enabled=is_main and config.progress,
                                  label=config.get("progress_label") or ""),
                ckpt_dir=ckpt_dir, signals=signals)
    if start_step > program.total_steps and is_main:
        logging.warning("the checkpoint at step %d in %s is past this config's %d steps: "
                        "evaluating it as it is", start_step, ckpt_dir, program.total_steps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        try:
            state = _run(program, state, start_step, io, data_state)
            step = int(jax.device_get(state.step))  # the state evaluated, not train_steps
            final = evaluate(program, state)
            io.writer.write(step, "eval", final)
        finally:
            checkpointer.close()
            io.writer.close()
    check_eval_finite(program, state, final, step)  # before final_metrics.json is replaced
    steps_run = max(program.total_steps - start_step, 0)
    if is_main:
        warning = chance_warning(final, int(program.task.dataset.num_classes), io.losses,
                                 steps_run)
        if warning:
            logging.warning("%s", warning)
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump({"step": step, **final}, f, indent=2)
        if config.progress:
            print(f"final eval at step {step}: " +
                  "  ".join(f"{k} {v:.4f}" for k, v in final.items()), flush=True)
    return TrainResult(state, final, steps_run)


class NonFiniteEvalError(RunError):
    """Evaluation produced NaN or inf; the message says whether inputs or parameters are why."""


def _nonfinite_inputs(program: Program) -> tuple[int, int]:
    """(eval images holding a NaN or inf pixel, eval images) on this process's slice."""
    bad = total = 0
    for batch in program.task.dataset.eval_batches(
            program.eval_batch, process_index=jax.process_index(),
            process_count=jax.process_count()):
        if "image" not in batch:
            continue
        images = np.asarray(batch["image"], np.float32)
        keep = np.asarray(batch.get(data_base.MASK, np.ones(len(images)))) > 0
        finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        bad += int(np.sum(keep & ~finite))
        total += int(np.sum(keep))
    return bad, total


def check_eval_finite(program: Program, state: TrainState, metrics: dict[str, float],
                      step: int) -> None:
    """Raise NonFiniteEvalError if evaluation gave a NaN/inf loss or outputs (`nonfinite`),
    naming the cause: the inputs, the parameters (a diverged checkpoint), or neither (an
    overflow in the model). Other metrics may be NaN by definition (an AP without positives)."""
    bad = [key for key in ("loss",) if key in metrics and not math.isfinite(metrics[key])]
    if not bad and not metrics.get("nonfinite"):
        return
    what = (f"evaluation at step {step} gave non-finite {', '.join(bad) or 'outputs'}"
            f" ({int(metrics.get('nonfinite', 0))} examples with NaN/inf outputs)")
    images, total = _nonfinite_inputs(program)
    params_finite = all(bool(np.isfinite(np.asarray(leaf)).all())
                        for leaf in jax.tree.leaves(jax.device_get(state.params)))
    dataset = program.config.get("dataset")
    if images:
        cause = (f"{images} of the {total} evaluation images of {dataset!r} contain NaN or "
                 "inf pixels: the inputs are at fault, not the checkpoint; fix or remove them")
    elif not params_finite:
        cause = ("the parameters are NaN or inf: the checkpoint has diverged; resume from an "
                 "earlier one with a lower learning_rate or grad_clip_norm")
    else:
        cause = ("the inputs and parameters are finite, so the model overflows: try "
                 "dtype='float32' or a lower learning_rate")
    raise NonFiniteEvalError(f"{what}: {cause}")


def chance_warning(metrics: dict[str, float], num_classes: int, losses: list[float],
                   steps_run: int) -> str | None:
    """A warning when a run that trained ends at chance: eval top-1 (or accuracy) within
    max(0.02, 0.1/K) of 1/K and a last training loss no lower than ln K, the loss of a
    uniform guess. None for tasks without such a metric, or when no step ran."""
    key = next((k for k in ("top1", "accuracy") if k in metrics), None)
    if key is None or num_classes < 2 or steps_run == 0 or not losses:
        return None
    chance, uniform = 1.0 / num_classes, math.log(num_classes)
    if metrics[key] > chance + max(0.02, 0.1 * chance) or losses[-1] < uniform:
        return None
    return (f"the run ended at chance: eval {key} {metrics[key]:.4f} vs 1/{num_classes} = "
            f"{chance:.4f}, last training loss {losses[-1]:.4g} vs ln {num_classes} = "
            f"{uniform:.4g} for a uniform guess (first logged {losses[0]:.4g}); it has probably "
            "diverged: lower learning_rate or set grad_clip_norm")


def _saved_config(program: Program, config: ml_collections.ConfigDict
                  ) -> ml_collections.ConfigDict:
    """What config.json records: the config the task was built from (with what its builder
    recorded, e.g. anchors), but the conv_impl asked for, so the run can move platform."""
    saved = program.config.copy_and_resolve_references()
    saved.conv_impl = config.conv_impl
    return saved


def restore_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, task: Task | TaskBuilder,
    other_data: bool = False,
) -> tuple[Program, int, TrainState]:
    """(program, step, state) of the latest readable checkpoint in workdir/checkpoints.

    `other_data`: config.dataset was replaced on purpose (evaluation on other data), so the
    run's fingerprint is compared without the keys that only name the data.
    """
    check_keys(config)
    validate_config(config)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not saved_steps(ckpt_dir):  # checked before Orbax creates folders or threads
        raise FileNotFoundError(
            f"no checkpoint in {ckpt_dir}: train first (python -m experiments.train "
            f"--workdir={workdir} ...) or pass the workdir of a finished run")
    program = build_program(config, task)
    checkpointer = Checkpointer(ckpt_dir, config.keep_checkpoints, async_save=False,
                                read_only=True, fingerprint=run_fingerprint(program),
                                ignore_keys=DATA_KEYS if other_data else ())
    try:
        step, state = checkpointer.restore_latest(program.abstract_state)
    finally:
        checkpointer.close()
    if state is None:
        raise FileNotFoundError(f"no readable checkpoint in {ckpt_dir}")
    return program, step, state


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, task: Task | TaskBuilder,
    other_data: bool = False,
) -> tuple[int, dict[str, float]]:
    """(step, eval metrics) of the latest readable checkpoint in workdir/checkpoints
    (`other_data`: see restore_checkpoint)."""
    program, step, state = restore_checkpoint(config, workdir, task, other_data)
    metrics = evaluate(program, state)
    check_eval_finite(program, state, metrics, step)
    return step, metrics


def _run(program: Program, state: TrainState, start_step: int, io: _RunIO,
         data_state: dict[str, Any] | None = None) -> TrainState:
    """The step loop: train, log, evaluate and checkpoint until program.total_steps.

    The train batches come from the dataset's iterator (Grain, config.data_workers host
    processes); where it has a state, the checkpoint saves it and a resumed run restores it.
    """
    config = program.config
    batches = program.task.dataset.train_batches(
        config.batch_size, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count(),
        workers=config.data_workers)
    if data_state is not None and hasattr(batches, "set_state"):
        if data_state.get("next_step", start_step) != start_step:
            raise RunError(f"the checkpoint of step {start_step} in {io.ckpt_dir} holds a data "
                           f"iterator state {data_state} of another step; it is damaged: move "
                           "that step away to resume from the one before")
        batches.set_state(data_state)
    try:
        return _steps(program, state, start_step, batches, io)
    finally:
        batches.close()


def _iterator_state(batches) -> dict[str, Any] | None:
    """The train iterator's Grain state (None for a plain iterator without one)."""
    get_state = getattr(batches, "get_state", None)
    return get_state() if get_state else None


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
            if "loss" in summary:
                io.losses.append(summary["loss"])
            io.progress.show(done, config.batch_size, {
                k: summary[k] for k in ("loss", "accuracy", "data_wait_fraction") if k in summary})
            history, wait_time = [], 0.0
            window_start, window_first = time.perf_counter(), done
        fault_point("step", done)
        if config.eval_every_steps and done % config.eval_every_steps == 0 and not is_last:
            io.writer.write(done, "eval", evaluate(program, state))
        if done % config.checkpoint_every_steps == 0 or is_last:
            last_good = _check_finite(history, done - len(history), last_good, unverified,
                                      io.ckpt_dir)
            io.checkpointer.save(done, state, _iterator_state(batches))
            unverified = done
        signum = io.signals.stop_after(done, is_last)  # the same answer on every process
        if signum:
            if unverified != done:
                _check_finite(history, done - len(history), last_good, unverified, io.ckpt_dir)
                io.checkpointer.save(done, state, _iterator_state(batches))
            fault_point("preempt_save", done)
            io.checkpointer.wait()
            io.checkpointer.verify(done, program.abstract_state)
            raise Preempted(done, signum)
    return state
