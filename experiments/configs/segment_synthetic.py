"""Per-pixel segmentation of the synthetic scenes (background + pedestrian / car / motorcycle):
python -m experiments.train --config=experiments/configs/segment_synthetic.py --workdir=DIR,
then python -m experiments.evaluate --workdir=DIR (mean IoU from the summed confusion matrix).
"""

import ml_collections

from jaxcnn.tasks.segmentation import DEFAULTS, NAME
from jaxcnn.train import default_config, override


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default_config()
    config.model = "segmentation"  # recorded; the net is config.task.backbone's trunk + head
    config.dataset = "synthetic_scenes"
    config.image_size = (96, 96)
    config.batch_size = 32
    config.eval_batch_size = 100
    config.train_steps = 1500
    config.optimizer = "adamw"
    config.learning_rate = 2e-3
    config.weight_decay = 5e-4
    config.warmup_steps = 100
    config.log_every_steps = 100
    config.checkpoint_every_steps = 500
    config.task = ml_collections.ConfigDict({"name": NAME, **DEFAULTS})
    # ResNet-20's CIFAR trunk (stride 4: a 24x24 map for 96x96 scenes) at half its widths.
    config.task.backbone_kwargs = ml_collections.ConfigDict({"widths": (8, 16, 32)})
    return override(config, arg)
