"""One training loop for every task: `train_and_evaluate(config, workdir)`."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcnn import data as data_lib
from jaxcnn import losses, models
from jaxcnn.train import sharding
from jaxcnn.train import workdir as workdir_lib
from jaxcnn.train.checkpoint import Checkpointer
from jaxcnn.train.config import check_keys, to_steps
from jaxcnn.train.metrics import MetricWriter, Progress
from jaxcnn.train.optim import make_optimizer, make_schedule
from jaxcnn.train.state import TrainState

LossFn = Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]
EvalFn = Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Task:
    """What to train: a model, its data, a loss (scalar + metrics) and masked eval sums."""

    model: nn.Module
    dataset: Any
    loss_fn: LossFn
    eval_fn: EvalFn


@dataclasses.dataclass(frozen=True)
class TrainResult:
    state: TrainState
    metrics: dict[str, float]  # the final evaluation
    steps_run: int  # steps this call executed (0 when it resumed an already finished run)


def classification_task(config: ml_collections.ConfigDict, dataset: Any = None) -> Task:
    """The registry model named by config.model, trained with cross-entropy."""
    dataset = dataset or data_lib.get_dataset(
        config.dataset, data_dir=config.data_dir, image_size=config.image_size,
        augment=config.augment, download=config.download,
    )
    model = models.get_model(config.model, num_classes=dataset.num_classes,
                             dtype=jnp.dtype(config.dtype), **config.model_kwargs)
    smoothing = config.label_smoothing
    return Task(
        model=model,
        dataset=dataset,
        loss_fn=lambda out, batch: losses.classification_loss(out, batch["label"], smoothing),
        eval_fn=lambda out, batch: losses.classification_eval_sums(
            out, batch["label"], batch["mask"]),
    )


def _prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Produce host batches on a background thread so the step never waits on numpy.

    Closing the returned generator stops the thread and closes `iterator` (a tf.data
    iterator left open at interpreter exit can hang it).
    """
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put(item):
                    break
            else:
                put(done)
        except BaseException as error:  # surface pipeline errors in the training thread
            put(error)
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


def _normalizer(config, dataset) -> Callable[[jax.Array], jax.Array]:
    if not config.normalize:
        return lambda x: x
    mean = jnp.asarray(dataset.mean, jnp.float32)
    std = jnp.asarray(dataset.std, jnp.float32)
    return lambda x: (x - mean) / std


def make_steps(task: Task, tx: optax.GradientTransformation, schedule, normalize):
    """The pure train and eval step functions (not yet jit-compiled)."""
    model = task.model

    def variables(params, batch_stats):
        return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}

    def train_step(state: TrainState, batch):
        dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def loss_of(params):
            outputs, updates = model.apply(
                variables(params, state.batch_stats), normalize(batch["image"]), train=True,
                rngs={"dropout": dropout_rng}, mutable=["batch_stats"],
            )
            loss, metrics = task.loss_fn(outputs, batch)
            return loss, (metrics, updates.get("batch_stats", state.batch_stats))

        (_, (metrics, batch_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads),
                   "param_norm": optax.tree.norm(params),
                   "learning_rate": schedule(state.step)}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  batch_stats=batch_stats)
        return new_state, metrics

    def eval_step(state: TrainState, batch):
        outputs = model.apply(variables(state.params, state.batch_stats),
                              normalize(batch["image"]), train=False)
        return task.eval_fn(outputs, batch)

    return train_step, eval_step


def init_state(task: Task, tx: optax.GradientTransformation, seed: int) -> Callable:
    """A function rng -> TrainState (to be jit-compiled with replicated out_shardings)."""
    image_shape = tuple(task.dataset.image_shape)

    def init(rng):
        params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
        variables = task.model.init({"params": params_rng, "dropout": dropout_rng},
                                    jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params), rng=jax.random.key_data(state_rng))

    return init


