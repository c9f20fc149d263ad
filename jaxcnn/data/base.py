"""The dataset interface every task reads and the Grain pipeline behind it.

A dataset is any object with the attributes and methods of `Dataset` below. The training loop
feeds `train_batches` to the train step and `eval_batches` to the eval step; every key of a
batch becomes a global array sharded along the batch axis, and the key `image` is the model's
input. A dataset may also define

    device_transform(batch: dict[str, jax.Array], rng: jax.Array | None, train: bool)
        -> dict[str, jax.Array]

which the loop calls inside the jit-compiled steps, before the model: augmentation (or a
gather from device-resident arrays) on the accelerator. In the train step `rng` is a key
derived from (config.seed, step) only, so a resumed run augments exactly as an uninterrupted
one; in the eval step `rng` is None and `train` is False.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import grain
import numpy as np
from absl import flags

Batch = dict[str, np.ndarray]

# Keys the loop itself reads: the model input, and eval's padding mask and example order.
IMAGE, MASK, INDEX = "image", "mask", "index"


@runtime_checkable
class Dataset(Protocol):
    """What the training loop needs from a dataset (see the module docstring)."""

    name: str
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one model input."""

    @property
    def num_train(self) -> int:
        """Training examples (over all hosts)."""

    @property
    def num_eval(self) -> int:
        """Evaluation examples (over all hosts), before padding."""

    @property
    def mean(self) -> Sequence[float]:
        """Per-channel mean of [0, 1] training pixels (used when config.normalize)."""

    @property
    def std(self) -> Sequence[float]:
        """Per-channel standard deviation of [0, 1] training pixels."""

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """The keys of a training batch (eval batches add `mask`, and `index` where known)."""

    def steps_per_epoch(self, global_batch: int) -> int:
        """Train steps in one pass over the training split at this global batch size."""

    def train_batches(
        self, global_batch: int, *, seed: int, start_step: int = 0,
        process_index: int = 0, process_count: int = 1, workers: int = 0,
    ) -> Iterator[Batch]:
        """Endless local batches; batch k is a pure function of (seed, k), so runs resume.

        The iterator may have Grain's get_state/set_state (the loop saves the state with the
        train state); `workers` is the number of host processes preparing batches.
        """

    def eval_batches(
        self, global_batch: int, *, process_index: int = 0, process_count: int = 1
    ) -> Iterator[Batch]:
        """Every eval example once, padded to full local batches with a float `mask`."""


