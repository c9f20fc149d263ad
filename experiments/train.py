"""Train and evaluate: python -m experiments.train --config=PATH[:overrides] --workdir=DIR."""

import os

from absl import app, flags
from ml_collections import config_flags

from jaxcnn import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. "
                                          "experiments/configs/lenet5_mnist.py[:key=value,...]")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and config go here.")
flags.mark_flags_as_required(["config", "workdir"])


def maybe_initialize_distributed() -> None:
    """Join a multi-process run when launch.sh (local-multi, slurm, tpu) asked for one."""
    if "JAXCNN_COORDINATOR" in os.environ:
        train.initialize_distributed(
            os.environ["JAXCNN_COORDINATOR"], int(os.environ["JAXCNN_NUM_PROCESSES"]),
            int(os.environ["JAXCNN_PROCESS_ID"]))
    elif os.environ.get("JAXCNN_DISTRIBUTED") == "1":
        train.initialize_distributed()


def main(argv):
    del argv
    maybe_initialize_distributed()
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