def evaluate(eval_step, state, dataset, global_batch: int, mesh) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy over the whole eval split (padding masked out)."""
    totals: dict[str, float] = {}
    batches = dataset.eval_batches(global_batch, process_index=jax.process_index(),
                                   process_count=jax.process_count())
    for batch in batches:
        sums = jax.device_get(eval_step(state, sharding.to_global(batch, mesh)))
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    count = max(totals.pop("count", 0.0), 1.0)
    result = {key: value / count for key, value in totals.items()}
    result["count"] = count
    return result


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    fetched = jax.device_get(history)
    return {key: float(np.mean([m[key] for m in fetched])) for key in fetched[0]}


def _check_finite(history: list[dict[str, Any]], first_step: int, last_good: int | None,
                  ckpt_dir: str) -> None:
    losses_ = [float(m["loss"]) for m in jax.device_get(history)]
    for offset, value in enumerate(losses_):
        if not np.isfinite(value):
            raise FloatingPointError(
                f"loss became {value} at step {first_step + offset + 1}; last good checkpoint: "
                f"{'none' if last_good is None else f'step {last_good}'} in {ckpt_dir}"
            )


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """Everything derived from (config, task) before the first step."""

    mesh: Any
    total_steps: int
    eval_batch: int
    init: Callable
    rng: jax.Array
    abstract_state: Any  # ShapeDtypeStructs with replicated shardings
    train_step: Callable
    eval_step: Callable


def _compile(config: ml_collections.ConfigDict, task: Task) -> _Compiled:
    check_keys(config)
    dataset = task.dataset
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    # Eval pads its batches anyway, so round its size up to a multiple of the devices.
    eval_batch = -(-config.eval_batch_size // mesh.devices.size) * mesh.devices.size
    steps_per_epoch = dataset.steps_per_epoch(config.batch_size)
    total_steps = to_steps(config, "train", steps_per_epoch)
    if total_steps < 1:
        raise ValueError(f"the run has {total_steps} steps; set train_steps or train_epochs > 0")
    schedule = make_schedule(config, steps_per_epoch, total_steps)
    tx = make_optimizer(config, schedule)
    train_step, eval_step = make_steps(task, tx, schedule, _normalizer(config, dataset))
    replicated = sharding.replicated(mesh)
    batch_sharding = sharding.batch_sharded(mesh)
    init = init_state(task, tx, config.seed)
    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
        jax.eval_shape(init, rng))
    return _Compiled(
        mesh=mesh, total_steps=total_steps, eval_batch=eval_batch, init=init, rng=rng,
        abstract_state=abstract,
        train_step=jax.jit(train_step, in_shardings=(replicated, batch_sharding),
                           out_shardings=(replicated, replicated), donate_argnums=0),
        eval_step=jax.jit(eval_step, in_shardings=(replicated, batch_sharding),
                          out_shardings=replicated),
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, task: Task | None = None
) -> TrainResult:
    """Train `task` (default: config.model on config.dataset) and evaluate; resumes from workdir."""
    check_keys(config)
    with workdir_lib.writer_lock(workdir):  # one training per workdir, held by process 0
        return _train_and_evaluate(config, workdir, task)


def _train_and_evaluate(config, workdir, task) -> TrainResult:
    task = task or classification_task(config)
    run = _compile(config, task)
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    checkpointer = Checkpointer(ckpt_dir, config.keep_checkpoints, config.async_checkpoints,
                                fingerprint=workdir_lib.run_fingerprint(config, task.dataset,
                                                                        run.abstract_state))
    start_step, state = checkpointer.restore_latest(run.abstract_state)
    if state is None:
        start_step = 0
        state = jax.jit(run.init, out_shardings=sharding.replicated(run.mesh))(run.rng)
    else:
        if is_main and config.progress:
            print(f"resuming from step {start_step} in {ckpt_dir}", flush=True)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    writer = MetricWriter(workdir, enabled=is_main, tensorboard=config.tensorboard)
    progress = Progress(run.total_steps, start_step, enabled=is_main and config.progress)
    run_eval = functools.partial(evaluate, run.eval_step, dataset=task.dataset,
                                 global_batch=run.eval_batch, mesh=run.mesh)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        try:
            state = _run(config, state, start_step, run.total_steps, task.dataset, run.mesh,
                         run.train_step, run_eval, checkpointer, writer, progress, ckpt_dir)
            final = run_eval(state)
            writer.write(run.total_steps, "eval", final)
        finally:
            checkpointer.close()
            writer.close()
    if is_main:
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump({"step": run.total_steps, **final}, f, indent=2)
        if config.progress:
            print(f"final eval at step {run.total_steps}: " +
                  "  ".join(f"{k} {v:.4f}" for k, v in final.items()), flush=True)
    return TrainResult(state, final, run.total_steps - start_step)


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, task: Task | None = None
) -> tuple[int, dict[str, float]]:
    """(step, eval metrics) of the latest readable checkpoint in workdir/checkpoints."""
    task = task or classification_task(config)
    run = _compile(config, task)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    checkpointer = Checkpointer(ckpt_dir, config.keep_checkpoints, async_save=False,
                                read_only=True, fingerprint=workdir_lib.run_fingerprint(
                                    config, task.dataset, run.abstract_state))
    try:
        step, state = checkpointer.restore_latest(run.abstract_state)
    finally:
        checkpointer.close()
    if state is None:
        raise FileNotFoundError(f"no readable checkpoint in {ckpt_dir}")
    return step, evaluate(run.eval_step, state, task.dataset, run.eval_batch, run.mesh)


def _run(config, state, start_step, total_steps, dataset, mesh, jit_train, run_eval,
         checkpointer, writer, progress, ckpt_dir) -> TrainState:
    """The step loop: train, log, evaluate and checkpoint until total_steps."""
    # The thread prepares host batches only: a device transfer made there would queue behind
    # the running step and be counted as waiting for data.
    batches = _prefetch(dataset.train_batches(
        config.batch_size, seed=config.seed, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count()), size=4)
    try:
        return _steps(config, state, start_step, total_steps, batches, mesh, jit_train,
                      run_eval, checkpointer, writer, progress, ckpt_dir)
    finally:
        batches.close()


def _steps(config, state, start_step, total_steps, batches, mesh, jit_train, run_eval,
           checkpointer, writer, progress, ckpt_dir) -> TrainState:
    history: list[dict[str, Any]] = []
    last_good = checkpointer.latest_step()
    wait_time, window_start, window_first = 0.0, time.perf_counter(), start_step
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        batch = next(batches)
        wait_time += time.perf_counter() - t0
        state, metrics = jit_train(state, sharding.to_global(batch, mesh))
        history.append(metrics)
        done = step + 1
        is_last = done == total_steps
        if done % config.log_every_steps == 0 or is_last:
            _check_finite(history, done - len(history), last_good, ckpt_dir)
            summary = _mean_metrics(history)
            elapsed = time.perf_counter() - window_start
            summary["images_per_sec"] = (done - window_first) * config.batch_size / elapsed
            summary["data_wait_fraction"] = wait_time / elapsed
            writer.write(done, "train", summary)
            progress.show(done, config.batch_size, {
                k: summary[k] for k in ("loss", "accuracy", "data_wait_fraction") if k in summary})
            history, wait_time = [], 0.0
            window_start, window_first = time.perf_counter(), done
        if config.eval_every_steps and done % config.eval_every_steps == 0 and not is_last:
            writer.write(done, "eval", run_eval(state))
        if done % config.checkpoint_every_steps == 0 or is_last:
            _check_finite(history, done - len(history), last_good, ckpt_dir)
            checkpointer.save(done, state)
            last_good = done
    return state
