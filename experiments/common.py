"""What every experiment entry point does around the library: flags, errors, logs, distributed.

Every script ends with `common.run(main)` instead of `app.run(main)`. It parses the flags with
absl and turns each mistake a user can make (an unknown flag or config key, a config file that
does not exist, a bad value, an unknown model, any `jaxcnn.train.RunError`) into one line
`error: <what was wrong and what to do>` on stderr with exit code 2 (usage) or 1 (run);
`--show_config` prints the resolved config with each key's meaning and default; third-party
INFO logs (Orbax, absl, JAX backend discovery, TensorFlow) are shown only with `--verbose`.
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

# Before TensorFlow or XLA's C++ logging starts: hide its INFO lines unless --verbose (which
# also undoes launch.sh's TF_CPP_MIN_LOG_LEVEL=2).
if "--verbose" in sys.argv:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections.config_flags import config_flags  # noqa: E402  (is_config_flag)

from jaxcnn import train  # noqa: E402
from jaxcnn.train.config import KEY_HELP, normalize_image_size  # noqa: E402

FLAGS = flags.FLAGS
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show third-party INFO logs (Orbax, absl, JAX "
                             "backend discovery, TensorFlow); hidden by default.")


def quiet_logging() -> None:
    """Show third-party warnings only; INFO too with --verbose; --verbosity=N as given."""
    if FLAGS.is_parsed() and FLAGS["verbosity"].present:
        return
    logging.set_verbosity(logging.INFO if FLAGS.is_parsed() and _VERBOSE.value
                          else logging.WARNING)


def maybe_initialize_distributed() -> None:
    """Join a multi-process run when launch.sh (local-multi, slurm, tpu) asked for one."""
    if "JAXCNN_COORDINATOR" in os.environ:
        train.initialize_distributed(
            os.environ["JAXCNN_COORDINATOR"], int(os.environ["JAXCNN_NUM_PROCESSES"]),
            int(os.environ["JAXCNN_PROCESS_ID"]))
    elif os.environ.get("JAXCNN_DISTRIBUTED") == "1":
        train.initialize_distributed()


# ---------------------------------------------------------------------------------------------
# The entry point wrapper


def run(main: Callable[[Sequence[str]], Any], argv: Sequence[str] | None = None) -> None:
    """`app.run(main)` with one-line errors, `--show_config` and quiet third-party logs."""
    names = config_flag_names()
    if names and "show_config" not in FLAGS:
        flags.DEFINE_bool("show_config", False, "Print the resolved config (every key with its "
                          "value, meaning and default) and exit.")
        for name in names:
            FLAGS[name].help += " (--show_config lists every key with its meaning and default)"
    if argv is not None:
        sys.argv = list(argv)  # ml_collections reads --config.KEY overrides from sys.argv
    app.run(_guarded(main), argv=list(sys.argv), flags_parser=parse_flags)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """FLAGS(argv), with every mistake printed as `error: ...` (one line) and exit 2."""
    try:
        remaining = _parse(list(argv))
    except train.RunError as error:
        _fail(error)
    quiet_logging()
    return remaining


def _guarded(main: Callable[[Sequence[str]], Any]) -> Callable[[Sequence[str]], Any]:
    def guarded_main(argv: Sequence[str]) -> Any:
        try:
            if "show_config" in FLAGS and FLAGS.show_config:
                print(config_table(_shown_config()))
                return 0
            return main(argv)
        except train.RunError as error:
            _fail(error)
        except app.UsageError as error:
            _fail(train.UsageError(str(error)))
        except ValueError as error:
            usage = unknown_model_error(str(error))
            if usage is None:
                raise
            _fail(usage)

    return guarded_main


def _fail(error: BaseException) -> NoReturn:
    print(f"error: {_one_line(str(error))}", file=sys.stderr, flush=True)
    sys.exit(getattr(error, "exit_code", 2))


def _parse(argv: list[str]) -> list[str]:
    names = config_flag_names()
    if any(arg in ("--show_config", "--show_config=true") for arg in argv):
        _drop_required(names)
    for name in names:
        check_config_path(_flag_argument(argv, name))
    try:
        return FLAGS(argv)
    except flags.Error as error:
        inner = _innermost_run_error(error)
        if inner is not None:
            raise inner from None
        raise train.UsageError(_one_line(str(error))) from None
    except (AttributeError, KeyError):  # ml_collections: an unknown --config.KEY
        message = override_error(argv, names)
        if message is None:
            raise  # not a missing key: a bug, keep its traceback
        raise train.UsageError(message) from None
    except OSError as error:  # ml_collections: a config file it could not load
        if "config file" not in str(error):
            raise
        raise train.UsageError(_one_line(str(error))) from None


def _innermost_run_error(error: BaseException) -> BaseException | None:
    """The deepest RunError that ml_collections and absl wrapped (with a traceback) in `error`."""
    found, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, train.RunError) and "Traceback" not in str(error):
            found = error
        error = error.__cause__ or error.__context__
    return found


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        return lines[-1]
    return " ".join(lines)


def _drop_required(config_names: Sequence[str]) -> None:
    """--show_config needs only --config: other flags marked required (--workdir) are not."""
    for name, flag in FLAGS._flags().items():  # absl keeps validators on each flag
        if name not in config_names:
            flag.validators = [v for v in flag.validators
                               if not getattr(v, "message", "").endswith(
                                   "must have a value other than None.")]


# ---------------------------------------------------------------------------------------------
# Config flags: paths, unknown keys, --show_config


def config_flag_names() -> list[str]:
    """Names of the ml_collections config-file flags this program defined (usually 'config')."""
    return [name for name, flag in FLAGS._flags().items()
            if config_flags.is_config_flag(flag) and name == flag.name]


def _flag_argument(argv: Sequence[str], name: str) -> str | None:
    """The last value given to --name (as --name=V or --name V) in argv, or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def list_configs() -> list[str]:
    """The config files in experiments/configs/, as paths relative to the repository root."""
    paths = sorted(glob.glob(os.path.join(CONFIGS_DIR, "*.py")))
    return [os.path.join("experiments", "configs", os.path.basename(p)) for p in paths
            if not os.path.basename(p).startswith("_")]


