"""Input pipelines: the entry point of the data package.

`config.data` (its fields, defaults and checks: `spec.py`) picks a source:

* "sklearn_digits" (default): the 1,797 real 8x8 handwritten digits that ship
  with scikit-learn, split stratified 80/20, resized to image_size and
  converted to `channels`. No files, no network.
* "npz": a local file of JPEG bytes + offsets or of pixel arrays, e.g. the
  real CIFAR-10 at ../shared/data/cifar10_jpeg.npz.
* "tfds": any TFDS image-classification dataset.

Two backends serve them:

  ==================  ==========================================================
  module              what it owns
  ==================  ==========================================================
  spec.py             ``config.data``: defaults, checks, the resolved DataSpec
  numpy_files.py      reading npz / digits into arrays (formats, validation
                      carve, stratified training subsets, channel statistics)
  numpy_source.py     the in-memory source: seeded epoch order, batches,
                      per-process shards, padded evaluation batches
  numpy_augment.py    its augmentation (numpy crops and flips)
  tfds_source.py      the TFDS source: builders, splits, CelebA(-HQ) labels,
                      manual downloads, batches
  tfds_augment.py     its augmentation and decoding (tf.image)
  ==================  ==========================================================

Batches are numpy dicts: "image" float32 NHWC ([0, 1] pixels, or
(x - mean) / std with normalize=True, mean/std of the training images),
"label" int32 (B,), and for evaluation "mask" bool (B,). Training is
deterministic and resumable (`start_step`); each of `process_count`
processes yields its own batch_size // process_count rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from experiments.input_pipeline import numpy_files, numpy_source
from experiments.input_pipeline.spec import (
  DatasetInfo,
  check_batching,
  get_default_data_config,
  resolve_spec,
)

__all__ = [
  "DatasetInfo",
  "eval_batches",
  "get_default_data_config",
  "get_info",
  "train_batch_shapes",
  "train_batches",
  "validate_data_config",
]

Batch = dict[str, np.ndarray]


def validate_data_config(data_config: Any) -> None:
  """Checks every field of `config.data` eagerly.

  Args:
    data_config: the `config.data` ConfigDict.

  Raises:
    ValueError: a field has an invalid value (named in the message, with the
      valid values).
    TypeError: a field has the wrong type.

  Example:
    >>> cfg = get_default_data_config()
    >>> validate_data_config(cfg)
    >>> cfg.augment = "mixup"
    >>> validate_data_config(cfg)
    Traceback (most recent call last):
    ...
    ValueError: Unknown config.data.augment='mixup'; valid values: ...
  """
  resolve_spec(data_config)


def get_info(data_config: Any) -> DatasetInfo:
  """Returns class count, split sizes, image shape and channel statistics.

  Loads the data (in-memory sources) or opens the TFDS dataset.

  Args:
    data_config: the `config.data` ConfigDict.

  Returns:
    DatasetInfo; num_examples has "train", "eval" and, when
    validation_fraction > 0, "validation".

  Raises:
    ValueError, TypeError: bad config values or malformed data.
    FileNotFoundError: missing npz file or unprepared TFDS dataset.

  Example:
    >>> info = get_info(get_default_data_config())
    >>> info.num_classes, info.num_examples, info.image_shape
    (10, {'train': 1437, 'eval': 360}, (16, 16, 1))
  """
  spec = resolve_spec(data_config)
  shape = (spec.image_size, spec.image_size, spec.channels)
  if spec.source == "tfds":
    from experiments.input_pipeline import (
      tfds_source,
    )  # Lazy: imports tensorflow.

    source = tfds_source.open_source(spec)
    counts = {
      role: tfds_source.num_examples(source, split) if split else 0
      for role, split in source.splits.items()
    }
    mean, std = tfds_source.channel_stats(spec)
    return DatasetInfo(source.num_classes, counts, shape, mean, std)
  data = numpy_files.load_arrays(spec)
  counts = {role: len(split.labels) for role, split in data.splits.items()}
  return DatasetInfo(data.num_classes, counts, shape, data.mean, data.std)


def train_batch_shapes(
  info: DatasetInfo, batch_size: int
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """(global shape, dtype) of each field of a `train_batches` batch.

  Known before any data is read: the training step can be compiled from it
  while the first batch and the initial state are still being made.

  Example:
    >>> info = get_info(get_default_data_config())
    >>> train_batch_shapes(info, 8)["image"]
    ((8, 16, 16, 1), dtype('float32'))
  """
  return {
    "image": ((batch_size, *info.image_shape), np.dtype(np.float32)),
    "label": ((batch_size,), np.dtype(np.int32)),
  }


def _check_step(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {value!r}.")
  if value < 0:
    raise ValueError(f"{name} must be >= 0, got {value}.")
  return int(value)


def train_batches(
  data_config: Any,
  *,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  normalize: bool = True,
) -> Iterator[Batch]:
  """Infinite, augmented training batches of this process.

  Args:
    data_config: the `config.data` ConfigDict.
    batch_size: GLOBAL batch size; this process yields
      batch_size // process_count rows per batch.
    seed: data seed (order and augmentation).
    start_step: first global step to yield; batches equal the batches
      start_step, start_step + 1, ... of a run started at 0.
    process_index: this process, in [0, process_count).
    process_count: number of processes reading the data.
    normalize: True: (pixels - mean) / std; False: pixels in [0, 1].

  Returns:
    An iterator of dict(image=float32 (b, S, S, C), label=int32 (b,)).

  Raises:
    ValueError: bad config or arguments (batch_size not divisible by
      process_count, batch larger than the data, an evaluation-only
      dataset), malformed data.
    FileNotFoundError: missing npz file or unprepared TFDS dataset.

  Example:
    >>> it = train_batches(get_default_data_config(), batch_size=8, seed=0)
    >>> batch = next(it)
    >>> batch["image"].shape, batch["image"].dtype, batch["label"].dtype
    ((8, 16, 16, 1), dtype('float32'), dtype('int32'))
  """
  spec = resolve_spec(data_config)
  local = check_batching(batch_size, process_index, process_count)
  seed = _check_step("seed", seed)
  start_step = _check_step("start_step", start_step)
  if spec.source == "tfds":
    from experiments.input_pipeline import (
      tfds_source,
    )  # Lazy: imports tensorflow.

    return tfds_source.train_iterator(
      spec,
      batch_size=batch_size,
      local=local,
      seed=seed,
      start_step=start_step,
      process_index=process_index,
      process_count=process_count,
      normalize=normalize,
    )
  data = numpy_files.load_arrays(spec)
  train = data.splits["train"]
  return numpy_source.train_iterator(
    train.images,
    train.labels,
    batch_size=batch_size,
    seed=seed,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
    augment=spec.augment,
    mean=data.mean,
    std=data.std,
    normalize=normalize,
  )


def eval_batches(
  data_config: Any,
  *,
  split: str = "eval",
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
  normalize: bool = True,
  max_examples: int | None = None,
) -> Iterator[Batch]:
  """One pass over a split, no augmentation, padded and masked.

  Every process yields the same number of batches; over all processes each
  of the first max_examples examples (all when None) appears exactly once
  with mask True.

  Args:
    data_config: the `config.data` ConfigDict.
    split: "eval" (config.data.eval_split), "train" (the training split
      without the carved validation part) or "validation" (the carve; needs
      validation_fraction > 0).
    batch_size: GLOBAL batch size (divisible by process_count).
    process_index: this process, in [0, process_count).
    process_count: number of processes.
    normalize: as in train_batches.
    max_examples: evaluate only the first max_examples examples.

  Returns:
    An iterator of dict(image=float32, label=int32, mask=bool), each with
    batch_size // process_count rows.

  Raises:
    ValueError: bad config or arguments, unknown split, malformed data.
    FileNotFoundError: missing npz file or unprepared TFDS dataset.

  Example:
    >>> batches = list(eval_batches(get_default_data_config(), batch_size=64))
    >>> len(batches), int(sum(b["mask"].sum() for b in batches))
    (6, 360)
  """
  spec = resolve_spec(data_config)
  local = check_batching(batch_size, process_index, process_count)
  if max_examples is not None:
    max_examples = _check_step("max_examples", max_examples)
  valid = ("eval", "train") + (
    ("validation",) if spec.validation_fraction > 0 else ()
  )
  if split not in valid:
    raise ValueError(
      f"Unknown split={split!r}; valid values: {valid} ('validation' needs "
      "config.data.validation_fraction > 0)."
    )
  if spec.source == "tfds":
    from experiments.input_pipeline import (
      tfds_source,
    )  # Lazy: imports tensorflow.

    return tfds_source.eval_iterator(
      spec,
      split=split,
      local=local,
      process_index=process_index,
      process_count=process_count,
      normalize=normalize,
      max_examples=max_examples,
    )
  data = numpy_files.load_arrays(spec)
  chosen = data.splits[split]
  return numpy_source.eval_iterator(
    chosen.images,
    chosen.labels,
    batch_size=batch_size,
    process_index=process_index,
    process_count=process_count,
    mean=data.mean,
    std=data.std,
    normalize=normalize,
    max_examples=max_examples,
  )
