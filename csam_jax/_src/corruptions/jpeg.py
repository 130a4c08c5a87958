"""The lossy path of a baseline JPEG encode + decode, in JAX.

Reproduces what Pillow (libjpeg-turbo) does for ``Image.save(f, "JPEG",
quality=q)`` followed by decoding, stage by stage: JFIF RGB -> YCbCr
(rounded to 8-bit samples), 4:2:0 chroma subsampling (libjpeg's 2x2 box
average with its alternating rounding bias), level shift, 8x8
DCT (libjpeg's default integer "islow" transform, islow.py), quantisation
with the IJG quality-scaled tables of ITU-T T.81 Annex K (rounded half away
from zero), dequantisation, inverse islow DCT (range-limited to 0..255),
libjpeg's "fancy" triangular chroma upsampling and YCbCr -> RGB, all in
libjpeg's integer arithmetic. Entropy coding is lossless and therefore
omitted. The result is bit-exact with Pillow's encoder + decoder on the
images of tests/corruptions_test.py (real CIFAR-10 and random images).
"""

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src.corruptions import islow

# ITU-T T.81 Annex K.1 / K.2 tables (natural row-major order).
LUMA_TABLE = np.array(
  [
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
  ]
)
CHROMA_TABLE = np.full((8, 8), 99)
CHROMA_TABLE[:4, :4] = [
  [17, 18, 24, 47],
  [18, 21, 26, 66],
  [24, 26, 56, 99],
  [47, 66, 99, 99],
]


