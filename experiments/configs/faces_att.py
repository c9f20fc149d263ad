"""Triplet-trained face embeddings on AT&T/ORL: LeNet-5 trunk flattened to a 64-d embedding,
64x64 grayscale, s1-s20, semi-hard mining (margin 0.2), the 'faces' augmentation, 1,500 steps
of 10 people x 4 images (README "Faces": 95.4 % verification on s21-s30, 3 seeds).

Usage: python -m experiments.faces train --data=../shared/data/att_faces --workdir=DIR
[--config=experiments/configs/faces_att.py:task.mining=semi_hard,seed=1].
"""

import ml_collections

from jaxcnn.faces import TASK_DEFAULTS
from jaxcnn.train import default_config, override


def get_config(arg: str | None = None):
    config = default_config()
    config.model = "lenet5"
    config.dataset = "faces:../shared/data/att_faces"
    config.image_size = (64, 64)
    config.normalize = False  # images stay in [0, 1]: the same input at train and evaluate
    config.batch_size = 40  # P = 10 people x K = 4 images
    config.eval_batch_size = 500  # the whole held-out set in one batch (nn_accuracy)
    config.train_steps = 1500
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.schedule = "cosine"
    config.warmup_steps = 100
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 1
    config.task = ml_collections.ConfigDict(dict(TASK_DEFAULTS))
    config.task.mining = "semi_hard"
    config.task.margin = 0.2
    config.task.augment = "faces"  # flip + small random affine + brightness/contrast
    config.task.flip_average = True  # inference only: embed image + mirror image
    config.task.head = "flatten"  # trunk feature map flattened -> linear 64-d (see README)
    config.task.train_people = "s1-s20"
    config.task.eval_people = "s21-s30"
    return override(config, arg)
