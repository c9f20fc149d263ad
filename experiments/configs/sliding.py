"""The sliding-window detector's 14x14 crop classifier, on crops of synthetic scenes:
python -m experiments.train --config=experiments/configs/sliding.py --workdir=DIR, then
python -m experiments.localize --workdir=DIR for the detector's mAP on the held-out scenes.

`:runlocal` is a seconds-long smoke run; further `key=value` overrides follow.
"""

import ml_collections

from jaxcnn.train import default_config, override


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default_config()
    config.model = "crop_classifier"  # recorded; the net is the lecture's CropClassifier
    config.dataset = "scene_crops"
    config.normalize = False
    config.tensorboard = False
    config.checkpoint_every_steps = 2000
    config.log_every_steps = 100
    config.batch_size = 128
    config.eval_batch_size = 500
    config.train_epochs = 8.0
    config.learning_rate = 1e-3
    config.task = ml_collections.ConfigDict({
        "name": "crop_classifier", "num_train": 1500, "num_test": 300, "scenes_seed": 1,
        "margin": 1.1,
        # The detector: windows in original pixels (1.1 x object side), per-class NMS.
        "window_sizes": (12, 16, 22, 30, 40, 53), "iou_threshold": 0.3,
        "score_threshold": 0.05, "max_out": 30, "use_class_aspects": True,
    })
    args = [a for a in (arg or "").split(",") if a]
    if "runlocal" in args:
        args.remove("runlocal")
        config.task.num_train, config.task.num_test = 16, 8
        config.train_steps, config.batch_size = 4, 32
        config.task.window_sizes = (16, 30)
    return override(config, ",".join(args))
