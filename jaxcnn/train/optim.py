"""optax optimisers and learning-rate schedules built from a config."""

from __future__ import annotations

import ml_collections
import optax

from jaxcnn.train.config import OPTIMIZERS, SCHEDULES, to_steps


def make_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """Linear warm-up, then constant / cosine / step decay of config.learning_rate."""
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.schedule!r}; expected one of {SCHEDULES}")
    base = float(config.learning_rate)
    warmup = min(to_steps(config, "warmup", steps_per_epoch), total_steps)
    decay_steps = max(1, total_steps - warmup)
    if config.schedule == "constant":
        after = optax.constant_schedule(base)
    elif config.schedule == "cosine":
        after = optax.cosine_decay_schedule(base, decay_steps)
    else:
        boundaries = {int(round(e * steps_per_epoch)) - warmup: config.decay_factor
                      for e in config.decay_epochs}
        after = optax.piecewise_constant_schedule(base, boundaries)
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), after], [warmup])


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """The config's optimiser with optional gradient clipping and (decoupled) weight decay."""
    name = config.optimizer
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    chain = []
    if config.grad_clip_norm:
        chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if name == "adamw":
        chain.append(optax.adamw(schedule, weight_decay=config.weight_decay))
        return optax.chain(*chain)
    if config.weight_decay:  # L2 on the loss gradient, as torch.optim.SGD's weight_decay
        chain.append(optax.add_decayed_weights(config.weight_decay))
    if name == "adam":
        chain.append(optax.adam(schedule))
    else:
        momentum = None if name == "sgd" else config.momentum
        chain.append(optax.sgd(schedule, momentum=momentum, nesterov=name == "nesterov"))
    return optax.chain(*chain)
