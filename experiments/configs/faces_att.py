"""Face embeddings on AT&T/ORL (README "Faces"): LeNet-5 trunk flattened to a 64-d embedding,
64x64 grayscale, trained on s1-s20, evaluated on s21-s30; every setting chosen by the
people-folds of s1-s20 (`python -m experiments.faces folds`).

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
    config.task.loss = "triplet"
    config.task.mining = "semi_hard"
    config.task.margin = 0.2
    config.task.augment = "faces"  # flip + small random affine + brightness/contrast
    config.task.flip_average = True  # inference only: embed image + mirror image
    config.task.head = "flatten"
    config.task.train_data = DATA
    config.task.train_people = "s1-s20"
    config.task.eval_people = "s21-s30"
    return override(config, arg)
