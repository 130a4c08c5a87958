"""Training augmentation of uint8 NHWC batches in numpy, exact given an RNG.

Parameters are drawn for the whole *global* batch from a
`numpy.random.Generator` and then applied to any subset of rows, so a
process that owns rows [lo, lo + n) of the global batch produces exactly the
rows a single process would have produced.

* "cifar": zero-pad 4 pixels on each side, crop back to the original size at
  a uniform random offset in [0, 8] per axis, flip horizontally with p=0.5
  (the standard CIFAR recipe, as torchvision RandomCrop(32, padding=4) +
  RandomHorizontalFlip).
* "imagenet": random resized crop (area fraction U(0.08, 1), log-uniform
  aspect ratio in [3/4, 4/3], first of 10 tries that fits, else a central
  crop; Szegedy et al. 2015 / torchvision RandomResizedCrop) resized back to
  the image size with Pillow's antialiased bilinear filter, then the flip.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

CIFAR_PAD = 4
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_TRIES = 10


class CropFlipParams(NamedTuple):
  """Per-example parameters of the CIFAR augmentation.

  Attributes:
    top: row offset of the crop in the padded image, in [0, 2 * pad].
    left: column offset of the crop in the padded image, in [0, 2 * pad].
    flip: True where the crop is mirrored left-right.
  """

  top: np.ndarray
  left: np.ndarray
  flip: np.ndarray


class ResizedCropParams(NamedTuple):
  """Per-example parameters of the ImageNet-style augmentation.

  Attributes:
    top, left, height, width: the crop box in pixels of the source image.
    flip: True where the output is mirrored left-right.
  """

  top: np.ndarray
  left: np.ndarray
  height: np.ndarray
  width: np.ndarray
  flip: np.ndarray


def sample_crop_flip(
  rng: np.random.Generator, batch_size: int, pad: int = CIFAR_PAD
) -> CropFlipParams:
  """Draws CIFAR crop offsets and flips: top, left, then flip, in that order.

  Args:
    rng: the generator (consumed).
    batch_size: number of examples.
    pad: padding on each side.

  Returns:
    CropFlipParams with arrays of shape (batch_size,).

  Example:
    >>> p = sample_crop_flip(np.random.default_rng(0), 4)
    >>> bool(((p.top >= 0) & (p.top <= 8)).all())
    True
  """
  top = rng.integers(0, 2 * pad + 1, size=batch_size)
  left = rng.integers(0, 2 * pad + 1, size=batch_size)
  flip = rng.random(batch_size) < 0.5
  return CropFlipParams(top, left, flip)


def apply_crop_flip(
  images: np.ndarray, params: CropFlipParams, pad: int = CIFAR_PAD
) -> np.ndarray:
  """Pads, crops and flips a uint8 NHWC batch (one vectorised gather).

  Args:
    images: (B, H, W, C) array.
    params: CropFlipParams for the B rows.
    pad: zero padding on each side.

  Returns:
    (B, H, W, C) array, same dtype.

  Example:
    >>> x = np.arange(2 * 4 * 4 * 1, dtype=np.uint8).reshape(2, 4, 4, 1)
    >>> p = CropFlipParams(np.array([4, 4]), np.array([4, 4]),
    ...                    np.array([False, True]))
    >>> y = apply_crop_flip(x, p)
    >>> bool((y[0] == x[0]).all()), bool((y[1] == x[1, :, ::-1]).all())
    (True, True)
  """
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  rows = params.top[:, None] + np.arange(h)[None, :]
  cols = (
    np.where(
      params.flip[:, None],
      np.arange(w - 1, -1, -1)[None, :],
      np.arange(w)[None, :],
    )
    + params.left[:, None]
  )
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def sample_resized_crop(
  rng: np.random.Generator, batch_size: int, height: int, width: int
) -> ResizedCropParams:
  """Draws random-resized-crop boxes and flips, vectorised over the batch.

  For each example RRC_TRIES candidates (area fraction, log aspect ratio)
  are drawn; the first whose rounded box fits in the image is used, offsets
  are uniform over the valid positions; examples with no fitting candidate
  get the largest central crop with the aspect ratio clamped to RRC_RATIO.

  Args:
    rng: the generator (consumed).
    batch_size: number of examples.
    height: source image height.
    width: source image width.

  Returns:
    ResizedCropParams with arrays of shape (batch_size,).

  Example:
    >>> p = sample_resized_crop(np.random.default_rng(0), 8, 32, 32)
    >>> bool(((p.top + p.height <= 32) & (p.height >= 1)).all())
    True
  """
  area = height * width
  fraction = rng.uniform(*RRC_SCALE, size=(batch_size, RRC_TRIES))
  log_ratio = rng.uniform(
    np.log(RRC_RATIO[0]), np.log(RRC_RATIO[1]), size=(batch_size, RRC_TRIES)
  )
  ratio = np.exp(log_ratio)
  w = np.rint(np.sqrt(area * fraction * ratio)).astype(np.int64)
  h = np.rint(np.sqrt(area * fraction / ratio)).astype(np.int64)
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = np.argmax(fits, axis=1)
  rows = np.arange(batch_size)
  h, w, found = h[rows, first], w[rows, first], fits.any(axis=1)
  # Fallback: central crop of the whole image, aspect clamped to RRC_RATIO.
  in_ratio = width / height
  if in_ratio < RRC_RATIO[0]:
    fh, fw = int(round(width / RRC_RATIO[0])), width
  elif in_ratio > RRC_RATIO[1]:
    fh, fw = height, int(round(height * RRC_RATIO[1]))
  else:
    fh, fw = height, width
  h, w = np.where(found, h, fh), np.where(found, w, fw)
  u_top, u_left = rng.random(batch_size), rng.random(batch_size)
  top = np.where(
    found,
    np.floor(u_top * (height - h + 1)).astype(np.int64),
    (height - h) // 2,
  )
  left = np.where(
    found,
    np.floor(u_left * (width - w + 1)).astype(np.int64),
    (width - w) // 2,
  )
  flip = rng.random(batch_size) < 0.5
  return ResizedCropParams(top, left, h, w, flip)


def apply_resized_crop(
  images: np.ndarray, params: ResizedCropParams
) -> np.ndarray:
  """Crops each box and resizes it back to (H, W), then applies the flips.

  The crop-and-resize is Pillow's `Image.resize(size, BILINEAR, box=...)`
  (antialiased; what torchvision's RandomResizedCrop calls), one call per
  image: numpy has no batched crop-and-resize with per-example boxes.

  Args:
    images: (B, H, W, C) uint8 array, C in {1, 3}.
    params: ResizedCropParams for the B rows.

  Returns:
    (B, H, W, C) uint8 array.

  Example:
    >>> x = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    >>> full = ResizedCropParams(*(np.array([v]) for v in (0, 0, 4, 4)),
    ...                          np.array([False]))
    >>> bool((apply_resized_crop(x, full) == x).all())
    True
  """
  b, h, w, c = images.shape
  out = np.empty_like(images)
  for i in range(b):
    top, left = int(params.top[i]), int(params.left[i])
    box = (left, top, left + int(params.width[i]), top + int(params.height[i]))
    pil = Image.fromarray(images[i, :, :, 0] if c == 1 else images[i])
    resized = np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR, box=box))
    out[i] = resized.reshape(h, w, c)
  flip = params.flip
  out[flip] = out[flip, :, ::-1]
  return out


def augment_batch(
  images: np.ndarray,
  rng: np.random.Generator,
  kind: str,
  global_batch_size: int,
  row_offset: int,
) -> np.ndarray:
  """Augments the rows [row_offset, row_offset + len(images)) of a batch.

  Args:
    images: (n, H, W, C) uint8 rows owned by this process.
    rng: the step's generator; parameters are drawn for all
      `global_batch_size` rows, then this process's rows are taken.
    kind: "cifar", "imagenet" or "none".
    global_batch_size: rows in the global batch.
    row_offset: index of images[0] in the global batch.

  Returns:
    (n, H, W, C) uint8 array.

  Raises:
    ValueError: unknown `kind`.
  """
  rows = slice(row_offset, row_offset + len(images))
  if kind == "none":
    return images
  if kind == "cifar":
    params = sample_crop_flip(rng, global_batch_size)
    return apply_crop_flip(images, CropFlipParams(*(p[rows] for p in params)))
  if kind == "imagenet":
    _, h, w, _ = images.shape
    params = sample_resized_crop(rng, global_batch_size, h, w)
    return apply_resized_crop(
      images, ResizedCropParams(*(p[rows] for p in params))
    )
  raise ValueError(
    f"Unknown augment={kind!r}; valid values: ('cifar', 'imagenet', 'none')."
  )
