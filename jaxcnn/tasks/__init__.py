"""The task registry: one module per trainable task, selected by config.task.name.

Each module `jaxcnn/tasks/<name>.py` declares NAME, DEFAULTS (its config.task keys), HELP (a
line per key) and `build(config) -> jaxcnn.train.Task`; the program builder resolves
config.conv_impl for the platform before `build` sees the config. Adding a task is adding a
module here and its name to TASKS (README "Add a task").

    train.train_and_evaluate(config, workdir, tasks.build)    # any task
    run = tasks.load_run(workdir)                               # a finished run, ready to use
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import jax
import ml_collections

from jaxcnn import train

TASKS = ("classification", "localization", "crop_classifier", "detector", "faces",
         "segmentation")
DEFAULT = "classification"


def list_tasks() -> list[str]:
    """The names config.task.name may take."""
    return list(TASKS)


def get(name: str) -> ModuleType:
    """The module of task `name` (imported on first use)."""
    if name not in TASKS:
        raise train.UsageError(f"config.task.name={name!r}: expected one of {', '.join(TASKS)}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
        raise train.UsageError(f"task {name!r} is registered but jaxcnn/tasks/{name}.py is "
                               f"not installed in this checkout") from None


def infer_name(config: ml_collections.ConfigDict) -> str:
    """config.task.name, or for a config written before the registry (no name): "faces" for a
    'faces:' dataset, "detector" for model "yolo", else "classification"."""
    name = (config.get("task") or {}).get("name")
    if name:
        return name
    if str(config.get("dataset", "")).startswith("faces:"):
        return "faces"
    return "detector" if config.get("model") == "yolo" else DEFAULT


def build(config: ml_collections.ConfigDict) -> train.Task:
    """The task config.task.name selects, built from `config` (conv_impl resolved first if it
    is still "auto"; pass `build` itself to train.build_program / train_and_evaluate)."""
    module = get(infer_name(config))
    if config.conv_impl == "auto":
        config = train.resolve_platform(config)
    return module.build(config)


def key_help(config: ml_collections.ConfigDict) -> dict[str, str]:
    """"task.KEY" -> meaning, for every key the selected task declares (and task.name)."""
    module = get(infer_name(config))
    return {"task.name": f"the task: one of {', '.join(TASKS)}",
            **{f"task.{key}": text for key, text in module.HELP.items()}}


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished run, restored: its config, task, program, step and state, and `predict`
    (jit-compiled: images (B, H, W, C) in [0, 1] -> model outputs, with the run's
    normalisation)."""

    config: ml_collections.ConfigDict
    task: train.Task
    program: train.Program
    step: int
    state: train.TrainState
    predict: Callable[[Any], Any]

    @property
    def variables(self) -> dict[str, Any]:
        """The model's variables (params and, where it has them, batch_stats)."""
        return _variables(self.state)


def _variables(state: train.TrainState) -> dict[str, Any]:
    return {"params": state.params,
            **({"batch_stats": state.batch_stats} if state.batch_stats else {})}


def load_run(workdir: str, overrides: str | Mapping[str, Any] | None = None, *,
             task: train.Task | train.TaskBuilder | None = None,
             config: ml_collections.ConfigDict | None = None) -> Run:
    """The run in `workdir`: its config.json (with `overrides`: 'key=value,...' or a mapping),
    the latest readable checkpoint, and a predict function. `config` replaces config.json
    (e.g. another data_dir); `task` replaces the registry's builder (e.g. the same model
    evaluated differently, as layer inspection does)."""
    config = config or train.load_run_config(workdir)
    if isinstance(overrides, str):
        config = train.override(config, overrides)
    elif overrides:
        config = train.override(config, ",".join(f"{k}={v!r}" for k, v in overrides.items()))
    program, step, state = train.restore_checkpoint(config, workdir, task or build)
    model, normalize = program.task.model, program.normalize
    # The variables are an argument, not constants folded into the compiled program.
    apply = jax.jit(lambda variables, images: model.apply(variables, normalize(images),
                                                          train=False))
    predict = functools.partial(apply, _variables(state))
    return Run(program.config, program.task, program, step, state, predict)


__all__ = ["DEFAULT", "TASKS", "Run", "build", "get", "infer_name", "key_help", "list_tasks",
           "load_run"]
