"""The training machinery shared by every task."""

from jaxcnn.train.checkpoint import Checkpointer
from jaxcnn.train.config import (
    check_keys,
    default_config,
    load_run_config,
    override,
    to_steps,
    validate_config,
)
from jaxcnn.train.loop import (
    Task,
    TrainResult,
    classification_task,
    evaluate,
    evaluate_checkpoint,
    init_state,
    make_steps,
    train_and_evaluate,
)
from jaxcnn.train.optim import make_optimizer, make_schedule
from jaxcnn.train.sharding import initialize_distributed, make_mesh, to_global
from jaxcnn.train.state import TrainState

__all__ = [
    "Checkpointer", "Task", "TrainResult", "TrainState", "check_keys", "classification_task",
    "default_config", "evaluate", "evaluate_checkpoint", "init_state", "initialize_distributed",
    "load_run_config",
    "make_mesh", "make_optimizer", "make_schedule", "make_steps", "override", "to_global",
    "to_steps", "train_and_evaluate", "validate_config",
]
