"""The default training config, `key=value` overrides, and duration conversion."""

from __future__ import annotations

import ast
import difflib
import json
import os
from typing import Any

import ml_collections
from ml_collections import config_dict


def default_config() -> ml_collections.ConfigDict:
    """Every key a training config may have, with defaults (LeNet-5 on embedded MNIST)."""
    c = ml_collections.ConfigDict()
    c.model = "lenet5"
    c.model_kwargs = ml_collections.ConfigDict()
    c.dataset = "embedded_mnist"  # TFDS name, 'embedded_mnist', 'npz:PATH' or 'folder:PATH'
    c.data_dir = config_dict.placeholder(str)
    c.download = False
    c.image_size = config_dict.placeholder(tuple)  # (H, W); None keeps the native size
    c.augment = config_dict.placeholder(str)  # none | flip | crop_flip | inception_crop
    c.normalize = True  # subtract the dataset's per-channel mean, divide by its std

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
    c.log_every_steps = 50
    c.eval_every_steps = config_dict.placeholder(int)  # None: evaluate at the end only
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    c.progress = True  # console progress lines with rate and ETA
    c.tensorboard = True  # event files in workdir/tensorboard (metrics.jsonl is always written)
    c.task = ml_collections.ConfigDict()  # the task's own keys (each task declares its own)
    return c


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """Apply 'key=value,other.key=value' overrides; unknown keys raise naming the key."""
    if not arg:
        return config
    for item in _split_top_level(arg):
        if "=" not in item:
            raise ValueError(f"config override {item!r} must look like key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        parent, name = config, key
        if "." in key:
            path, name = key.rsplit(".", 1)
            for part in path.split("."):
                if part not in parent:
                    raise KeyError(f"unknown config key {key!r} (no {part!r})")
                parent = parent[part]
        if name not in parent:
            raise KeyError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(parent))}")
        value = _parse_value(text.strip())
        if isinstance(parent[name], float) and isinstance(value, int):
            value = float(value)
        parent[name] = value
    return config


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
    """A KeyError naming each unknown key, its closest valid key, and all valid keys."""
    named = ", ".join(f"{key!r}{_closest(key, valid)}" for key in unknown)
    return KeyError(f"unknown {kind} key(s) {named}; valid keys: "
                    f"{', '.join(valid) if valid else '(none)'}")


def check_keys(config: ml_collections.ConfigDict) -> None:
    """Raise naming any top-level key the training loop does not know."""
    valid = sorted(default_config().keys())
    unknown = sorted(set(config.keys()) - set(valid))
    if unknown:
        raise unknown_keys_error("config", unknown, valid)


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
