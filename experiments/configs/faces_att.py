"""Face embeddings on AT&T/ORL (README "Faces"): LeNet-5 trunk flattened to a 64-d embedding,
64x64 grayscale, ArcFace-style margin softmax over the training people s1-s20, evaluated on
s21-s30. The loss (arcface 92.1 % vs triplet 89.7 % vs both 91.9 % verification) and the
threshold were chosen on 4 people-folds of s1-s20 (`python -m experiments.faces folds`).

Usage: python -m experiments.faces train --workdir=DIR
[--config=experiments/configs/faces_att.py:seed=1,task.loss=triplet]; the data folder is
../shared/data/att_faces unless --data=DIR (or dataset=faces:DIR,task.train_data=DIR).
"""

import ml_collections

from jaxcnn.tasks.faces import DEFAULTS
from jaxcnn.train import default_config, override

DATA = "../shared/data/att_faces"


def get_config(arg: str | None = None):
    config = default_config()
    config.model = "lenet5"
    config.dataset = f"faces:{DATA}"
    config.image_size = (64, 64)
    config.normalize = False  # images stay in [0, 1]: the same input at train and evaluate
    config.batch_size = 40  # P = 10 people x K = 4 images
    config.eval_batch_size = 500
    config.train_steps = 1500
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.schedule = "cosine"
    config.warmup_steps = 100
    config.log_every_steps = 100
    config.eval_every_steps = None  # the held-out people are evaluated once, at the end
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 1
    config.task = ml_collections.ConfigDict(dict(DEFAULTS))
    config.task.loss = "arcface"  # s = 16, m = 0.3 (task defaults)
    config.task.mining = "semi_hard"  # used by task.loss=triplet / arcface+triplet
    config.task.margin = 0.2
    config.task.augment = "faces"  # flip + small random affine + brightness/contrast
    config.task.flip_average = True  # inference only: embed image + mirror image
    config.task.head = "flatten"
    config.task.train_data = DATA
    config.task.train_people = "s1-s20"
    config.task.eval_people = "s21-s30"
    # The mean of the 4 folds' best verification thresholds (1.0962 +- 0.1836).
    config.task.threshold = 1.0962
    config.task.threshold_source = ("4 people-folds of s1-s20 (mean of the folds best "
                                    "verification thresholds)")
    return override(config, arg)
