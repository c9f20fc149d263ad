"""The default training config, `key=value` overrides, and duration conversion."""

from __future__ import annotations

import ast
import difflib
import json
import math
import os
from typing import Any

import ml_collections
import numpy as np
from ml_collections import config_dict


def default_config() -> ml_collections.ConfigDict:
    """Every key a training config may have, with defaults (LeNet-5 on embedded MNIST)."""
    c = ml_collections.ConfigDict()
    c.model = "lenet5"
    c.model_kwargs = ml_collections.ConfigDict()
    c.dataset = "embedded_mnist"  # TFDS name, 'embedded_mnist', 'npz:PATH' or 'folder:PATH'
    # Classes of the dataset; None infers them (npz: from the labels). When set, the labels must
    # lie in [0, num_classes) and folder/TFDS datasets must have exactly this many classes.
    c.num_classes = config_dict.placeholder(int)
    c.data_dir = config_dict.placeholder(str)
    c.download = False
    c.image_size = config_dict.placeholder(tuple)  # (H, W); None keeps the native size
    c.augment = config_dict.placeholder(str)  # none | flip | crop_flip | inception_crop
    c.normalize = True  # subtract the dataset's per-channel mean, divide by its std
    c.validation_fraction = 0.0  # > 0: a held-out share of train replaces the eval split

    c.batch_size = 128  # global, over all devices and hosts
    c.eval_batch_size = 500
    c.train_epochs = 10.0
    c.train_steps = config_dict.placeholder(int)  # overrides train_epochs when set
    c.optimizer = "adam"  # sgd | momentum | nesterov | adam | adamw
    c.learning_rate = 1e-3
    c.momentum = 0.9
    c.weight_decay = 0.0
    c.grad_clip_norm = config_dict.placeholder(float)
    c.schedule = "cosine"  # constant | cosine | step
    c.warmup_epochs = 0.0
    c.warmup_steps = config_dict.placeholder(int)
    c.decay_epochs = ()  # step schedule: multiply the rate by decay_factor at these epochs
    c.decay_factor = 0.1
    c.label_smoothing = 0.0
    c.dtype = "float32"  # or bfloat16: compute dtype; params and loss stay float32
    # Convolution/max-pool kernels (jaxcnn.kernels): "auto" = the XLA:CPU rewrites on CPU
    # devices, XLA's own ops elsewhere; or a name from jaxcnn.kernels.KERNELS.
    c.conv_impl = "auto"

    c.seed = 0
    # Host processes preparing train batches (Grain mp_prefetch); 0: a thread of this process.
    c.data_workers = 0
    c.log_every_steps = 50
    c.eval_every_steps = config_dict.placeholder(int)  # None: evaluate at the end only
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    c.progress = True  # console progress lines with rate and ETA
    c.progress_label = ""  # prefix of the progress lines: which part of a multi-part run
    c.tensorboard = True  # event files in workdir/tensorboard (metrics.jsonl is always written)
    c.task = ml_collections.ConfigDict()  # the task's own keys (each task declares its own)
    return c


# One line per key of default_config(): what `--show_config` prints beside each value.
KEY_HELP: dict[str, str] = {
    "model": "registry model name (jaxcnn.models.list_models())",
    "model_kwargs": "the model's own keyword arguments, e.g. :model_kwargs.width=0.5",
    "dataset": "TFDS name, embedded_mnist, npz:PATH or folder:PATH (train/ and test/ inside)",
    "num_classes": "classes of the dataset; None infers them",
    "data_dir": "TFDS data directory; None: TFDS's default",
    "download": "let TFDS download a missing dataset (needs network)",
    "image_size": "(height, width) the images are resized to; None keeps the native size",
    "augment": "none | flip | crop_flip | inception_crop; None: the dataset's default",
    "normalize": "subtract the dataset's per-channel mean and divide by its std",
    "validation_fraction": "in (0, 1): evaluate on this seeded share of train, held out "
                           "(to choose settings); 0: the test split",
    "batch_size": "global training batch, over all devices and hosts",
    "eval_batch_size": "global evaluation batch (the last one is padded and masked)",
    "train_epochs": "training length in epochs (ignored when train_steps is set)",
    "train_steps": "training length in steps; None: from train_epochs",
    "optimizer": "sgd | momentum | nesterov | adam | adamw",
    "learning_rate": "peak learning rate (after warm-up)",
    "momentum": "momentum of momentum/nesterov (adam/adamw keep optax's betas)",
    "weight_decay": "L2 (sgd/momentum/nesterov/adam) or decoupled (adamw) weight decay",
    "grad_clip_norm": "clip the gradient's global norm to this; None: no clipping",
    "schedule": "learning-rate schedule after warm-up: constant | cosine | step",
    "warmup_epochs": "linear warm-up from 0, in epochs",
    "warmup_steps": "linear warm-up in steps; None: from warmup_epochs",
    "decay_epochs": "step schedule: epochs at which the rate is multiplied by decay_factor",
    "decay_factor": "step schedule: the factor applied at each of decay_epochs",
    "label_smoothing": "share of the target spread evenly over all classes",
    "dtype": "compute dtype: float32 | bfloat16 | float16 (params and loss stay float32)",
    "conv_impl": "convolution/max-pool kernels: auto or a name of jaxcnn.kernels.KERNELS",
    "seed": "seed of initialisation, shuffling, augmentation and dropout",
    "data_workers": "host processes preparing train batches (Grain); 0: one thread; same batches",
    "log_every_steps": "write metrics and a progress line every this many steps",
    "eval_every_steps": "evaluate every this many steps; None: at the end only",
    "checkpoint_every_steps": "save a checkpoint every this many steps (and at the end)",
    "keep_checkpoints": "how many of the latest checkpoints are kept",
    "async_checkpoints": "write checkpoints in a background thread",
    "progress": "print progress lines (step, rate, ETA) on the console",
    "progress_label": "prefix of the progress lines, naming the part of a multi-part run",
    "tensorboard": "write TensorBoard event files (metrics.jsonl is always written)",
    "task": "the task's own keys (task.name selects the task)",
}


