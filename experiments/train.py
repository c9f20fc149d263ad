"""Train and evaluate any task: python -m experiments.train --config=PATH[:overrides] --workdir=DIR.

config.task.name selects the task (jaxcnn.tasks: classification, localization, crop_classifier,
detector, faces, segmentation); a config without it is classification (or faces / detector for a
'faces:' dataset / model 'yolo'). A workdir that holds a run resumes it.

Exit codes: 0 done; 1 a problem with the run (one line: `error: ...`); 2 a usage mistake;
143 (SIGTERM) or 130 (SIGINT): preempted after saving, rerun the same command to resume.
"""

import sys

from absl import flags
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
    except train.RunError as error:  # one line that says what to do, no traceback
        prefix = "" if isinstance(error, train.Preempted) else "error: "
        print(f"{prefix}{error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    common.run(main)
