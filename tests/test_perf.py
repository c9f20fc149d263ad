"""No recompilation: the jitted train step traces once, and so does eval over a ragged set."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest

from jaxcnn import data as data_lib
from jaxcnn import train
from jaxcnn.train import sharding

BATCH, EVAL_BATCH, NUM_EVAL = 8, 4, 10  # eval batches of 4, 4 and a padded, masked 2


def _dataset(num_train: int = 32) -> data_lib.ArrayDataset:
    rng = np.random.default_rng(0)

    def images(n):
        return rng.random((n, 32, 32, 1), np.float32)

    return data_lib.ArrayDataset(
        "tiny", images(num_train), rng.integers(0, 10, num_train).astype(np.int32),
        images(NUM_EVAL), rng.integers(0, 10, NUM_EVAL).astype(np.int32), num_classes=10)


def _config(**overrides):
    config = train.default_config()
    settings = {"model": "lenet5", "batch_size": BATCH, "eval_batch_size": EVAL_BATCH,
                "train_steps": 4, "optimizer": "momentum", "schedule": "cosine",
                "log_every_steps": 2, "checkpoint_every_steps": 100, "progress": False,
                "tensorboard": False, "async_checkpoints": False}
    config.update({**settings, **overrides})
    return config


def _counted(fn, counts: dict[str, int], key: str):
    """fn, counting how often JAX traces it (the body runs once per trace)."""
    def wrapper(*args):
        counts[key] += 1
        return fn(*args)

    return wrapper


@pytest.fixture(scope="module")
def steps():
    """The project's train and eval steps, jit-compiled as the loop does, with trace counters."""
    config, dataset = _config(), _dataset()
    task = train.classification_task(config, dataset)
    schedule = train.make_schedule(config, dataset.steps_per_epoch(BATCH), config.train_steps)
    tx = train.make_optimizer(config, schedule)
    train_step, eval_step = train.make_steps(task, tx, schedule, lambda x: x)
    mesh = sharding.make_mesh()
    replicated, batched = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    counts = {"train": 0, "eval": 0}
    jit_train = jax.jit(_counted(train_step, counts, "train"), donate_argnums=0,
                        in_shardings=(replicated, batched), out_shardings=(replicated, replicated))
    jit_eval = jax.jit(_counted(eval_step, counts, "eval"), in_shardings=(replicated, batched),
                       out_shardings=replicated)
    init = jax.jit(train.init_state(task, tx, 0), out_shardings=replicated)
    return dataset, mesh, lambda: init(jax.random.key(0)), jit_train, jit_eval, counts


def test_train_step_traces_once_over_several_steps(steps):
    dataset, mesh, new_state, jit_train, _, counts = steps
    state = new_state()  # each test its own: the train step donates it
    batches = dataset.train_batches(BATCH, seed=0)
    for _ in range(5):  # crosses an epoch boundary (4 steps per epoch)
        state, metrics = jit_train(state, sharding.to_global(next(batches), mesh))
    jax.block_until_ready(metrics)
    assert counts["train"] == 1
    assert jit_train._cache_size() == 1


def test_eval_step_traces_once_with_a_ragged_last_batch(steps):
    dataset, mesh, new_state, _, jit_eval, counts = steps
    masks = [b["mask"] for b in dataset.eval_batches(EVAL_BATCH)]
    assert [m.sum() for m in masks] == [4, 4, 2] and all(len(m) == EVAL_BATCH for m in masks)
    result = train.evaluate(jit_eval, new_state(), dataset, EVAL_BATCH, mesh)
    assert result["count"] == NUM_EVAL
    assert counts["eval"] == 1
    assert jit_eval._cache_size() == 1


class _CompileLog(logging.Handler):
    """Collects the function names of JAX's 'Compiling jit(<name>) ...' log lines."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split()[1].removeprefix("jit(").removesuffix(")"))


def test_train_and_evaluate_compiles_each_step_once(tmp_path):
    """The real loop: 6 steps with evaluation every 2 over the ragged eval set."""
    config = _config(train_steps=6, eval_every_steps=2)
    task = train.classification_task(config, _dataset())
    log, logger = _CompileLog(), logging.getLogger("jax")
    logger.addHandler(log)
    try:
        with jax.log_compiles(True):
            result = train.train_and_evaluate(config, str(tmp_path), task=task)
    finally:
        logger.removeHandler(log)
    assert result.steps_run == 6 and result.metrics["count"] == NUM_EVAL
    assert log.names.count("train_step") == 1, log.names
    assert log.names.count("eval_step") == 1, log.names