_CONFIG_ERRORS: dict[type, type] = {}


def _usage_error(message: str, base: type[Exception]) -> Exception:
    """A jaxcnn.train.UsageError that is also a `base` (KeyError, TypeError or ValueError), so
    entry points print it as one line and existing `except base` callers still catch it."""
    if base not in _CONFIG_ERRORS:
        from jaxcnn.errors import UsageError  # a leaf module; imported here, not above

        def __str__(self: Exception) -> str:  # KeyError's own __str__ would quote the message
            return str(self.args[0]) if self.args else ""

        _CONFIG_ERRORS[base] = type(f"Config{base.__name__}", (UsageError, base),
                                    {"__str__": __str__, "__module__": __name__})
    return _CONFIG_ERRORS[base](message)


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Apply 'key=value,other.key=value' overrides; unknown keys raise naming the key (except
    new model_kwargs.NAME keys: the model's own keyword arguments). A scalar given to a tuple
    key becomes a 1-tuple, as --config.KEY=VALUE does (image_size=32 -> (32,) -> (32, 32))."""
    if not arg:
        return config
    for item in _split_top_level(arg):
        if "=" not in item:
            raise _usage_error(f"config override {item!r} must look like key=value "
                               f"(e.g. :learning_rate=0.01)", ValueError)
        key, text = item.split("=", 1)
        key = key.strip()
        parent, name = config, key
        if "." in key:
            path, name = key.rsplit(".", 1)
            for part in path.split("."):
                if not isinstance(parent, ml_collections.ConfigDict) or part not in parent:
                    valid = sorted(parent) if isinstance(parent, ml_collections.ConfigDict) else []
                    raise _usage_error(f"unknown config key {key!r}: no {part!r}"
                                       f"{_closest(part, valid)}", KeyError)
                parent = parent[part]
        # model_kwargs is open: its keys are the registry model's keyword arguments, which the
        # model itself checks when it is built.
        if name not in parent and key != f"model_kwargs.{name}":
            raise _usage_error(f"unknown config key {key!r}{_closest(name, sorted(parent))}; "
                               f"valid keys: {', '.join(sorted(parent)) or '(none)'}", KeyError)
        value = _parse_value(text.strip())
        if name in parent and isinstance(parent[name], float) and isinstance(value, int):
            value = float(value)
        if (name in parent and not isinstance(value, (tuple, list))
                and _field_type(parent, name) is tuple):
            value = (value,)
        try:
            parent[name] = value
        except TypeError:  # ConfigDict's type check: e.g. batch_size=abc
            expected = _field_type(parent, name)
            raise _usage_error(
                f"config override {key}={text.strip()}: expected "
                f"{getattr(expected, '__name__', expected)}, got "
                f"{type(value).__name__} {value!r}", TypeError) from None
    return config


def _field_type(parent: ml_collections.ConfigDict, name: str) -> Any:
    """The type ConfigDict enforces for parent[name] (placeholders included), or None."""
    try:
        return parent.get_type(name)
    except (KeyError, AttributeError, TypeError):
        return None


def _split_top_level(arg: str) -> list[str]:
    """Split on commas that are not inside brackets, so tuples like (32,32) survive."""
    items, depth, current = [], 0, ""
    for char in arg:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in [*items, current] if item.strip()]


def _closest(name: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_keys_error(kind: str, unknown: list[str], valid: list[str]) -> KeyError:
    """A KeyError (and UsageError) naming each unknown key, its closest valid key, and all
    valid keys."""
    named = ", ".join(f"{key!r}{_closest(key, valid)}" for key in unknown)
    return _usage_error(f"unknown {kind} key(s) {named}; valid keys: "
                        f"{', '.join(valid) if valid else '(none)'}", KeyError)


def check_keys(config: ml_collections.ConfigDict) -> None:
    """Raise naming any top-level key the training loop does not know."""
    valid = sorted(default_config().keys())
    unknown = sorted(set(config.keys()) - set(valid))
    if unknown:
        raise unknown_keys_error("config", unknown, valid)


DTYPES = ("float32", "bfloat16", "float16")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")  # jaxcnn.train.optim builds them
SCHEDULES = ("constant", "cosine", "step")
AUGMENTATIONS = ("none", "flip", "crop_flip", "inception_crop")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(value)


def normalize_image_size(value: Any) -> tuple[int, int] | None:
    """None, (H, W), or a side n for (n, n); also what absl's tuple flag makes of 'None'."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]  # --config.image_size=None parses to (None,), =32 to (32,)
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if _is_int(value):
        value = (value, value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(_is_int(side) and side > 0 for side in value)):
        return (int(value[0]), int(value[1]))
    raise _usage_error(
        f"config.image_size={value!r}: expected None (native size) or (height, width) with "
        f"positive integers; on the command line write --config.image_size=32,32 or "
        f"--config.image_size=None", ValueError)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise one ValueError (a UsageError) listing every invalid value on one line (call before
    writing any file).

    Also normalises config.image_size in place (see `normalize_image_size`).
    """
    problems = []

    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            problems.append(f"config.{key}={config.get(key)!r}: expected {expected}")

    for key in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
                "keep_checkpoints"):
        need(_is_int(config[key]) and config[key] >= 1, key, "a positive integer")
    for key in ("train_steps", "eval_every_steps"):
        value = config[key]
        need(value is None or (_is_int(value) and value >= 1), key,
             "None or a positive integer")
    need(config.warmup_steps is None or (_is_int(config.warmup_steps)
                                         and config.warmup_steps >= 0),
         "warmup_steps", "None or an integer >= 0")
    need(_is_int(config.get("data_workers")) and config.data_workers >= 0, "data_workers",
         "an integer >= 0")
    num_classes = config.get("num_classes")
    need(num_classes is None or (_is_int(num_classes) and num_classes >= 2),
         "num_classes", "None (inferred) or an integer >= 2")
    for key in ("train_epochs", "warmup_epochs", "learning_rate", "weight_decay"):
        need(_is_number(config[key]) and config[key] >= 0, key, "a finite number >= 0")
    if config.train_steps is None and _is_number(config.train_epochs):
        need(config.train_epochs > 0, "train_epochs", "> 0 (or set train_steps)")
    need(_is_number(config.momentum) and 0 <= config.momentum <= 1, "momentum",
         "a number in [0, 1]")
    need(_is_number(config.label_smoothing) and 0 <= config.label_smoothing < 1,
         "label_smoothing", "a number in [0, 1)")
    need(_is_number(config.decay_factor) and config.decay_factor > 0, "decay_factor",
         "a number > 0")
    need(config.grad_clip_norm is None or (_is_number(config.grad_clip_norm)
                                           and config.grad_clip_norm > 0),
         "grad_clip_norm", "None or a number > 0")
    need(isinstance(config.decay_epochs, (tuple, list))
         and all(_is_number(e) and e >= 0 for e in config.decay_epochs),
         "decay_epochs", "a tuple of epochs >= 0")
    need(config.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}")
    need(config.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}")
    need(config.dtype in DTYPES, "dtype", f"one of {DTYPES}")
    need(config.augment is None or config.augment in AUGMENTATIONS, "augment",
         f"None (the dataset's default) or one of {AUGMENTATIONS}")
    need(_is_int(config.seed), "seed", "an integer")
    try:
        config.image_size = normalize_image_size(config.image_size)
    except ValueError as error:
        problems.append(str(error))
    if problems:
        raise _usage_error("invalid config: " + "; ".join(problems), ValueError)


def to_steps(config: ml_collections.ConfigDict, name: str, steps_per_epoch: int) -> int:
    """`{name}_steps` if set, else round(`{name}_epochs` x steps_per_epoch)."""
    steps = config.get(f"{name}_steps")
    if steps is not None:
        return int(steps)
    return int(round(float(config.get(f"{name}_epochs", 0.0)) * steps_per_epoch))


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved in workdir/config.json, on top of today's defaults."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
    with open(path) as f:
        saved = json.load(f)
    config = default_config()
    for key, value in saved.items():
        if isinstance(value, dict):
            value = ml_collections.ConfigDict(value)
        config[key] = tuple(value) if isinstance(value, list) else value
    return config
