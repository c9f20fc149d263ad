"""Classification with localization on single-object synthetic scenes (the lecture's first
detector): python -m experiments.train --config=experiments/configs/localize.py --workdir=DIR.

`:runlocal` is a seconds-long smoke run; further `key=value` overrides follow, e.g.
`:runlocal,train_steps=5`. Objects 20-48 px (10-48 px, as in the multi-object scenes, reached
91.8 % class accuracy and mean IoU 0.48 in the same budget: README).
"""

import ml_collections

from jaxcnn.train import default_config, override


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default_config()
    config.model = "localization_net"  # recorded; the net is the task's LocalizationNet
    config.dataset = "synthetic_single"
    config.normalize = False
    config.tensorboard = False
    config.checkpoint_every_steps = 2000
    config.log_every_steps = 100
    config.batch_size = 64
    config.eval_batch_size = 250
    config.train_epochs = 30.0
    config.learning_rate = 2e-3
    config.warmup_epochs = 0.5
    config.augment = "flip"
    config.task = ml_collections.ConfigDict({
        "name": "localization", "num_train": 8000, "num_test": 1000, "scenes_seed": 0,
        "min_px": 20.0, "max_px": 48.0,
        "logistic": False,  # True: logistic pc + softmax classes variant of the loss
        # Weight of the four box terms (YOLO's lambda_coord = 5; 1 is the lecture's loss): the
        # run with 1 reached mean IoU 0.32 on 10-48 px objects, with 5 0.48 (README).
        "box_weight": 5.0,
    })
    args = [a for a in (arg or "").split(",") if a]
    if "runlocal" in args:
        args.remove("runlocal")
        config.task.num_train, config.task.num_test = 128, 64
        config.train_steps, config.batch_size = 4, 32
    return override(config, ",".join(args))
