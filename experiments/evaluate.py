"""Evaluate any finished run: python -m experiments.evaluate --workdir=DIR [--data=SPEC].

The run's config (DIR/config.json; a run written before the task registry maps to its task by
jaxcnn.tasks.infer_name) is rebuilt on the latest checkpoint; `--config` (with overrides)
replaces it and `--data` replaces config.dataset (e.g. faces:DIR for a folder of new people).
Prints every metric of the task and writes them to DIR/eval_metrics.json.
"""

import json
import os
import sys

import jax
from absl import flags
from ml_collections import config_flags

from experiments import common
from jaxcnn import tasks, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Optional config file[:overrides].")
_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by experiments.train.")
_DATA = flags.DEFINE_string("data", None, "Evaluate on this dataset instead of config.dataset.")
flags.mark_flag_as_required("workdir")


def format_metrics(step: int, metrics: dict[str, float]) -> str:
    """One line per metric, after the checkpoint step and the example count."""
    lines = [f"checkpoint step {step}:" + (f" {int(metrics['count'])} examples"
                                            if "count" in metrics else "")]
    lines += [f"  {key:<28} {value:.4f}" for key, value in metrics.items() if key != "count"]
    return "\n".join(lines)


def main(argv):
    del argv
    common.quiet_logging()
    workdir = _WORKDIR.value
    try:
        config = _CONFIG.value or train.load_run_config(workdir)
        if _DATA.value:
            config.dataset = _DATA.value
        step, metrics = train.evaluate_checkpoint(config, workdir, tasks.build,
                                                  other_data=bool(_DATA.value))
    except FileNotFoundError as error:  # no run here: the message says what to do
        raise SystemExit(f"evaluate: {error}") from None
    except train.RunError as error:  # one line that says what to do, no traceback
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)
    print(format_metrics(step, metrics))
    if metrics.get("nonfinite"):
        print(f"warning: {int(metrics['nonfinite'])} of {int(metrics['count'])} examples have "
              f"NaN or infinite outputs (counted as wrong): the checkpoint has diverged")
    if jax.process_index() == 0:
        path = os.path.join(workdir, "eval_metrics.json")
        try:
            with open(path, "w") as f:
                json.dump({"step": int(step), "dataset": config.dataset, **metrics}, f, indent=2)
        except OSError as error:  # a read-only workdir can still be evaluated
            print(f"note: metrics not saved to {path}: {error.strerror}", file=sys.stderr)


if __name__ == "__main__":
    common.run(main)
