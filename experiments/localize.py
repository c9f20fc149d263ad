"""The sliding-window detector of a trained crop classifier:
python -m experiments.localize --workdir=DIR (DIR: a run of experiments/configs/sliding.py).

Runs the classifier's convolutional form over the held-out scenes of the run's config at
config.task.window_sizes and scores the detections (VOC mAP@0.5, COCO mAP@[.5:.95]); writes
DIR/sliding_windows.json. Training and the crop accuracy are experiments.train / evaluate's.
"""

import json
import os

from absl import flags

from experiments import common
from jaxcnn import tasks, train
from jaxcnn.detection import sliding
from jaxcnn.tasks import crop_classifier

_WORKDIR = flags.DEFINE_string("workdir", None, "A crop_classifier run (experiments.train).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    common.quiet_logging()
    run = tasks.load_run(_WORKDIR.value)
    if tasks.infer_name(run.config) != crop_classifier.NAME:
        raise train.UsageError(f"{_WORKDIR.value} holds a {tasks.infer_name(run.config)!r} run; "
                             f"the sliding-window detector needs a crop_classifier run")
    scenes = crop_classifier.scenes(run.config)
    results = {"step": run.step, **sliding.evaluate_sliding_windows(
        run.state.params, scenes, **crop_classifier.detect_settings(run.config))}
    with open(os.path.join(_WORKDIR.value, "sliding_windows.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    common.run(main)
