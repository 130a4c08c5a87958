"""In-memory sources ("npz", "sklearn_digits") decoded once into uint8 arrays.

Every split is decoded (JPEGs with Pillow), converted to the configured
channels (Pillow "L" luma, ITU-R 601-2, for 1; gray replicated for 3) and
resized to image_size x image_size (shorter side to image_size with Pillow's
antialiased bilinear filter, then a central square crop) once per process;
the result is cached in memory (functools.lru_cache keyed by the config and
the file's size and modification time).

npz formats (see ../shared/data/README.md), per split name s:
  JPEG: `s_jpeg` uint8 (concatenated files), `s_offsets` int (n + 1,
  strictly increasing, image i = s_jpeg[offsets[i]:offsets[i + 1]]), `y_s`.
  Pixels: `x_s` (n, H, W) or (n, H, W, C), uint8 or float in [0, 1]; `y_s`.
Labels must be integers in [0, num_classes); num_classes is config.data
.num_classes when > 0, else len(`classes`) when the file has that key, else
max(label) + 1.

Validation carve (validation_fraction > 0): sklearn's train_test_split with
random_state=config.data.split_seed, stratified by label (plain seeded
permutation if some class has fewer than 2 examples).

sklearn_digits: the 1,797 8x8 digits of sklearn.datasets.load_digits (values
0..16 scaled to 0..255), split stratified 80/20 into "train" (1,437) and
"test" (360) with train_test_split(test_size=0.2, random_state=0).
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from experiments import storage
from experiments.input_pipeline.spec import DataSpec

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class ArraySplit(NamedTuple):
  """One split: images (n, S, S, C) uint8 and labels (n,) int32."""

  images: np.ndarray
  labels: np.ndarray


class ArrayDataset(NamedTuple):
  """All splits of an in-memory source plus its statistics.

  Attributes:
    splits: "train", "eval" and, when carved, "validation".
    num_classes: label count.
    mean: per-channel mean of splits["train"] in [0, 1] units.
    std: per-channel standard deviation of splits["train"].
  """

  splits: dict[str, ArraySplit]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]


def _to_target(image: Image.Image, size: int, channels: int) -> np.ndarray:
  """Converts a Pillow image to (size, size, channels) uint8."""
  image = image.convert("L" if channels == 1 else "RGB")
  w, h = image.size
  if (w, h) != (size, size):
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.resize(
      (size, size),
      Image.Resampling.BILINEAR,
      box=(left, top, left + side, top + side),
    )
  return np.asarray(image).reshape(size, size, channels)


def _decode_jpegs(
  data: np.ndarray, offsets: np.ndarray, split: str, spec: DataSpec
) -> np.ndarray:
  n = len(offsets) - 1
  size, channels = spec.image_size, spec.channels
  out = np.empty((n, size, size, channels), np.uint8)
  for i in range(n):
    blob = data[offsets[i] : offsets[i + 1]].tobytes()
    try:
      out[i] = _to_target(Image.open(io.BytesIO(blob)), size, channels)
    except (UnidentifiedImageError, OSError, ValueError) as e:
      raise ValueError(
        f"{spec.path}: image {i} of split {split!r} (bytes {offsets[i]}:"
        f"{offsets[i + 1]} of '{split}_jpeg') is not a decodable JPEG "
        f"({e}); re-create the file with valid JPEG bytes."
      ) from e
  return out


def _convert_pixels(x: np.ndarray, split: str, spec: DataSpec) -> np.ndarray:
  if np.issubdtype(x.dtype, np.floating):
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
      raise ValueError(
        f"{spec.path}: float pixels 'x_{split}' must be finite and in "
        "[0, 1]; store uint8 0..255 or floats in [0, 1]."
      )
    x = np.rint(x * 255.0).astype(np.uint8)
  elif x.dtype != np.uint8:
    raise ValueError(
      f"{spec.path}: 'x_{split}' has dtype {x.dtype}; expected uint8 "
      "(0..255) or float in [0, 1]."
    )
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3):
    raise ValueError(
      f"{spec.path}: 'x_{split}' has shape {x.shape}; expected (n, H, W), "
      "(n, H, W, 1) or (n, H, W, 3)."
    )
  n, h, w = x.shape[:3]
  size, channels = spec.image_size, spec.channels
  if (h, w) == (size, size) and (x.ndim == 3) == (channels == 1):
    return x.reshape(n, size, size, channels)
  if (h, w) == (size, size) and x.ndim == 3:
    return np.repeat(x[..., None], 3, axis=-1)
  return np.stack([_to_target(Image.fromarray(im), size, channels) for im in x])


def _check_labels(y: np.ndarray, n: int, key: str, path: str) -> np.ndarray:
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(
      f"{path}: '{key}' must be a 1-D integer array, got shape {y.shape} "
      f"dtype {y.dtype}."
    )
  if len(y) != n:
    raise ValueError(
      f"{path}: '{key}' has {len(y)} labels but the split has {n} images; "
      "images and labels must have the same length."
    )
  return y.astype(np.int32)


def _read_npz_split(npz, split: str, spec: DataSpec) -> ArraySplit:
  keys = set(npz.files)
  label_key = f"y_{split}"
  if f"{split}_jpeg" in keys:
    needed = (f"{split}_jpeg", f"{split}_offsets", label_key)
  else:
    needed = (f"x_{split}", label_key)
  missing = [k for k in needed if k not in keys]
  if missing:
    raise ValueError(
      f"{spec.path}: split {split!r} needs keys {missing} (JPEG format: "
      f"'{split}_jpeg', '{split}_offsets', '{label_key}'; pixel format: "
      f"'x_{split}', '{label_key}'); the file has {sorted(keys)}. Set "
      "config.data.train_split / eval_split to a split the file holds."
    )
  if len(needed) == 3:
    data, offsets = npz[needed[0]], npz[needed[1]]
    if (
      data.ndim != 1
      or data.dtype != np.uint8
      or offsets.ndim != 1
      or not np.issubdtype(offsets.dtype, np.integer)
      or len(offsets) < 1
    ):
      raise ValueError(
        f"{spec.path}: '{needed[0]}' must be 1-D uint8 and '{needed[1]}' "
        "a 1-D integer array of n + 1 offsets."
      )
    if (
      offsets[0] < 0 or np.any(np.diff(offsets) <= 0) or offsets[-1] > len(data)
    ):
      raise ValueError(
        f"{spec.path}: '{needed[1]}' must be strictly increasing from >= 0 "
        f"to <= len('{needed[0]}')={len(data)} (non-monotonic or "
        "out-of-range offsets); image i spans offsets[i]:offsets[i+1]."
      )
    labels = _check_labels(
      npz[label_key], len(offsets) - 1, label_key, spec.path
    )
    return ArraySplit(_decode_jpegs(data, offsets, split, spec), labels)
  x = npz[needed[0]]
  labels = _check_labels(npz[label_key], len(x), label_key, spec.path)
  return ArraySplit(_convert_pixels(x, split, spec), labels)


def _num_classes(spec: DataSpec, labels: list[np.ndarray], npz) -> int:
  if spec.num_classes > 0:
    num_classes = spec.num_classes
  elif npz is not None and "classes" in npz.files:
    num_classes = len(npz["classes"])
  else:
    num_classes = int(max(int(y.max(initial=0)) for y in labels)) + 1
  for y in labels:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(
        f"Labels out of range: found labels in [{y.min()}, {y.max()}] but "
        f"num_classes={num_classes}; labels must lie in [0, num_classes). "
        "Fix the labels or set config.data.num_classes."
      )
  return num_classes


def _carve(split: ArraySplit, fraction: float, seed: int):
  index = np.arange(len(split.labels))
  counts = np.bincount(split.labels)
  stratify = split.labels if counts[counts > 0].min() >= 2 else None
  from sklearn import model_selection  # Lazy: a ~1.2 s import.

  train_idx, val_idx = model_selection.train_test_split(
    index, test_size=fraction, random_state=seed, stratify=stratify
  )
  train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
  take = lambda idx: ArraySplit(split.images[idx], split.labels[idx])
  return take(train_idx), take(val_idx)


def stratified_subset(split: ArraySplit, size: int, seed: int) -> ArraySplit:
  """``size`` examples of ``split``, class proportions kept, in split order.

  Raises:
    ValueError: when ``size`` exceeds the split or is too small to hold
      every class.

  Example:
    >>> labels = np.repeat(np.arange(2), [6, 4])
    >>> sub = stratified_subset(ArraySplit(np.zeros((10, 1, 1, 1)), labels),
    ...                         5, seed=0)
    >>> np.bincount(sub.labels).tolist()
    [3, 2]
  """
  total = len(split.labels)
  if not 0 < size <= total:
    raise ValueError(
      f"config.data.train_examples={size} must be in [1, {total}] (the "
      "training split's size)."
    )
  if size == total:
    return split
  classes = np.unique(split.labels).size
  if size < classes:
    raise ValueError(
      f"config.data.train_examples={size} is smaller than the number of "
      f"classes ({classes}): a stratified subset needs one of each."
    )
  from sklearn import model_selection  # Lazy: a ~1.2 s import.

  index, _ = model_selection.train_test_split(
    np.arange(total), train_size=size, random_state=seed, stratify=split.labels
  )
  index = np.sort(index)
  return ArraySplit(split.images[index], split.labels[index])


_HISTOGRAM_PIXELS = 1 << 16  # Pixels counted per np.bincount call.


def channel_stats(images: np.ndarray) -> tuple[tuple, tuple]:
  """Exact per-channel mean/std in [0, 1] units via 256-bin histograms.

  The histograms are counted in chunks of pixels: ``np.bincount`` copies
  its input to int64, and that copy of a whole channel (8 bytes a pixel,
  fresh memory) took ~1.7 s of a cold start on CIFAR-10, ~0.2 s chunked.

  >>> channel_stats(np.array([[[0], [255]]], np.uint8))
  ((0.5,), (0.5,))
  """
  pixels = images.reshape(-1, images.shape[-1])
  hists = np.zeros((pixels.shape[1], 256), np.int64)
  for start in range(0, len(pixels), _HISTOGRAM_PIXELS):
    chunk = pixels[start : start + _HISTOGRAM_PIXELS]
    for c, hist in enumerate(hists):
      hist += np.bincount(chunk[:, c], minlength=256)
  values = np.arange(256, dtype=np.float64) / 255.0
  means, stds = [], []
  for hist in hists:
    p = hist / hist.sum()
    mean = float(p @ values)
    means.append(mean)
    # Floor: a constant channel would otherwise divide by zero.
    stds.append(max(float(np.sqrt(p @ (values - mean) ** 2)), 1e-6))
  return tuple(means), tuple(stds)


def _load_digits(spec: DataSpec) -> tuple[dict[str, ArraySplit], int]:
  from sklearn import datasets, model_selection  # Lazy: a ~1.2 s import.

  digits = datasets.load_digits()
  pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
  labels = digits.target.astype(np.int32)
  train_idx, test_idx = model_selection.train_test_split(
    np.arange(len(labels)),
    test_size=DIGITS_TEST_FRACTION,
    random_state=DIGITS_SPLIT_SEED,
    stratify=labels,
  )
  splits = {"train": np.sort(train_idx), "test": np.sort(test_idx)}
  out = {}
  for role, name in (
    ("train", spec.train_split or "train"),
    ("eval", spec.eval_split or "test"),
  ):
    if name not in splits:
      raise ValueError(
        f"config.data.{role}_split={name!r} is not a split of "
        f"sklearn_digits; valid values: {tuple(splits)}."
      )
    idx = splits[name]
    out[role] = ArraySplit(
      _convert_pixels(pixels[idx], name, spec), labels[idx]
    )
  return out, _num_classes(spec, [s.labels for s in out.values()], None)


def _load_npz(spec: DataSpec) -> tuple[dict[str, ArraySplit], int]:
  # Local or on a bucket (gs://...): read through the one path layer.
  with storage.path(spec.path).open("rb") as f:
    return _read_npz_file(spec, f)


def _read_npz_file(spec: DataSpec, f) -> tuple[dict[str, ArraySplit], int]:
  if not zipfile.is_zipfile(f):
    raise ValueError(
      f"config.data.path={spec.path!r} is not a valid .npz archive (an npz "
      "is a zip of .npy arrays). Make one with numpy, e.g. "
      "np.savez(path, x_train=uint8 NHWC images, y_train=int labels, "
      "x_test=..., y_test=...), or with JPEG bytes as '<split>_jpeg', "
      "'<split>_offsets' and 'y_<split>' (see README, 'Local npz')."
    )
  f.seek(0)
  with np.load(f, allow_pickle=False) as npz:
    out = {
      "train": _read_npz_split(npz, spec.train_split or "train", spec),
      "eval": _read_npz_split(npz, spec.eval_split or "test", spec),
    }
    num_classes = _num_classes(spec, [s.labels for s in out.values()], npz)
  return out, num_classes


@functools.lru_cache(maxsize=4)
def _load_cached(spec: DataSpec, file_key: tuple) -> ArrayDataset:
  del file_key  # Part of the cache key only: reload when the file changes.
  if spec.source == "sklearn_digits":
    splits, num_classes = _load_digits(spec)
  else:
    splits, num_classes = _load_npz(spec)
  if spec.validation_fraction > 0:
    splits["train"], splits["validation"] = _carve(
      splits["train"], spec.validation_fraction, spec.split_seed
    )
  if spec.train_examples:
    splits["train"] = stratified_subset(
      splits["train"], spec.train_examples, spec.split_seed
    )
  for split in splits.values():
    split.images.flags.writeable = False
    split.labels.flags.writeable = False
  mean, std = channel_stats(splits["train"].images)
  return ArrayDataset(splits, num_classes, mean, std)


def load_arrays(spec: DataSpec) -> ArrayDataset:
  """Loads (once per process) an in-memory source as uint8 arrays.

  Args:
    spec: a validated DataSpec with source "npz" or "sklearn_digits".

  Returns:
    The ArrayDataset (arrays are read-only and shared between callers).

  Raises:
    FileNotFoundError: the npz file does not exist.
    ValueError: malformed file (missing keys, bad offsets, undecodable JPEG,
      mismatched lengths, labels out of range) or unknown split names.

  Example:
    >>> from experiments.input_pipeline.spec import get_default_data_config
    >>> from experiments.input_pipeline.spec import resolve_spec
    >>> data = load_arrays(resolve_spec(get_default_data_config()))
    >>> data.splits["train"].images.shape, data.num_classes
    ((1437, 16, 16, 1), 10)
  """
  file_key = ()
  if spec.source == "npz" and not storage.is_local(spec.path):
    if not storage.path(spec.path).exists():
      raise FileNotFoundError(f"config.data.path={spec.path!r}: no such file")
    file_key = (spec.path,)
  elif spec.source == "npz":
    if not os.path.isfile(spec.path):
      raise FileNotFoundError(
        f"config.data.path={spec.path!r}: no such npz file (relative paths "
        f"are resolved from {os.getcwd()!r}). Point config.data.path at an "
        "existing .npz, e.g. '../shared/data/cifar10_jpeg.npz' from the "
        "repository root."
      )
    stat = os.stat(spec.path)
    file_key = (os.path.abspath(spec.path), stat.st_size, stat.st_mtime_ns)
  return _load_cached(spec, file_key)
