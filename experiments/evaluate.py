"""Evaluate a workdir's latest checkpoint: python -m experiments.evaluate --workdir=DIR.

The run's config is read from DIR/config.json; `--config` (with overrides) replaces it, e.g.
to evaluate on another dataset or data_dir.
"""

import sys

from absl import flags
from ml_collections import config_flags

from experiments import common
from jaxcnn import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Optional config file[:overrides].")
_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by experiments.train.")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    common.quiet_logging()
    try:
        config = _CONFIG.value or train.load_run_config(_WORKDIR.value)
        step, metrics = train.evaluate_checkpoint(config, _WORKDIR.value)
    except FileNotFoundError as error:  # no run here: the message says what to do
        raise SystemExit(f"evaluate: {error}") from None
    except train.RunError as error:  # one line that says what to do, no traceback
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)
    print(f"checkpoint step {step}: top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  "
          f"loss {metrics['loss']:.4f}  on {int(metrics['count'])} examples")


if __name__ == "__main__":
    common.run(main)
