"""No recompilation: the jitted train step traces once, and so does eval over a ragged set."""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np
import pytest

from jaxcnn import data as data_lib
from jaxcnn import train
from jaxcnn.tasks import classification

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
    """The project's program, its pure steps re-jitted with trace counters and its shardings."""
    config, dataset = _config(normalize=False), _dataset()
    program = train.build_program(config, classification.make_task(train.resolve_platform(config),
                                                                   dataset))
    replicated, batched = program.replicated, program.batch_sharding
    counts = {"train": 0, "eval": 0}
    jit_train = jax.jit(_counted(program.train_fn, counts, "train"), donate_argnums=0,
                        in_shardings=(replicated, batched), out_shardings=(replicated, replicated))
    jit_eval = jax.jit(_counted(program.eval_fn, counts, "eval"),
                       in_shardings=(replicated, batched), out_shardings=(replicated, replicated))
    counted = dataclasses.replace(program, train_step=jit_train, eval_step=jit_eval)
    return counted, counts


def test_train_step_traces_once_over_several_steps(steps):
    program, counts = steps
    state = program.init_state()  # each test its own: the train step donates it
    batches = program.task.dataset.train_batches(BATCH, seed=0)
    for _ in range(5):  # crosses an epoch boundary (4 steps per epoch)
        state, metrics = program.train_step(state, program.to_global(next(batches)))
    jax.block_until_ready(metrics)
    assert counts["train"] == 1
    assert program.train_step._cache_size() == 1


def test_eval_step_traces_once_with_a_ragged_last_batch(steps):
    program, counts = steps
    masks = [b["mask"] for b in program.task.dataset.eval_batches(EVAL_BATCH)]
    assert [m.sum() for m in masks] == [4, 4, 2] and all(len(m) == EVAL_BATCH for m in masks)
    result = train.evaluate(program, program.init_state())
    assert result["count"] == NUM_EVAL
    assert counts["eval"] == 1
    assert program.eval_step._cache_size() == 1


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
    task = classification.make_task(train.resolve_platform(config), _dataset())
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
