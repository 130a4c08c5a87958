"""The "tfds" source: deterministic, per-process tf.data pipelines.

Datasets and their default splits (used when config.data.train_split /
eval_split are empty):

  cifar10                            train / test
  cifar10_corrupted/<name>_<sev>     evaluation only: test (training raises)
  oxford_flowers102                  train+validation (2,040) / test (6,149):
                                     the official train split (1,020) is
                                     smaller than test, so train+validation
                                     trains, as is common practice
  celeb_a                            train / test; label = attributes[attribute]
  celeb_a_hq                         train[:90%] / train[90%:] (TFDS has one
                                     split); label from an attribute file
  any other name                     train / test; label = config.label_key

CelebA-HQ: TFDS cannot download it. Build the images with the
progressive_growing_of_gans instructions and put data<R>x<R>.tar in a folder,
set config.data.manual_dir to it and config.data.name="celeb_a_hq/<R>" (e.g.
celeb_a_hq/256); TFDS prepares it into data_dir on first use. Its examples
carry no labels, so the binary label config.data.attribute is read from
config.data.attributes_file (default <manual_dir>/CelebAMask-HQ-attribute-
anno.txt, the CelebAMask-HQ format: a count line, a line of 40 attribute
names, then "<index>.jpg v1 ... v40" with values 1/-1), matched by the
integer in each image's file name (the CelebA-HQ index).

Determinism and resume: files are read in order (shuffle_files=False),
examples are shuffled by tf.data with the run's seed (reshuffled each epoch,
repeated), then enumerated; example k of this process's stream is augmented
with stateless random ops seeded by (seed, k * process_count + index), so
start_step=s skips s * local_batch encoded examples (images are decoded after
the skip, which makes it cheap) and yields exactly the batches s, s+1, ... of
a run from 0. Each process reads tfds.split_for_jax_process(split) (even
shards, remainder dropped for training). Evaluation images are resized
(shorter side, antialiased bilinear) and centre-cropped to image_size.
Per-channel mean/std are measured on the first config.data.stats_examples
training examples (eval-only datasets: evaluation examples).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from experiments import storage
from experiments.input_pipeline import tfds_augment as preprocess
from experiments.input_pipeline.spec import DataSpec

DEFAULT_SPLITS = {
  "cifar10": ("train", "test"),
  "cifar10_corrupted": ("", "test"),
  "oxford_flowers102": ("train+validation", "test"),
  "celeb_a": ("train", "test"),
  "celeb_a_hq": ("train[:90%]", "train[90%:]"),
}
EVAL_ONLY = ("cifar10_corrupted",)
CELEBA_HQ_ATTRIBUTES = "CelebAMask-HQ-attribute-anno.txt"
_AUTOTUNE = tf.data.AUTOTUNE


class TfdsSource(NamedTuple):
  """A prepared TFDS dataset and how to read it."""

  builder: Any
  splits: dict[str, str]  # role ("train", "eval", "validation") -> TFDS split
  num_classes: int
  label_table: np.ndarray | None  # celeb_a_hq: label per CelebA-HQ index
  encoded_image: bool


def base_name(name: str) -> str:
  """ "celeb_a_hq/256:2.0.0" -> "celeb_a_hq"."""
  return name.split("/")[0].split(":")[0]


def _not_available(spec: DataSpec, builder, why: str) -> FileNotFoundError:
  manual = (
    " It needs a manual download: set config.data.manual_dir to the folder "
    "with the files named in the TFDS catalog page of the dataset."
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    else ""
  )
  return FileNotFoundError(
    f"TFDS dataset {spec.name!r} is not prepared in data_dir="
    f"{spec.data_dir!r} and could not be prepared here ({why}). Run "
    "tfds.builder(name, data_dir=...).download_and_prepare() on a machine "
    "with internet and set config.data.data_dir to that folder, or use "
    "config.data.source='npz' with a local file." + manual
  )


def _builder(spec: DataSpec):
  try:
    builder = tfds.builder(spec.name, data_dir=spec.data_dir)
  except (tfds.core.DatasetNotFoundError, ValueError, KeyError) as e:
    raise ValueError(
      f"Unknown TFDS dataset config.data.name={spec.name!r} "
      f"({str(e).splitlines()[0]}). Use a "
      "TFDS name such as 'cifar10', 'cifar10_corrupted/gaussian_noise_3', "
      "'oxford_flowers102', 'celeb_a', 'celeb_a_hq/256'."
    ) from e
  if not builder.is_prepared():
    if not spec.download:
      raise _not_available(spec, builder, "config.data.download is False")
    config = tfds.download.DownloadConfig(manual_dir=spec.manual_dir)
    try:
      builder.download_and_prepare(download_config=config)
    except Exception as e:  # noqa: BLE001 - any TFDS failure means "absent".
      raise _not_available(spec, builder, f"{type(e).__name__}: {e}") from e
  return builder


def _carve(split: str, fraction: float) -> tuple[str, str]:
  parts = [p.strip() for p in split.split("+")]
  if any("[" in p for p in parts):
    raise ValueError(
      f"config.data.validation_fraction > 0 needs plain split names in "
      f"config.data.train_split, got {split!r}; slice it yourself instead "
      "(e.g. train_split='train[:90%]', eval_split='train[90%:]')."
    )
  pct = f"{100.0 * (1.0 - fraction):.6g}"
  return (
    "+".join(f"{p}[:{pct}%]" for p in parts),
    "+".join(f"{p}[{pct}%:]" for p in parts),
  )


def _read_attribute_file(spec: DataSpec) -> np.ndarray:
  path = spec.attributes_file or os.path.join(
    spec.manual_dir or "", CELEBA_HQ_ATTRIBUTES
  )
  if not storage.path(path).exists():
    raise FileNotFoundError(
      f"celeb_a_hq has no labels in TFDS; the label {spec.attribute!r} is "
      f"read from an attribute file, not found at {path!r}. Set "
      "config.data.attributes_file (or put CelebAMask-HQ-attribute-anno.txt"
      " in config.data.manual_dir)."
    )
  lines = storage.path(path).read_text().split("\n")
  names = lines[1].split()
  if spec.attribute not in names:
    raise ValueError(
      f"config.data.attribute={spec.attribute!r} is not in {path}; valid "
      f"values: {names}."
    )
  column = names.index(spec.attribute) + 1
  rows = [line.split() for line in lines[2:] if line.strip()]
  index = np.array([int("".join(filter(str.isdigit, r[0]))) for r in rows])
  table = np.zeros(index.max() + 1, np.int32)
  table[index] = [int(r[column]) > 0 for r in rows]
  return table


def _labels(spec: DataSpec, builder) -> tuple[int, np.ndarray | None]:
  features = builder.info.features
  kind = base_name(spec.name)
  if kind == "celeb_a_hq":
    return 2, _read_attribute_file(spec)
  if kind == "celeb_a":
    names = list(features["attributes"].keys())
    if spec.attribute not in names:
      raise ValueError(
        f"config.data.attribute={spec.attribute!r} is not a CelebA "
        f"attribute; valid values: {names}."
      )
    return 2, None
  if spec.label_key not in features or not isinstance(
    features[spec.label_key], tfds.features.ClassLabel
  ):
    raise ValueError(
      f"config.data.label_key={spec.label_key!r} is not a ClassLabel "
      f"feature of {spec.name!r}; its features: {list(features.keys())}."
    )
  return features[spec.label_key].num_classes, None


@functools.lru_cache(maxsize=8)
def open_source(spec: DataSpec) -> TfdsSource:
  """Prepares (or finds) the TFDS dataset of `spec` and checks its features.

  Raises:
    ValueError: unknown dataset name, image_key / label_key / attribute not
      in the dataset, num_classes mismatch, or a split that does not fit.
    FileNotFoundError: the dataset is not prepared and cannot be (offline,
      or a manual download is missing).
  """
  builder = _builder(spec)
  features = builder.info.features
  if spec.image_key not in features:
    raise ValueError(
      f"config.data.image_key={spec.image_key!r} is not a feature of "
      f"{spec.name!r}; its features: {list(features.keys())}."
    )
  num_classes, table = _labels(spec, builder)
  if spec.num_classes and spec.num_classes != num_classes:
    raise ValueError(
      f"config.data.num_classes={spec.num_classes} but {spec.name!r} has "
      f"{num_classes} classes; set num_classes to {num_classes} or 0."
    )
  default_train, default_eval = DEFAULT_SPLITS.get(
    base_name(spec.name), ("train", "test")
  )
  splits = {
    "train": spec.train_split or default_train,
    "eval": spec.eval_split or default_eval,
  }
  if spec.validation_fraction > 0 and splits["train"]:
    splits["train"], splits["validation"] = _carve(
      splits["train"], spec.validation_fraction
    )
  encoded = isinstance(features[spec.image_key], tfds.features.Image)
  return TfdsSource(builder, splits, num_classes, table, encoded)


def num_examples(source: TfdsSource, split: str) -> int:
  """Examples in a TFDS split (also sub-splits such as "train[:90%]")."""
  try:
    return int(source.builder.info.splits[split].num_examples)
  except (KeyError, ValueError, TypeError):
    # No split metadata (e.g. under tfds.testing.mock_data): count.
    ds = source.builder.as_dataset(split=split)
    count = int(ds.cardinality())
    return count if count >= 0 else int(ds.reduce(0, lambda c, _: c + 1))


def _read(source: TfdsSource, spec: DataSpec, split) -> tf.data.Dataset:
  """(image, label) pairs in file order; images still encoded if possible."""
  options = tf.data.Options()
  options.deterministic = True
  decoders = (
    {spec.image_key: tfds.decode.SkipDecoding()}
    if source.encoded_image
    else None
  )
  ds = source.builder.as_dataset(
    split=split,
    shuffle_files=False,
    decoders=decoders,
    read_config=tfds.ReadConfig(options=options),
  )
  kind = base_name(spec.name)
  table = (
    None if source.label_table is None else tf.constant(source.label_table)
  )

  def select(ex):
    if kind == "celeb_a_hq":
      name = tf.strings.split(ex["image/filename"], "/")[-1]
      digits = tf.strings.regex_replace(name, r"\D", "")
      label = tf.gather(table, tf.strings.to_number(digits, tf.int64))
    elif kind == "celeb_a":
      label = ex["attributes"][spec.attribute]
    else:
      label = ex[spec.label_key]
    return ex[spec.image_key], tf.cast(label, tf.int32)

  return ds.map(select, num_parallel_calls=_AUTOTUNE)


@functools.lru_cache(maxsize=8)
def channel_stats(spec: DataSpec) -> tuple[tuple, tuple]:
  """Per-channel mean/std ([0, 1] units) over the first stats_examples."""
  source = open_source(spec)
  split = source.splits["train"] or source.splits["eval"]
  ds = _read(source, spec, split).take(spec.stats_examples)
  ds = ds.map(
    lambda x, y: preprocess.eval_image(x, source.encoded_image, spec) / 255
  )
  total = np.zeros(spec.channels)
  total_sq = np.zeros(spec.channels)
  count = 0
  for batch in ds.batch(256).as_numpy_iterator():
    pixels = batch.reshape(-1, spec.channels).astype(np.float64)
    total += pixels.sum(0)
    total_sq += (pixels**2).sum(0)
    count += len(pixels)
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
  return tuple(mean.tolist()), tuple(np.maximum(std, 1e-6).tolist())


def train_iterator(
  spec: DataSpec,
  *,
  batch_size: int,
  local: int,
  seed: int,
  start_step: int,
  process_index: int,
  process_count: int,
  normalize: bool,
) -> Iterator[dict[str, np.ndarray]]:
  """Infinite per-process training batches (see module docstring)."""
  source = open_source(spec)
  if base_name(spec.name) in EVAL_ONLY or not source.splits["train"]:
    raise ValueError(
      f"{spec.name!r} is an evaluation-only dataset (corruption "
      "benchmark); train on its clean counterpart (e.g. 'cifar10') and use "
      "it in eval_batches only."
    )
  del batch_size
  mean, std = channel_stats(spec)
  split = tfds.split_for_jax_process(
    source.splits["train"],
    process_index=process_index,
    process_count=process_count,
    drop_remainder=True,
  )
  ds = _read(source, spec, split)
  ds = ds.shuffle(spec.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat().enumerate().skip(start_step * local)

  def prepare(index, example):
    image, label = example
    key = tf.stack(
      [tf.constant(seed, tf.int64), index * process_count + process_index]
    )
    image = preprocess.decode(image, source.encoded_image, spec.channels)
    image = preprocess.augment(image, key, spec)
    return preprocess.finish(image, mean, std, normalize), label

  ds = ds.map(prepare, num_parallel_calls=_AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(_AUTOTUNE)
  return ({"image": x, "label": y} for x, y in ds.as_numpy_iterator())


def eval_iterator(
  spec: DataSpec,
  *,
  split: str,
  local: int,
  process_index: int,
  process_count: int,
  normalize: bool,
  max_examples: int | None,
) -> Iterator[dict[str, np.ndarray]]:
  """One padded, masked pass over this process's shard of a split."""
  source = open_source(spec)
  name = source.splits[split]
  if not name:
    raise ValueError(
      f"{spec.name!r} has no {split!r} split (evaluation-only dataset); "
      "use split='eval'."
    )
  total = num_examples(source, name)
  if max_examples is None:
    ds = _read(
      source,
      spec,
      tfds.split_for_jax_process(
        name, process_index=process_index, process_count=process_count
      ),
    )
  else:
    total = min(total, max_examples)
    ds = (
      _read(source, spec, name).take(total).shard(process_count, process_index)
    )
  mean, std = channel_stats(spec)
  ds = ds.map(
    lambda x, y: (
      preprocess.finish(
        preprocess.eval_image(x, source.encoded_image, spec),
        mean,
        std,
        normalize,
      ),
      y,
    ),
    num_parallel_calls=_AUTOTUNE,
  )
  num_batches = math.ceil(math.ceil(total / process_count) / local)
  return _padded(
    ds.batch(local).as_numpy_iterator(),
    num_batches,
    local,
    (spec.image_size, spec.image_size, spec.channels),
  )


def _padded(batches, num_batches: int, local: int, shape):
  for _ in range(num_batches):
    x, y = next(
      batches, (np.zeros((0, *shape), np.float32), np.zeros((0,), np.int32))
    )
    n = len(y)
    mask = np.arange(local) < n
    yield {
      "image": np.concatenate([x, np.zeros((local - n, *shape), np.float32)]),
      "label": np.concatenate([y, np.zeros(local - n, np.int32)]),
      "mask": mask,
    }