def quantization_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
  """IJG ``jpeg_set_quality(quality, force_baseline=TRUE)`` tables.

  ``scale = 5000 / q`` below 50, else ``200 - 2 q``; each entry is
  ``(base * scale + 50) // 100`` clamped to [1, 255].

  Example:
    >>> luma, chroma = quantization_tables(50)
    >>> int(luma[0, 0]), int(chroma[0, 0])
    (16, 17)
  """
  if not 1 <= quality <= 100:
    raise ValueError(f"`quality` must be in 1..100, got {quality}.")
  scale = 5000 // quality if quality < 50 else 200 - 2 * quality
  tables = []
  for base in (LUMA_TABLE, CHROMA_TABLE):
    tables.append(np.clip((base * scale + 50) // 100, 1, 255))
  return tables[0], tables[1]


# libjpeg's 16-bit fixed-point colour constants, FIX(x) = round(x * 2**16)
# (jccolor.c, jdcolor.c).
_SCALE_BITS = 16
_HALF = 1 << (_SCALE_BITS - 1)
_FIX = {
  "0.29900": 19595,
  "0.58700": 38470,
  "0.11400": 7471,
  "0.16874": 11059,
  "0.33126": 21709,
  "0.50000": 32768,
  "0.41869": 27439,
  "0.08131": 5329,
  "1.40200": 91881,
  "1.77200": 116130,
  "0.71414": 46802,
  "0.34414": 22554,
}


def _rgb_to_ycc(rgb: jax.Array) -> tuple[jax.Array, ...]:
  """JFIF RGB -> YCbCr on int32 samples, as libjpeg's ``rgb_ycc_convert``."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  f = _FIX
  offset = (128 << _SCALE_BITS) + _HALF - 1
  y = f["0.29900"] * r + f["0.58700"] * g + f["0.11400"] * b + _HALF
  cb = -f["0.16874"] * r - f["0.33126"] * g + f["0.50000"] * b + offset
  cr = f["0.50000"] * r - f["0.41869"] * g - f["0.08131"] * b + offset
  return tuple(jnp.right_shift(c, _SCALE_BITS) for c in (y, cb, cr))


def _ycc_to_rgb(y: jax.Array, cb: jax.Array, cr: jax.Array) -> jax.Array:
  """YCbCr -> RGB on int32 samples, as libjpeg's ``ycc_rgb_convert``."""
  f = _FIX
  cb, cr = cb - 128, cr - 128
  shift = lambda x: jnp.right_shift(x, _SCALE_BITS)
  r = y + shift(f["1.40200"] * cr + _HALF)
  g = y + shift(-f["0.34414"] * cb - f["0.71414"] * cr + _HALF)
  b = y + shift(f["1.77200"] * cb + _HALF)
  return jnp.clip(jnp.stack([r, g, b], axis=-1), 0, 255)


def _blocks(plane: jax.Array) -> jax.Array:
  h, w = plane.shape
  return plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)


def _unblocks(blocks: jax.Array) -> jax.Array:
  bh, bw = blocks.shape[:2]
  return blocks.transpose(0, 2, 1, 3).reshape(bh * 8, bw * 8)


def _lossy_plane(plane: jax.Array, table: jax.Array) -> jax.Array:
  """Level shift, islow DCT, quantise, dequantise, islow IDCT (8-bit)."""
  table = jnp.asarray(table).astype(jnp.int32)  # may be traced
  blocks = _blocks(plane).astype(jnp.int32) - 128
  coefficients = islow.fdct(blocks)  # scaled by 8
  divisor = 8 * table
  magnitude = (jnp.abs(coefficients) + divisor // 2) // divisor
  levels = jnp.sign(coefficients) * magnitude
  samples = islow.idct(levels * table) + 128
  return jnp.clip(_unblocks(samples), 0, 255).astype(jnp.float32)


def _downsample(plane: jax.Array) -> jax.Array:
  """libjpeg ``h2v2_downsample``: 2x2 sum plus bias 1, 2, 1, 2, ... >> 2."""
  h, w = plane.shape
  sums = plane.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
  bias = 1.0 + (jnp.arange(w // 2) % 2)
  return jnp.floor((sums + bias) / 4.0)


def _upsample(plane: jax.Array) -> jax.Array:
  """libjpeg ``h2v2_fancy_upsample`` (triangle filter, edges replicated)."""
  h, w = plane.shape
  up = jnp.concatenate([plane[:1], plane[:-1]], axis=0)
  down = jnp.concatenate([plane[1:], plane[-1:]], axis=0)
  col_sums = jnp.stack([3 * plane + up, 3 * plane + down], axis=1)
  col_sums = col_sums.reshape(2 * h, w)
  left = jnp.concatenate([col_sums[:, :1], col_sums[:, :-1]], axis=1)
  right = jnp.concatenate([col_sums[:, 1:], col_sums[:, -1:]], axis=1)
  even = jnp.floor((3 * col_sums + left + 8) / 16)
  odd = jnp.floor((3 * col_sums + right + 7) / 16)
  return jnp.stack([even, odd], axis=2).reshape(2 * h, 2 * w)


def jpeg_roundtrip(image: jax.Array, quality: int) -> jax.Array:
  """JPEG-compress and decompress one HWC RGB image in [0, 1].

  Args:
    image: (H, W, 3) float array in [0, 1]; it is quantised to 8 bits first,
      as an encoder of 8-bit data does.
    quality: IJG quality 1..100 (static).

  Returns:
    The decoded (H, W, 3) image in [0, 1], on the 1/255 grid.

  Example:
    >>> import jax.numpy as jnp
    >>> out = jpeg_roundtrip(jnp.full((16, 16, 3), 0.5), 75)
    >>> round(float(out.mean()) * 255)
    128
  """
  luma_table, chroma_table = quantization_tables(quality)
  return jpeg_with_tables(image, luma_table, chroma_table)


def jpeg_with_tables(
  image: jax.Array, luma_table: jax.Array, chroma_table: jax.Array
) -> jax.Array:
  """``jpeg_roundtrip`` with explicit (possibly traced) 8x8 tables."""
  h, w = image.shape[:2]
  pad_h, pad_w = -h % 16, -w % 16
  rgb = jnp.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
  rgb = jnp.round(jnp.clip(rgb, 0.0, 1.0) * 255.0).astype(jnp.int32)
  y, cb, cr = _rgb_to_ycc(rgb)
  y = _lossy_plane(y, luma_table)
  cb = _upsample(_lossy_plane(_downsample(cb), chroma_table))
  cr = _upsample(_lossy_plane(_downsample(cr), chroma_table))
  out = _ycc_to_rgb(
    y.astype(jnp.int32), cb.astype(jnp.int32), cr.astype(jnp.int32)
  )
  return out[:h, :w].astype(jnp.float32) / 255.0


def jpeg_params(rows, height, width):
  """Quality-scaled tables of each severity."""
  del height, width
  tables = [quantization_tables(row[0]) for row in rows]
  return {
    "luma": np.stack([t[0] for t in tables]).astype(np.float32),
    "chroma": np.stack([t[1] for t in tables]).astype(np.float32),
  }


def jpeg_compression(key, image, p):
  """CIFAR-10-C's JPEG corruption: a Pillow-equivalent round trip."""
  del key
  return jpeg_with_tables(image, p["luma"], p["chroma"])
