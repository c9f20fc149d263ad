"""Evaluate a workdir's latest checkpoint: python -m experiments.evaluate --workdir=DIR.

The run's config is read from DIR/config.json; `--config` (with overrides) replaces it, e.g.
to evaluate on another dataset or data_dir.
"""

import json
import os

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from experiments import common
from jaxcnn import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Optional config file[:overrides].")
_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by experiments.train.")
flags.mark_flag_as_required("workdir")


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run saved in workdir/config.json, on top of today's defaults."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
    with open(path) as f:
        saved = json.load(f)
    config = train.default_config()
    for key, value in saved.items():
        config[key] = tuple(value) if isinstance(value, list) else value
    return config


def main(argv):
    del argv
    common.quiet_logging()
    config = _CONFIG.value or load_run_config(_WORKDIR.value)
    step, metrics = train.evaluate_checkpoint(config, _WORKDIR.value)
    print(f"checkpoint step {step}: top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  "
          f"loss {metrics['loss']:.4f}  on {int(metrics['count'])} examples")


if __name__ == "__main__":
    app.run(main)