def check_config_path(argument: str | None) -> None:
    """Raise a UsageError naming the configs that exist when --config's file is not there."""
    if not argument:
        return
    path = argument.split(":", 1)[0]
    if os.path.isfile(path):
        return
    configs = list_configs()
    match = difflib.get_close_matches(path, configs, n=1, cutoff=0.5)
    hint = f" (did you mean {match[0]}?)" if match else ""
    names = ", ".join(os.path.basename(c) for c in configs)
    raise train.UsageError(f"config file {path} not found{hint}; the configs in "
                           f"experiments/configs/ are: {names}")


def override_error(argv: Sequence[str], names: Sequence[str]) -> str | None:
    """A one-line message for the first --NAME.KEY=VALUE whose KEY the config lacks."""
    for name in names:
        argument = _flag_argument(argv, name)
        if argument is None:
            continue
        try:
            config = config_flags.ConfigFileFlagParser(name=name, lock_config=False).parse(
                argument)
        except Exception:  # noqa: BLE001 -- the caller falls back to the library's message
            return None
        for arg in argv:
            match = re.match(rf"--(?:no)?{re.escape(name)}\.([^=]+)", arg)
            if match:
                message = _missing_key(config, match.group(1), arg)
                if message:
                    return message
    return None


def _missing_key(config: ml_collections.ConfigDict, path: str, arg: str) -> str | None:
    node, walked = config, []
    for part in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            valid = sorted(node) if isinstance(node, ml_collections.ConfigDict) else []
            match = difflib.get_close_matches(part, valid, n=1)
            hint = f" (did you mean {'.'.join([*walked, match[0]])!r}?)" if match else ""
            where = f" under {'.'.join(walked)!r}" if walked else ""
            extra = ""
            if walked and walked[-1] == "model_kwargs":
                extra = "; a model keyword argument goes after the config path: " \
                        f"--config=FILE:{path}=VALUE"
            return (f"{arg}: unknown config key {part!r}{where}{hint}{extra}; "
                    f"--show_config lists every key")
        node, walked = node[part], [*walked, part]
    return None


def _shown_config() -> ml_collections.ConfigDict:
    """The config --show_config prints: --config's, else the run's (--workdir/config.json)."""
    for name in config_flag_names():
        if FLAGS[name].value is not None:
            return FLAGS[name].value
    if "workdir" in FLAGS and FLAGS.workdir:
        return train.load_run_config(FLAGS.workdir)
    raise train.UsageError("--show_config needs --config=FILE (or --workdir=DIR of a run)")


