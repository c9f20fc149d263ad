"""The training state: everything a checkpoint must hold to resume bit-for-bit."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """Parameters, BatchNorm statistics, optimiser state, step and the base dropout key."""

    step: jax.Array  # int32 scalar: optimiser steps taken
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key data, so checkpoints hold plain arrays
