"""The `config.data` section: its fields, defaults and validation.

The fields are fixed by the project's cross-module contract (see
`experiments.input_pipeline`). A few optional fields extend it; when absent
they take the defaults below:

* `split_seed` (0): seed of the validation carve (independent of the training
  seed, so every run of a sweep sees the same validation examples).
* `download` (True): let TFDS download and prepare a dataset that is missing
  from `data_dir`; False fails fast with instructions instead.
* `stats_examples` (1024): number of TFDS training examples over which the
  per-channel mean/std are measured (in-memory sources use all of train).
* `attributes_file` (None): CelebA-HQ attribute annotations (see
  `experiments.input_pipeline.tfds_source`).
* `train_examples` (0): when > 0, train on a class-stratified random subset
  of this many training examples (seeded by `split_seed`, drawn after any
  validation carve); in-memory sources (npz, sklearn_digits) only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_collections

SOURCES = ("sklearn_digits", "npz", "tfds")
AUGMENTATIONS = ("cifar", "imagenet", "none")
EVAL_SPLITS = ("eval", "train", "validation")


class DatasetInfo(NamedTuple):
  """What a model and a training loop need to know about a dataset.

  Attributes:
    num_classes: number of label values (labels are in [0, num_classes)).
    num_examples: examples per split: "train" (after any validation carve),
      "eval", and "validation" when one is carved from train.
    image_shape: (image_size, image_size, channels) of every batch row.
    mean: per-channel mean of the training images, pixel units in [0, 1].
    std: per-channel standard deviation, same units.
  """

  num_classes: int
  num_examples: dict[str, int]
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]


class DataSpec(NamedTuple):
  """A validated, hashable copy of `config.data` (the cache key of loaders)."""

  source: str
  name: str
  path: str
  data_dir: str | None
  manual_dir: str | None
  image_size: int
  channels: int
  train_split: str
  eval_split: str
  validation_fraction: float
  augment: str
  image_key: str
  label_key: str
  attribute: str
  num_classes: int
  shuffle_buffer: int
  split_seed: int
  download: bool
  stats_examples: int
  attributes_file: str | None
  train_examples: int = 0


_DEFAULTS: dict[str, Any] = dict(
  source="sklearn_digits",
  name="",
  path="",
  data_dir=None,
  manual_dir=None,
  image_size=16,
  channels=1,
  train_split="",
  eval_split="",
  validation_fraction=0.0,
  augment="none",
  image_key="image",
  label_key="label",
  attribute="Male",
  num_classes=0,
  shuffle_buffer=10_000,
  split_seed=0,
  download=True,
  stats_examples=1024,
  attributes_file=None,
  train_examples=0,
)


def get_default_data_config() -> ml_collections.ConfigDict:
  """Returns a `config.data` for the embedded default (sklearn digits).

  Every field of the contract is present; empty `train_split`/`eval_split`
  and `num_classes=0` mean "the dataset's own" (see `resolve_spec`).

  Returns:
    A ConfigDict that `train_batches` and `eval_batches` accept as is.

  Example:
    >>> cfg = get_default_data_config()
    >>> cfg.source, cfg.image_size, cfg.channels
    ('sklearn_digits', 16, 1)
  """
  return ml_collections.ConfigDict(dict(_DEFAULTS))


def _field(cfg: Any, key: str) -> Any:
  if isinstance(cfg, Mapping) or isinstance(cfg, ml_collections.ConfigDict):
    value = cfg.get(key, _DEFAULTS[key])
  else:
    value = getattr(cfg, key, _DEFAULTS[key])
  return _DEFAULTS[key] if value is None and key in _NOT_NONE else value


_NOT_NONE = ("name", "path", "train_split", "eval_split", "num_classes")


def _check_int(key: str, value: Any, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(f"{key} must be an int, got {value!r}.")
  if value < minimum:
    raise ValueError(f"{key} must be >= {minimum}, got {value}.")
  return value


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise ValueError(
      f"Unknown config.data.{key}={value!r}; valid values: {choices}."
    )
  return value


def resolve_spec(cfg: Any) -> DataSpec:
  """Validates `config.data` and returns it as a `DataSpec`.

  Args:
    cfg: the `config.data` ConfigDict (or any mapping / object with the
      contract's fields; missing optional fields take their defaults).

  Returns:
    The validated `DataSpec`.

  Raises:
    ValueError: a field has an invalid value (the message names the field
      and the valid values).
    TypeError: a field has the wrong type.
  """
  source = _check_choice("source", _field(cfg, "source"), SOURCES)
  augment = _check_choice("augment", _field(cfg, "augment"), AUGMENTATIONS)
  image_size = _check_int(
    "config.data.image_size", _field(cfg, "image_size"), 1
  )
  channels = _field(cfg, "channels")
  if channels not in (1, 3) or isinstance(channels, bool):
    raise ValueError(f"config.data.channels must be 1 or 3, got {channels!r}.")
  fraction = _field(cfg, "validation_fraction")
  if not isinstance(fraction, (int, float)) or not (
    math.isfinite(fraction) and 0.0 <= fraction < 1.0
  ):
    raise ValueError(
      "config.data.validation_fraction must be a number in [0, 1), got "
      f"{fraction!r}."
    )
  strings = {}
  for key in (
    "name",
    "path",
    "train_split",
    "eval_split",
    "image_key",
    "label_key",
    "attribute",
  ):
    value = _field(cfg, key)
    if not isinstance(value, str):
      raise TypeError(f"config.data.{key} must be a str, got {value!r}.")
    strings[key] = value
  optional_paths = {}
  for key in ("data_dir", "manual_dir", "attributes_file"):
    value = _field(cfg, key)
    if value is not None and not isinstance(value, str):
      raise TypeError(
        f"config.data.{key} must be a str or None, got {value!r}."
      )
    optional_paths[key] = value or None
  if source == "npz" and not strings["path"]:
    raise ValueError(
      "config.data.path is empty: source='npz' needs the path of an .npz "
      "file (e.g. '../shared/data/cifar10_jpeg.npz')."
    )
  if source == "tfds" and not strings["name"]:
    raise ValueError(
      "config.data.name is empty: source='tfds' needs a TFDS dataset name "
      "(e.g. 'cifar10', 'oxford_flowers102', 'celeb_a')."
    )
  train_examples = _check_int(
    "config.data.train_examples", _field(cfg, "train_examples"), 0
  )
  if train_examples and source == "tfds":
    raise ValueError(
      "config.data.train_examples > 0 needs an in-memory source ('npz' or "
      "'sklearn_digits'); for TFDS use a split slice such as "
      "train_split='train[:10000]' (not stratified)."
    )
  download = _field(cfg, "download")
  if not isinstance(download, bool):
    raise TypeError(f"config.data.download must be a bool, got {download!r}.")
  return DataSpec(
    source=source,
    augment=augment,
    image_size=image_size,
    channels=channels,
    validation_fraction=float(fraction),
    num_classes=_check_int(
      "config.data.num_classes", _field(cfg, "num_classes"), 0
    ),
    shuffle_buffer=_check_int(
      "config.data.shuffle_buffer", _field(cfg, "shuffle_buffer"), 1
    ),
    split_seed=_check_int(
      "config.data.split_seed", _field(cfg, "split_seed"), 0
    ),
    stats_examples=_check_int(
      "config.data.stats_examples", _field(cfg, "stats_examples"), 1
    ),
    download=download,
    train_examples=train_examples,
    **strings,
    **optional_paths,
  )


def check_batching(
  batch_size: int, process_index: int, process_count: int
) -> int:
  """Validates the global batch and process layout; returns the local batch.

  Raises:
    ValueError: batch_size < 1, process_count < 1, process_index outside
      [0, process_count), or batch_size not divisible by process_count.
  """
  _check_int("batch_size", batch_size, 1)
  _check_int("process_count", process_count, 1)
  if isinstance(process_index, bool) or not isinstance(process_index, int):
    raise TypeError(f"process_index must be an int, got {process_index!r}.")
  if not 0 <= process_index < process_count:
    raise ValueError(
      f"process_index={process_index} must be in [0, process_count="
      f"{process_count})."
    )
  if batch_size % process_count:
    raise ValueError(
      f"The global batch_size={batch_size} is not divisible by "
      f"process_count={process_count}; choose a batch_size that is a "
      "multiple of the number of processes."
    )
  return batch_size // process_count