def _flatten(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key in sorted(config.keys()):
        value = config[key]
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict) and len(value):
            items.extend(_flatten(value, f"{path}."))
        else:
            items.append((path, value.to_dict() if isinstance(value, ml_collections.ConfigDict)
                          else value))
    return items


def _task_help(config: ml_collections.ConfigDict) -> tuple[dict[str, str], dict[str, Any]]:
    """("task.KEY" -> meaning, "task.KEY" -> default) from jaxcnn.tasks when it exists."""
    try:
        from jaxcnn import tasks  # the task registry (issue 25); optional until it lands
    except ImportError:
        return {}, {}
    try:
        meanings = dict(tasks.key_help(config))
        name = config.task.get("name") or tasks.infer_name(config)
        defaults = {f"task.{k}": v for k, v in tasks.get(name).DEFAULTS.items()}
    except Exception:  # noqa: BLE001 -- a config no task accepts still prints its keys
        return {}, {}
    return meanings, defaults


_NO_DEFAULT = object()


def _describe(config: ml_collections.ConfigDict, path: str) -> tuple[str, Any]:
    """(meaning, default) of one flattened key; a key inside a nested training config (such
    as localize's `localization.batch_size`) gets the meaning of its last part."""
    defaults = train.default_config()
    parts = path.split(".")
    for start in range(len(parts)):
        key = ".".join(parts[start:])
        parent = config
        for part in parts[:start]:
            parent = parent[part]
        if key.split(".")[0] in KEY_HELP and set(defaults.keys()) <= set(parent.keys()):
            default: Any = defaults
            for part in key.split("."):
                default = default.get(part, _NO_DEFAULT) if isinstance(
                    default, ml_collections.ConfigDict) else _NO_DEFAULT
            if isinstance(default, ml_collections.ConfigDict):
                default = default.to_dict()
            return KEY_HELP[key.split(".")[0]], default
    return "", _NO_DEFAULT


def config_table(config: ml_collections.ConfigDict) -> str:
    """Every key of `config` with its value, default and one-line meaning, one key a line."""
    task_meanings, task_defaults = ({}, {})
    if "task" in config and "model" in config:
        task_meanings, task_defaults = _task_help(config)
    rows = []
    if "image_size" in config:  # shown as the run will use it: 32 -> (32, 32)
        try:
            config = ml_collections.ConfigDict(config.to_dict())
            config.image_size = normalize_image_size(config.image_size)
        except (TypeError, ValueError):
            pass
    for path, value in _flatten(config):
        if path.startswith("task."):  # task.KEY or a part of it (task.backbone_kwargs.widths)
            owner = next((p for p in sorted(task_meanings, key=len, reverse=True)
                          if path == p or path.startswith(f"{p}.")), path)
            meaning = task_meanings.get(owner, "")
            default = task_defaults.get(path, _NO_DEFAULT)
        else:
            meaning, default = _describe(config, path)
        rows.append((path, repr(value), "" if default is _NO_DEFAULT else repr(default),
                     meaning))
    width = [max(len(r[i]) for r in [("key", "value", "default", ""), *rows]) for i in range(3)]
    lines = ["  ".join(["key".ljust(width[0]), "value".ljust(width[1]),
                        "default".ljust(width[2]), "meaning"])]
    lines += ["  ".join([r[0].ljust(width[0]), r[1].ljust(width[1]), r[2].ljust(width[2]),
                         r[3]]).rstrip() for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Models


def unknown_model_error(message: str) -> train.UsageError | None:
    """The registry's "unknown model 'X'; valid names: ..." as a UsageError with a did-you-mean
    (None for any other message)."""
    match = re.match(r"unknown model '([^']*)'", message)
    return model_usage_error(match.group(1)) if match else None


def model_usage_error(name: str) -> train.UsageError:
    """A UsageError for an unregistered model name: the closest names and all of them."""
    from jaxcnn import models

    valid = models.list_models()
    match = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {match[0]!r}?)" if match else ""
    return train.UsageError(f"unknown model {name!r}{hint}; valid names: {', '.join(valid)}")
