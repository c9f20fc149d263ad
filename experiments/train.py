"""Train and evaluate: python -m experiments.train --config=PATH[:overrides] --workdir=DIR."""

from absl import flags
from ml_collections import config_flags

from experiments import common
from jaxcnn import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. "
                                          "experiments/configs/lenet5_mnist.py[:key=value,...]")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and config go here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    common.quiet_logging()
    common.maybe_initialize_distributed()
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (train.WorkdirLockedError, train.FingerprintMismatchError) as misuse:
        raise SystemExit(f"error: {misuse}") from None  # the message says what to do


if __name__ == "__main__":
    common.run(main)
