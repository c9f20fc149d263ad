"""Train and evaluate any task: python -m experiments.train --config=PATH[:overrides] --workdir=DIR.

config.task.name selects the task (jaxcnn.tasks: classification, localization, crop_classifier,
detector, faces, segmentation); a config without it is classification (or faces / detector for a
'faces:' dataset / model 'yolo'). A workdir that holds a run resumes it.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import common
from jaxcnn import tasks, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. "
                                          "experiments/configs/lenet5_mnist.py[:key=value,...]")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and config go here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    common.quiet_logging()
    common.maybe_initialize_distributed()
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, tasks.build)
    except train.RunError as error:  # the message says what to do
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None


if __name__ == "__main__":
    app.run(main)
