"""The lecture's first detectors: python -m experiments.localize --config=... --workdir=DIR.

Trains classification with localization (single-object scenes) and the sliding-window
crop classifier through jaxcnn.train.train_and_evaluate, then runs the sliding-window
detector on held-out scenes (mAP) and times its naive and convolutional forms.
Writes DIR/results.json.
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from experiments import common
from jaxcnn import train
from jaxcnn.data import detection as detection_data
from jaxcnn.detection import localization, tasks

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/localize.py", "Config file[:runlocal,key=value,...]")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and results go here.")
flags.mark_flags_as_required(["workdir"])


def run_localization(config, workdir: str) -> dict[str, float]:
    data = config.localization_data
    dataset = detection_data.synthetic_scenes(
        data.num_train, data.num_test, seed=data.seed, single_object=True,
        min_px=data.min_px, max_px=data.max_px,
        augment=config.localization.augment or "none",
        targets_fn=detection_data.localization_targets(len(detection_data.LECTURE_CLASSES)))
    task = tasks.localization_task(dataset, logistic=config.logistic,
                                   box_weight=config.box_weight)
    result = train.train_and_evaluate(config.localization, os.path.join(workdir, "localization"),
                                      task)
    return {**result.metrics, **localization.localization_summary(result.metrics)}


def run_sliding(config, workdir: str) -> dict[str, float]:
    scenes = detection_data.synthetic_scenes(config.scenes.num_train, config.scenes.num_test,
                                             seed=config.scenes.seed)
    crops = tasks.crop_dataset(scenes, seed=config.scenes.seed, margin=config.detector.margin)
    result = train.train_and_evaluate(config.sliding, os.path.join(workdir, "sliding"),
                                      tasks.crop_classifier_task(crops))
    detector = config.detector
    params = result.state.params
    maps = tasks.evaluate_sliding_windows(
        params, scenes, detector.window_sizes, margin=detector.margin,
        use_class_aspects=detector.use_class_aspects, iou_threshold=detector.iou_threshold,
        score_threshold=detector.score_threshold, max_out=detector.max_out)
    speed = tasks.benchmark_sliding_windows(params, scenes.x_test[0],
                                            repeats=detector.benchmark_repeats)
    return {"crop_top1": result.metrics["top1"], "crops_train": crops.num_train,
            "crops_test": crops.num_eval, **maps, **speed}


def main(argv):
    del argv
    common.quiet_logging()
    config, workdir = _CONFIG.value, _WORKDIR.value
    if config.run not in ("localization", "sliding", "both"):
        raise ValueError(f"config.run must be localization, sliding or both, got {config.run!r}")
    results = {}
    if config.run in ("localization", "both"):
        results["localization"] = run_localization(config, workdir)
    if config.run in ("sliding", "both"):
        results["sliding_windows"] = run_sliding(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    common.run(main)
