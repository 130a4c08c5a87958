"""Batch iterators over in-memory uint8 arrays (random access by step).

Training order: epoch e visits the training examples in the order
`np.random.default_rng([seed, 0, e]).permutation(n)`; an epoch has
n // batch_size global batches (the remainder of the permutation is dropped);
global step s is batch s % steps_per_epoch of epoch s // steps_per_epoch.
Process p takes rows [p * b, (p + 1) * b) of each global batch
(b = batch_size // process_count). Augmentation parameters of step s come
from `np.random.default_rng([seed, 1, s])`, drawn for the whole global batch.
So any step can be produced directly: train_batches(start_step=k) equals
batches k, k+1, ... of a run from 0, and the union of the processes' rows
equals the single-process batch.

Evaluation: the first min(n, max_examples) examples of the split in stored
order, divided into process_count contiguous shards as tfds.even_splits does
(the first n % process_count shards get one extra example); every process
yields ceil(ceil(n / process_count) / b) batches (equal counts, as SPMD
collectives need), padding rows (copies of row 0) carry mask=False.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from experiments.input_pipeline import numpy_augment as augment_lib


def _to_float(
  images: np.ndarray,
  mean: Sequence[float],
  std: Sequence[float],
  normalize: bool,
) -> np.ndarray:
  x = images.astype(np.float32) * np.float32(1.0 / 255.0)
  if normalize:
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
  return x


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order in which epoch `epoch` visits n training examples."""
  return np.random.default_rng([seed, 0, epoch]).permutation(n)


def step_rng(seed: int, step: int) -> np.random.Generator:
  """The generator of the augmentation parameters of global step `step`."""
  return np.random.default_rng([seed, 1, step])


def train_iterator(
  images: np.ndarray,
  labels: np.ndarray,
  *,
  batch_size: int,
  seed: int,
  start_step: int,
  process_index: int,
  process_count: int,
  augment: str,
  mean: Sequence[float],
  std: Sequence[float],
  normalize: bool,
) -> Iterator[dict[str, np.ndarray]]:
  """Infinite training batches of this process (see module docstring)."""
  n = len(labels)
  steps_per_epoch = n // batch_size
  if steps_per_epoch == 0:
    raise ValueError(
      f"batch_size={batch_size} is larger than the training split "
      f"({n} examples); use a smaller batch_size."
    )
  local = batch_size // process_count
  row_offset = process_index * local
  return _train_generator(
    images,
    labels,
    steps_per_epoch,
    batch_size,
    local,
    row_offset,
    seed,
    start_step,
    augment,
    mean,
    std,
    normalize,
  )


def _train_generator(
  images,
  labels,
  steps_per_epoch,
  batch_size,
  local,
  row_offset,
  seed,
  start_step,
  augment,
  mean,
  std,
  normalize,
):
  epoch, order = -1, None
  step = start_step
  while True:
    step_epoch, within = divmod(step, steps_per_epoch)
    if step_epoch != epoch:
      epoch, order = (
        step_epoch,
        epoch_permutation(seed, step_epoch, len(labels)),
      )
    start = within * batch_size + row_offset
    idx = order[start : start + local]
    batch = images[idx]
    batch = augment_lib.augment_batch(
      batch, step_rng(seed, step), augment, batch_size, row_offset
    )
    yield {
      "image": _to_float(batch, mean, std, normalize),
      "label": labels[idx],
    }
    step += 1


def shard_bounds(n: int, process_index: int, process_count: int):
  """[start, stop) of a process's contiguous shard (tfds.even_splits rule)."""
  base, extra = divmod(n, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (1 if process_index < extra else 0)


def eval_iterator(
  images: np.ndarray,
  labels: np.ndarray,
  *,
  batch_size: int,
  process_index: int,
  process_count: int,
  mean: Sequence[float],
  std: Sequence[float],
  normalize: bool,
  max_examples: int | None,
) -> Iterator[dict[str, np.ndarray]]:
  """One padded, masked pass over this process's shard of a split."""
  n = len(labels) if max_examples is None else min(len(labels), max_examples)
  local = batch_size // process_count
  start, stop = shard_bounds(n, process_index, process_count)
  per_process = -(-n // process_count)
  num_batches = -(-per_process // local)
  for b in range(num_batches):
    idx = np.arange(start + b * local, start + (b + 1) * local)
    mask = idx < stop
    idx = np.where(mask, idx, 0)
    yield {
      "image": _to_float(images[idx], mean, std, normalize),
      "label": np.where(mask, labels[idx], 0).astype(np.int32),
      "mask": mask,
    }
