"""The YOLO-style detector on ../shared/data/raccoon (VOC layout, 160 train / 40 test images).

One class, large boxes, few images: a 3x3 grid, strong weight decay and a short run (150 steps
of 32, about 30 epochs; 400 steps on a 6x6 grid overfit: mAP@0.5 0.24, below the constant
baseline's 0.53).
"""

from experiments.configs import detect_synthetic
from jaxcnn.train import override


def get_config(arg: str | None = None):
    config = detect_synthetic.get_config()
    config.dataset = "voc_folder:../shared/data/raccoon"
    config.train_steps = 150
    config.warmup_steps = 20
    config.weight_decay = 5e-3
    config.eval_batch_size = 40
    config.log_every_steps = 50
    config.checkpoint_every_steps = 150
    config.task.grid = 3
    return override(config, arg)
