"""The program builder: (config, task) -> mesh, schedule, optimiser, state init, compiled steps.

The loop, the tables, the benchmarks and the tests all build their steps here, so there is one
definition of what a train step and an eval step are. It also makes the one platform decision
(`platform_conv_impl`: which convolution kernels the mesh's devices get) before a task is built
from the config (`build_program(config, build_task)`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from jaxcnn import kernels
from jaxcnn.data import base as data_base
from jaxcnn.train import sharding
from jaxcnn.train.config import check_keys, to_steps
from jaxcnn.train.optim import make_optimizer, make_schedule
from jaxcnn.train.state import TrainState
from jaxcnn.train.task import Task, check_task_keys

TaskBuilder = Callable[[ml_collections.ConfigDict], Task]

# Stream of the per-step key used for device-side augmentation (dropout uses the step key).
_AUGMENT_STREAM = 1


def _variables(params, batch_stats) -> dict[str, Any]:
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def make_steps(
    task: Task, tx: optax.GradientTransformation, schedule: optax.Schedule,
    normalize: Callable[[jax.Array], jax.Array],
) -> tuple[Callable, Callable]:
    """The pure train step (state, batch) -> (state, metrics) and eval step (state, batch) ->
    (masked sums, per-example outputs); not yet jit-compiled.

    Both also take `resident`: the dataset's `device_arrays` (placed on the devices once by
    build_program), merged into the batch before `device_transform`, so device-resident data
    enters the compiled steps as an argument rather than as a constant embedded in them.
    """
    model = task.model
    transform = getattr(task.dataset, "device_transform", None)

    def with_resident(batch, resident):
        return {**batch, **resident} if resident else batch
    eval_apply = task.eval_apply or (lambda m, variables, x: m.apply(variables, x, train=False))

    def train_step(state: TrainState, batch, resident=None):
        step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        if transform is not None:
            batch = transform(with_resident(batch, resident),
                              jax.random.fold_in(step_rng, _AUGMENT_STREAM), True)

        def loss_of(params):
            outputs, updates = model.apply(
                _variables(params, state.batch_stats), normalize(batch["image"]), train=True,
                rngs={"dropout": step_rng}, mutable=["batch_stats"],
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

    def eval_step(state: TrainState, batch, resident=None):
        if transform is not None:
            batch = transform(with_resident(batch, resident), None, False)
        outputs = eval_apply(model, _variables(state.params, state.batch_stats),
                             normalize(batch["image"]))
        sums = task.eval_fn(outputs, batch) if task.eval_fn else {}
        per_example = {}
        if task.output_fn is not None:
            extra = {key: batch[key] for key in (data_base.MASK, data_base.INDEX) if key in batch}
            per_example = {**task.output_fn(outputs, batch), **extra}
        return sums, per_example

    return train_step, eval_step


def init_state(task: Task, tx: optax.GradientTransformation, seed: int) -> Callable:
    """A function rng -> TrainState (to be jit-compiled with replicated out_shardings)."""
    del seed  # the rng argument carries it
    image_shape = tuple(task.dataset.image_shape)

    def init(rng):
        params_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
        variables = task.model.init({"params": params_rng, "dropout": dropout_rng},
                                    jnp.zeros((1, *image_shape), jnp.float32), train=False)
        if task.init_variables is not None:
            variables = task.init_variables(dict(variables))
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params), rng=jax.random.key_data(state_rng))

    return init


@dataclasses.dataclass(frozen=True)
class Program:
    """Everything derived from (config, task) before the first step."""

    config: ml_collections.ConfigDict
    task: Task
    mesh: Mesh
    steps_per_epoch: int
    total_steps: int
    eval_batch: int  # global eval batch, a multiple of the device count
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    init_fn: Callable  # rng -> TrainState, pure
    rng: jax.Array
    abstract_state: Any  # ShapeDtypeStructs with replicated shardings
    train_fn: Callable  # pure train step
    eval_fn: Callable  # pure eval step
    train_step: Callable  # jit-compiled, state donated
    eval_step: Callable  # jit-compiled; sums and outputs replicated (gathered on device)
    normalize: Callable  # images in [0, 1] -> the model's input (config.normalize)

    @property
    def replicated(self) -> NamedSharding:
        return sharding.replicated(self.mesh)

    @property
    def batch_sharding(self) -> NamedSharding:
        return sharding.batch_sharded(self.mesh)

    def init_state(self) -> TrainState:
        """A fresh state from config.seed, replicated over the mesh."""
        return jax.jit(self.init_fn, out_shardings=self.replicated)(self.rng)

    def to_global(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's batch -> global arrays sharded along the batch axis."""
        return sharding.to_global(batch, self.mesh)


