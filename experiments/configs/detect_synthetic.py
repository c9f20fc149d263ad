"""The YOLO-style detector on the synthetic scenes (96x96, pedestrian / car / motorcycle):
python -m experiments.train --config=experiments/configs/detect_synthetic.py --workdir=DIR.

':dataset=voc_folder:PATH' (e.g. ../shared/data/raccoon) or 'yolo_folder:PATH' for real boxes.
"""

import ml_collections

from jaxcnn.tasks.detector import DEFAULTS, NAME
from jaxcnn.train import default_config, override


def get_config(arg: str | None = None):
    config = default_config()
    config.model = "yolo"  # recorded for the run; the trunk is config.task.backbone
    config.dataset = "synthetic_scenes"
    config.image_size = (96, 96)
    config.augment = "flip"
    config.normalize = True
    config.batch_size = 32
    config.eval_batch_size = 100
    config.train_steps = 3000
    config.optimizer = "adamw"
    config.learning_rate = 2e-3
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.warmup_steps = 200
    config.grad_clip_norm = 10.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 500
    config.task = ml_collections.ConfigDict({"name": NAME, **DEFAULTS})
    # A small trunk for 2 CPU cores: ResNet-18's CIFAR form (stride 8) at 1/8 of its widths.
    config.task.backbone = "resnet18_cifar"
    config.task.backbone_kwargs = ml_collections.ConfigDict({"widths": (8, 16, 32, 64)})
    config.task.head_channels = 64
    return override(config, arg)
