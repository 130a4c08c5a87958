"""Static linear image operators shared by the corruptions.

Most CIFAR-10-C corruptions are linear filters whose coefficients depend only
on the (static) severity and image size: Gaussian filters
(``scipy.ndimage.gaussian_filter``), ``scipy.ndimage.zoom(order=1)`` and
Pillow's BOX resize. Their coefficients are built here in numpy at trace time
as dense ``(n_out, n_in)`` matrices and applied separably with one matmul per
axis, so that each operator reproduces its reference exactly (including the
reference's boundary handling) and runs as a single fused XLA op on any
accelerator. ``jax.scipy`` / ``jax.image`` do not offer these exact
semantics (``jax.image.resize`` uses half-pixel centres, scipy's zoom does
not; no jax function has scipy's boundary modes for Gaussian filters).

Boundary modes follow scipy.ndimage's names:

* ``"reflect"``: half-sample symmetric ``d c b a | a b c d | d c b a``
  (numpy ``"symmetric"``, OpenCV ``BORDER_REFLECT``).
* ``"mirror"``: whole-sample symmetric ``d c b | a b c d | c b a``
  (numpy ``"reflect"``, OpenCV ``BORDER_REFLECT_101``).
* ``"nearest"``: edge replication ``a a | a b c d | d d`` (ImageMagick's
  default virtual pixels).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src import validation

BOUNDARY_MODES = ("reflect", "mirror", "nearest")
_HIGHEST = jax.lax.Precision.HIGHEST


def boundary_index(index, n: int, mode: str):
  """Maps integer indices (numpy or jax) into ``[0, n)`` for ``mode``."""
  validation.check_choice("mode", mode, BOUNDARY_MODES)
  xp = jnp if isinstance(index, jax.Array) else np
  if mode == "nearest":
    return xp.clip(index, 0, n - 1)
  if mode == "reflect":
    period = 2 * n
    i = index % period
    return xp.where(i >= n, period - 1 - i, i)
  if n == 1:  # mirror
    return xp.zeros_like(index)
  period = 2 * n - 2
  i = index % period
  return xp.where(i >= n, period - i, i)


def correlation_matrix(n: int, weights: np.ndarray, mode: str) -> np.ndarray:
  """Matrix of a 1-D correlation with a centred odd-length kernel.

  Returns ``m`` with ``m @ x == scipy.ndimage.correlate1d(x, weights,
  mode=mode)`` for ``x`` of length ``n``.
  """
  weights = np.asarray(weights, np.float64)
  radius = (len(weights) - 1) // 2
  rows = np.repeat(np.arange(n), len(weights))
  taps = np.tile(np.arange(len(weights)), n)
  cols = boundary_index(rows + taps - radius, n, mode)
  matrix = np.zeros((n, n), np.float64)
  np.add.at(matrix, (rows, cols), weights[taps])
  return matrix


def gaussian_kernel1d(sigma: float, truncate: float) -> np.ndarray:
  """scipy.ndimage's sampled, normalised Gaussian (radius round(t*sigma))."""
  radius = int(truncate * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  phi = np.exp(-0.5 * x**2 / sigma**2)
  return phi / phi.sum()


def gaussian_matrix(
  n: int, sigma: float, *, truncate: float = 4.0, mode: str = "nearest"
) -> np.ndarray:
  """Matrix of ``scipy.ndimage.gaussian_filter1d`` on length-``n`` signals.

  ``sigma == 0`` gives the identity (scipy skips such axes). The defaults
  are those of ``skimage.filters.gaussian``.
  """
  if sigma == 0:
    return np.eye(n)
  return correlation_matrix(n, gaussian_kernel1d(sigma, truncate), mode)


def zoom_matrix(n: int, zoom_factor: float) -> np.ndarray:
  """Matrix of the CIFAR-10-C ``clipped_zoom`` along one axis.

  The reference crops the central ``ceil(n / z)`` pixels (start
  ``(n - ch) // 2``), zooms them with ``scipy.ndimage.zoom(order=1)``
  (output ``round(ch * z)`` samples at input coordinates
  ``o * (ch - 1) / (out - 1)``: corner-aligned linear interpolation) and
  trims the centre ``n`` outputs (start ``(out - n) // 2``).
  """
  crop = int(np.ceil(n / zoom_factor))
  top = (n - crop) // 2
  out = int(round(crop * zoom_factor))
  scale = (crop - 1) / (out - 1) if out > 1 else 0.0
  coords = np.arange(out) * scale
  lo = np.floor(coords).astype(int)
  frac = coords - lo
  hi = np.minimum(lo + 1, crop - 1)
  full = np.zeros((out, n), np.float64)
  np.add.at(full, (np.arange(out), top + lo), 1.0 - frac)
  np.add.at(full, (np.arange(out), top + hi), frac)
  trim = (out - n) // 2
  return full[trim : trim + n]


def pil_box_matrix(n_in: int, n_out: int) -> np.ndarray:
  """Matrix of Pillow's ``Image.resize(..., Image.BOX)`` along one axis.

  Pillow (``Resample.c``, ``precompute_coeffs``) places output pixel ``o``
  at input coordinate ``centre = (o + 0.5) * scale`` with
  ``scale = n_in / n_out`` and gives weight 1 to every input pixel ``i``
  with ``-0.5 < (i + 0.5 - centre) / max(scale, 1) <= 0.5`` (the pixels
  whose centres fall into the output pixel's footprint; one nearest pixel
  when upscaling), normalised to sum 1.
  """
  scale = n_in / n_out
  filter_scale = max(scale, 1.0)
  support = 0.5 * filter_scale
  matrix = np.zeros((n_out, n_in), np.float64)
  for o in range(n_out):
    centre = (o + 0.5) * scale
    lo = max(int(centre - support + 0.5), 0)
    hi = min(int(centre + support + 0.5), n_in)
    for i in range(lo, hi):
      x = (i - centre + 0.5) / filter_scale
      if -0.5 < x <= 0.5:
        matrix[o, i] = 1.0
    total = matrix[o].sum()
    if total:
      matrix[o] /= total
  return matrix


def apply_separable(
  image: jax.Array, rows: np.ndarray, cols: np.ndarray
) -> jax.Array:
  """``rows @ image @ cols.T`` for every channel of an HW or HWC image."""
  rows = jnp.asarray(rows, image.dtype)
  cols = jnp.asarray(cols, image.dtype)
  out = jnp.einsum("hi,i...->h...", rows, image, precision=_HIGHEST)
  return jnp.einsum("wj,hj...->hw...", cols, out, precision=_HIGHEST)


def gaussian_filter(
  image: jax.Array,
  sigma: float,
  *,
  truncate: float = 4.0,
  mode: str = "nearest",
) -> jax.Array:
  """``skimage.filters.gaussian`` over H and W (not channels) of an image."""
  h, w = image.shape[:2]
  return apply_separable(
    image,
    gaussian_matrix(h, sigma, truncate=truncate, mode=mode),
    gaussian_matrix(w, sigma, truncate=truncate, mode=mode),
  )


def correlate2d(image: jax.Array, kernel, mode: str) -> jax.Array:
  """2-D correlation of each channel with a small kernel.

  ``kernel`` is a static numpy array (its zero taps are skipped) or a traced
  array of static shape. Matches ``cv2.filter2D`` (mode ``"mirror"``) and
  ``scipy.ndimage.correlate``.
  """
  kh, kw = kernel.shape
  h, w = image.shape[:2]
  if isinstance(kernel, np.ndarray):
    taps = list(zip(*np.nonzero(kernel), strict=True))
  else:
    taps = [(dy, dx) for dy in range(kh) for dx in range(kw)]
  out = jnp.zeros_like(image)
  for dy, dx in taps:
    rows = boundary_index(np.arange(h) + dy - kh // 2, h, mode)
    cols = boundary_index(np.arange(w) + dx - kw // 2, w, mode)
    out = out + kernel[dy, dx] * image[rows][:, cols]
  return out


def bilinear_sample(
  image: jax.Array, ys: jax.Array, xs: jax.Array, mode: str
) -> jax.Array:
  """Bilinear interpolation of an HWC image at float coordinates.

  Out-of-range neighbours are mapped with ``boundary_index``; for linear
  interpolation this equals reflecting the coordinate itself, so it matches
  ``scipy.ndimage.map_coordinates(order=1, mode=mode)`` and OpenCV's
  ``INTER_LINEAR`` with ``BORDER_REFLECT_101`` (``mode="mirror"``).

  Args:
    image: (H, W, C) array.
    ys: row coordinates, any shape S.
    xs: column coordinates, shape S.
    mode: one of ``BOUNDARY_MODES``.

  Returns:
    Array of shape S + (C,).
  """
  h, w = image.shape[:2]
  y0 = jnp.floor(ys)
  x0 = jnp.floor(xs)
  wy = (ys - y0)[..., None]
  wx = (xs - x0)[..., None]
  y0 = y0.astype(jnp.int32)
  x0 = x0.astype(jnp.int32)
  ya, yb = boundary_index(y0, h, mode), boundary_index(y0 + 1, h, mode)
  xa, xb = boundary_index(x0, w, mode), boundary_index(x0 + 1, w, mode)
  top = image[ya, xa] * (1 - wx) + image[ya, xb] * wx
  bottom = image[yb, xa] * (1 - wx) + image[yb, xb] * wx
  return top * (1 - wy) + bottom * wy


def next_power_of_two(n: int) -> int:
  return 1 << max(0, math.ceil(math.log2(n)))
