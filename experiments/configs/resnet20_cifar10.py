"""He et al. 2015's CIFAR-10 ResNet-20, its data on the accelerator (one GPU in minutes).

Paper (Sec. 4.2): SGD momentum 0.9, learning rate 0.1 divided by 10 at 32k and 48k
iterations, 64k iterations of batch 128, weight decay 1e-4, 4-pixel pad + 32x32 crop +
flip; 8.75 % test error. Here: bf16 compute, float32 parameters, the JPEG (q75) CIFAR-10
from a folder or tarball with train/ and test/ class folders, augmented on the device.

Arg: 'steps=N' shortens the run keeping the paper's shape (decays at 50 % and 75 % of N);
'data=PATH' points at the tarball/folder; anything else is 'key=value' config overrides.
  --config=experiments/configs/resnet20_cifar10.py:steps=32000,data=.gpu_data/cifar10_jpeg.tar.gz
"""

from jaxcnn.train import default_config, override
from jaxcnn.train.config import _split_top_level

PAPER_STEPS = 64_000
CIFAR10_TRAIN = 50_000  # the decay epochs below assume the full training set
DEFAULT_DATA = "../shared/data/cifar10_jpeg.tar.gz"


def get_config(arg: str | None = None):
    rest, steps, data = [], PAPER_STEPS, DEFAULT_DATA
    for item in _split_top_level(arg or ""):
        key, _, value = item.partition("=")
        if key.strip() == "steps":
            steps = int(value)
        elif key.strip() == "data":
            data = value.strip()
        else:
            rest.append(item)
    if steps < 4:
        raise ValueError(f"steps must be >= 4 (decays at 50 % and 75 %); received {steps}")
    config = default_config()
    config.model = "resnet20_cifar"
    config.dataset = f"device:{data}"
    config.augment = "crop_flip"
    config.batch_size = 128
    config.eval_batch_size = 1000
    config.train_steps = steps
    config.optimizer = "momentum"  # the paper's plain (heavy-ball) momentum, not Nesterov
    config.momentum = 0.9
    config.learning_rate = 0.1
    config.weight_decay = 1e-4
    config.schedule = "step"
    steps_per_epoch = CIFAR10_TRAIN // config.batch_size
    config.decay_epochs = (steps * 0.5 / steps_per_epoch, steps * 0.75 / steps_per_epoch)
    config.decay_factor = 0.1
    config.dtype = "bfloat16"
    config.log_every_steps = max(1, min(1000, steps // 16))
    config.eval_every_steps = max(1, steps // 4)
    config.checkpoint_every_steps = max(1, steps // 4)
    config.keep_checkpoints = 1
    config.tensorboard = False  # TensorBoard's writer needs TensorFlow; metrics.jsonl suffices
    return override(config, ",".join(rest))
