"""The training machinery shared by every task."""

from jaxcnn.train.checkpoint import Checkpointer, CorruptCheckpointError
from jaxcnn.train.config import (
    check_keys,
    default_config,
    load_run_config,
    override,
    to_steps,
    validate_config,
)
from jaxcnn.train.errors import RunError, UsageError
from jaxcnn.train.fingerprint import FingerprintMismatchError, run_fingerprint
from jaxcnn.train.lock import WorkdirLock, WorkdirLockedError, writer_lock
from jaxcnn.train.loop import (
    NonFiniteEvalError,
    TrainResult,
    collect_outputs,
    eval_sums,
    evaluate,
    evaluate_checkpoint,
    metrics_from_sums,
    restore_checkpoint,
    run_evaluator,
    train_and_evaluate,
)
from jaxcnn.train.optim import make_optimizer, make_schedule
from jaxcnn.train.preemption import Preempted
from jaxcnn.train.program import (
    Program,
    TaskBuilder,
    build_program,
    init_state,
    make_steps,
    platform_conv_impl,
    resolve_platform,
)
from jaxcnn.train.sharding import initialize_distributed, make_mesh, to_global
from jaxcnn.train.state import TrainState
from jaxcnn.train.task import (
    Evaluator,
    GatherAll,
    Task,
    check_task_keys,
    task_settings,
)

__all__ = [
    "Checkpointer", "CorruptCheckpointError", "Evaluator", "FingerprintMismatchError",
    "RunError", "UsageError",
    "GatherAll", "NonFiniteEvalError", "Preempted", "Program", "Task", "TaskBuilder",
    "TrainResult", "TrainState", "WorkdirLock",
    "WorkdirLockedError", "build_program", "check_keys", "check_task_keys",
    "collect_outputs", "default_config", "eval_sums", "evaluate",
    "evaluate_checkpoint", "init_state", "initialize_distributed", "load_run_config",
    "make_mesh", "make_optimizer", "make_schedule", "make_steps", "metrics_from_sums",
    "override", "platform_conv_impl", "resolve_platform", "restore_checkpoint",
    "run_evaluator", "run_fingerprint", "task_settings", "to_global", "to_steps",
    "train_and_evaluate", "validate_config", "writer_lock",
]