class InMemorySplits:
    """Shapes and sizes of a dataset that holds its splits as arrays `x_train` and `x_test`
    (N, H, W, C); the dataset kinds in memory share these instead of each defining them."""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_eval(self) -> int:
        return len(self.x_test)

    def steps_per_epoch(self, global_batch: int) -> int:
        return max(1, self.num_train // global_batch)

    def check_train_batch(self, global_batch: int, process_count: int) -> None:
        check_batch(global_batch, self.num_train, process_count)


def local_batch_size(global_batch: int, process_count: int) -> int:
    """This process's share of a global batch (which must split evenly over processes)."""
    if global_batch < 1 or global_batch % process_count:
        raise ValueError(
            f"global batch size {global_batch} must be a positive multiple of the "
            f"{process_count} processes"
        )
    return global_batch // process_count


def check_batch(global_batch: int, num_examples: int, process_count: int) -> int:
    """This process's share of a global train batch, checked against the examples there are."""
    local = local_batch_size(global_batch, process_count)
    if global_batch > num_examples:
        raise ValueError(f"batch size {global_batch} exceeds the {num_examples} training examples")
    return local


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The permutation of training examples for one epoch: a pure function of (seed, epoch).

    Cached (read-only) for the steps of the same epoch; do not modify the returned array.
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order.flags.writeable = False
    return order


def step_rows(
    global_batch: int, num_examples: int, *, seed: int, step: int,
    process_index: int, process_count: int,
) -> tuple[int, int, np.ndarray]:
    """(epoch, index in epoch, this host's example rows) of global train step `step`.

    Batch k of epoch e takes rows k*B .. (k+1)*B of the epoch's permutation (the incomplete
    last batch is dropped); each host takes its contiguous slice of them.
    """
    local = check_batch(global_batch, num_examples, process_count)
    epoch, index = divmod(step, max(1, num_examples // global_batch))
    rows = epoch_order(seed, epoch, num_examples)[index * global_batch:(index + 1) * global_batch]
    return epoch, index, rows[process_index * local:(process_index + 1) * local]


def eval_rows(
    global_batch: int, num_examples: int, number: int, *, process_index: int,
    process_count: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(this host's example rows, mask of length local batch) of padded eval batch `number`.

    Global batch g holds examples g*B .. g*B+B-1 in order, host i the i-th slice, so the
    gathered batch lists examples in dataset order with padding at the end of each slice.
    """
    local = local_batch_size(global_batch, process_count)
    lo = number * global_batch + process_index * local
    rows = np.arange(lo, max(lo, min(lo + local, num_examples)))
    return rows, (np.arange(local) < len(rows)).astype(np.float32)


def pad_rows(array: np.ndarray, size: int, fill: float = 0) -> np.ndarray:
    """Pad `array` along its first axis to `size` rows of `fill`."""
    if len(array) > size:
        raise ValueError(f"cannot pad {len(array)} rows down to {size}")
    if len(array) == size:
        return array
    return np.concatenate([array, np.full((size - len(array), *array.shape[1:]), fill,
                                          array.dtype)])


def normalizer(mean: Sequence[float] | None, std: Sequence[float] | None) -> Callable[[Any], Any]:
    """x -> (x - mean) / std per channel (identity when mean is None): jit-able."""
    if mean is None:
        return lambda x: x
    import jax.numpy as jnp

    mean_, std_ = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    return lambda x: (x - mean_) / std_



# Far beyond any run: the train stream is endless, Grain's range needs a stop.
ENDLESS = 2**62


def read_batches(make_batch: Callable[[int], Batch], start: int, stop: int, *,
                 workers: int = 0, buffer: int = 4) -> Iterator[Batch]:
    """Grain iterator over make_batch(k) for k in [start, stop), in order.

    workers = 0: one background thread of this process computes up to `buffer` batches
    ahead. workers > 0: that many spawned processes (Grain's mp_prefetch) each compute every
    workers-th batch, interleaved back into order; `make_batch` and what it refers to (the
    dataset's arrays) are pickled to each worker once, when iteration starts.
    """
    if workers < 0:
        raise ValueError(f"data_workers must be >= 0; received {workers}")
    dataset = grain.MapDataset.range(start, stop).map(make_batch).to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=buffer if not workers else 2))
    if workers:
        if not flags.FLAGS.is_parsed():  # Grain reads its absl flags when it starts workers
            flags.FLAGS.mark_as_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=workers, per_worker_buffer_size=max(1, buffer // workers)))
    return iter(dataset)


class StepIterator(grain.DatasetIterator):
    """The endless train stream: batch k = make_batch(k); its state is the next step only.

    The state {"next_step": k} does not depend on the worker or process count (the batch of a
    step is a pure function of the step), so a checkpoint restores into any of them.
    """

    def __init__(self, make_batch: Callable[[int], Batch], start_step: int = 0, *,
                 workers: int = 0, buffer: int = 4):
        super().__init__()
        self._make_batch, self._workers, self._buffer = make_batch, workers, buffer
        self._next_step = start_step
        self._reader: Iterator[Batch] | None = None

    def __next__(self) -> Batch:
        if self._reader is None:
            self._reader = read_batches(self._make_batch, self._next_step, ENDLESS,
                                        workers=self._workers, buffer=self._buffer)
        batch = next(self._reader)
        self._next_step += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"next_step": self._next_step}

    def set_state(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("next_step"), int):
            raise ValueError(f"a train iterator state is {{'next_step': int}}; received {state!r}")
        self.close()
        self._next_step = state["next_step"]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class StepBatches:
    """`train_batches` and `eval_batches` (base.Dataset) on Grain for a dataset that defines

        check_train_batch(global_batch, process_count) -> None   (raise on a bad size)
        train_batch(global_batch, seed, step, process_index, process_count) -> Batch
        eval_examples(rows) -> Batch                              (unpadded eval examples)
        num_eval: int

    Batch k of the train stream is train_batch(.., k, ..), a pure function of (seed, k).
    """

    def train_batches(
        self, global_batch: int, *, seed: int, start_step: int = 0,
        process_index: int = 0, process_count: int = 1, workers: int = 0,
    ) -> StepIterator:
        """Endless local batches from `start_step` on, read by `workers` Grain processes."""
        self.check_train_batch(global_batch, process_count)
        return StepIterator(functools.partial(
            self.train_batch, global_batch, seed, process_index=process_index,
            process_count=process_count), start_step, workers=workers)

    def eval_batch(self, global_batch: int, number: int, *, process_index: int = 0,
                   process_count: int = 1) -> Batch:
        """Padded eval batch `number`: its examples, `index` (dataset rows) and `mask`."""
        rows, mask = eval_rows(global_batch, self.num_eval, number,
                               process_index=process_index, process_count=process_count)
        batch = {**self.eval_examples(rows), INDEX: rows.astype(np.int32)}
        batch = {key: pad_rows(value, len(mask)) for key, value in batch.items()}
        return {**batch, MASK: mask}

    def eval_batches(
        self, global_batch: int, *, process_index: int = 0, process_count: int = 1
    ) -> Iterator[Batch]:
        """Every eval example once, in order; padded, `mask` marks real rows, `index` rows."""
        local_batch_size(global_batch, process_count)
        return read_batches(functools.partial(
            self.eval_batch, global_batch, process_index=process_index,
            process_count=process_count), 0, -(-self.num_eval // global_batch))
