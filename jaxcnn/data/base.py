"""The dataset interface every task reads, the batching helpers behind it, and the prefetcher.

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

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

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
        process_index: int = 0, process_count: int = 1,
    ) -> Iterator[Batch]:
        """Endless local batches; batch k is a pure function of (seed, k), so runs resume."""

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


def local_batch_size(global_batch: int, process_count: int) -> int:
    """This process's share of a global batch (which must split evenly over processes)."""
    if global_batch < 1 or global_batch % process_count:
        raise ValueError(
            f"global batch size {global_batch} must be a positive multiple of the "
            f"{process_count} processes"
        )
    return global_batch // process_count


def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The permutation of training examples for one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def train_rows(
    global_batch: int, num_examples: int, *, seed: int, start_step: int,
    process_index: int, process_count: int,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Endless (epoch, index in epoch, this host's example rows) from `start_step` on.

    Batch k of epoch e takes rows k*B .. (k+1)*B of the epoch's permutation (the incomplete
    last batch is dropped); each host takes its contiguous slice of them.
    """
    local = local_batch_size(global_batch, process_count)
    if global_batch > num_examples:
        raise ValueError(f"batch size {global_batch} exceeds the {num_examples} training examples")
    per_epoch = max(1, num_examples // global_batch)
    step, order_epoch, order = start_step, None, None
    while True:
        epoch, index = divmod(step, per_epoch)
        if epoch != order_epoch:
            order_epoch, order = epoch, epoch_order(seed, epoch, num_examples)
        rows = order[index * global_batch : (index + 1) * global_batch]
        yield epoch, index, rows[process_index * local : (process_index + 1) * local]
        step += 1


def eval_rows(
    global_batch: int, num_examples: int, *, process_index: int, process_count: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(this host's example rows, mask of length local batch) for each padded eval batch.

    Global batch g holds examples g*B .. g*B+B-1 in order, host i the i-th slice, so the
    gathered batch lists examples in dataset order with padding at the end of each slice.
    """
    local = local_batch_size(global_batch, process_count)
    for start in range(0, num_examples, global_batch):
        lo = start + process_index * local
        rows = np.arange(lo, min(lo + local, num_examples))
        yield rows, (np.arange(local) < len(rows)).astype(np.float32)


def pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad `array` along its first axis to `size` rows."""
    if len(array) > size:
        raise ValueError(f"cannot pad {len(array)} rows down to {size}")
    if len(array) == size:
        return array
    return np.concatenate([array, np.zeros((size - len(array), *array.shape[1:]), array.dtype)])


def normalizer(mean: Sequence[float] | None, std: Sequence[float] | None) -> Callable[[Any], Any]:
    """x -> (x - mean) / std per channel (identity when mean is None): jit-able."""
    if mean is None:
        return lambda x: x
    import jax.numpy as jnp

    mean_, std_ = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    return lambda x: (x - mean_) / std_


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Produce host batches on a background thread so the step never waits on numpy.

    Closing the returned generator stops the thread and closes `iterator` (a tf.data
    iterator left open at interpreter exit can hang it). The thread prepares host batches
    only: a device transfer made there would queue behind the running step and be counted
    as waiting for data.
    """
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put(item):
                    break
            else:
                put(done)
        except BaseException as error:  # surface pipeline errors in the training thread
            put(error)
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)