def platform_conv_impl(requested: str, mesh: Mesh | None = None) -> str:
    """The one platform decision: config.conv_impl ("auto" or a jaxcnn.kernels name) -> the
    kernels for the platform of `mesh`'s devices (default: this process's devices)."""
    device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
    return kernels.choose(requested, device.platform)


def resolve_platform(
    config: ml_collections.ConfigDict, mesh: Mesh | None = None
) -> ml_collections.ConfigDict:
    """A copy of `config` whose conv_impl is concrete for the mesh (what a task is built from)."""
    resolved = config.copy_and_resolve_references()
    resolved.conv_impl = platform_conv_impl(config.conv_impl, mesh)
    return resolved


def _normalizer(config: ml_collections.ConfigDict, dataset: Any) -> Callable:
    if not config.normalize:
        return data_base.normalizer(None, None)
    return data_base.normalizer(dataset.mean, dataset.std)


def build_program(
    config: ml_collections.ConfigDict, task: Task | TaskBuilder, *,
    total_steps: int | None = None, steps_per_epoch: int | None = None,
) -> Program:
    """Compile (config, task) into a Program; `total_steps`/`steps_per_epoch` override the
    values derived from the config and the dataset (benchmarks, fixed-length studies).

    `task` is a built Task, or a function config -> Task (e.g. `jaxcnn.tasks.build`) called with
    the config resolved for the mesh's platform (`resolve_platform`); Program.config is then
    that config, including whatever the builder recorded in it (e.g. a detector's anchors).
    """
    check_keys(config)
    mesh = sharding.make_mesh()
    if not isinstance(task, Task):
        if not callable(task):
            raise TypeError(f"task must be a train.Task or a function config -> Task (e.g. "
                            f"jaxcnn.tasks.build); received {type(task).__name__}")
        config = resolve_platform(config, mesh)
        task = task(config)
    check_task_keys(config.get("task") or {}, task.task_defaults)
    dataset = task.dataset
    sharding.check_batch_size(config.batch_size, mesh)
    # Eval pads its batches anyway, so round its size up to a multiple of the devices.
    eval_batch = -(-config.eval_batch_size // mesh.devices.size) * mesh.devices.size
    if steps_per_epoch is None:
        steps_per_epoch = dataset.steps_per_epoch(config.batch_size)
    if total_steps is None:
        total_steps = to_steps(config, "train", steps_per_epoch)
    if total_steps < 1:
        raise ValueError(f"the run has {total_steps} steps; set train_steps or train_epochs > 0")
    schedule = make_schedule(config, steps_per_epoch, total_steps)
    tx = make_optimizer(config, schedule)
    normalize = _normalizer(config, dataset)
    train_fn, eval_fn = make_steps(task, tx, schedule, normalize)
    replicated, batched = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    init = init_state(task, tx, config.seed)
    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
        jax.eval_shape(init, rng))
    train_step = jax.jit(train_fn, in_shardings=(replicated, batched),
                         out_shardings=(replicated, replicated), donate_argnums=0)
    eval_step = jax.jit(eval_fn, in_shardings=(replicated, batched),
                        out_shardings=(replicated, replicated))
    arrays = getattr(dataset, "device_arrays", None)
    if arrays:
        # Placed once, replicated; every call passes the same buffers. Closed over instead,
        # they would be embedded in the program (CIFAR-10: 300 MB of HLO, seconds of compile).
        resident = jax.device_put(dict(arrays), replicated)
        jit_train = jax.jit(train_fn, in_shardings=(replicated, batched, replicated),
                            out_shardings=(replicated, replicated), donate_argnums=0)
        jit_eval = jax.jit(eval_fn, in_shardings=(replicated, batched, replicated),
                           out_shardings=(replicated, replicated))
        train_step = functools.partial(_call_with, jit_train, resident)
        eval_step = functools.partial(_call_with, jit_eval, resident)
    return Program(
        config=config, task=task, mesh=mesh, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, eval_batch=eval_batch, schedule=schedule, tx=tx,
        init_fn=init, rng=rng, abstract_state=abstract, train_fn=train_fn, eval_fn=eval_fn,
        train_step=train_step, eval_step=eval_step, normalize=normalize,
    )


def _call_with(jitted: Callable, resident: Any, state: TrainState, batch: Any) -> Any:
    """jitted(state, batch, resident): a step with the dataset's device arrays bound."""
    return jitted(state, batch, resident)
