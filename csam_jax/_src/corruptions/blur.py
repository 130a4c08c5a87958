"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur.

Each corruption takes one HWC float image in [0, 1] plus the CIFAR-10-C
severity parameters (static Python numbers) and returns an image in [0, 1].
"""

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src.corruptions import resample

_HIGHEST = jax.lax.Precision.HIGHEST


def defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
  """The anti-aliased disk kernel of CIFAR-10-C's ``defocus_blur``.

  A binary disk ``x^2 + y^2 <= radius^2`` on the grid ``-8..8`` (or
  ``-radius..radius`` for radius > 8), normalised to sum 1, then smoothed
  like ``cv2.GaussianBlur(ksize=3 (5 above radius 8), sigma=alias_blur)``:
  a separable sampled Gaussian normalised to sum 1 with
  ``BORDER_REFLECT_101``. Since the disk lies well inside the grid the
  result sums to 1.

  Example:
    >>> float(defocus_kernel(1.0, 0.2).sum())  # doctest: +ELLIPSIS
    1.0...
  """
  if radius <= 8:
    grid = np.arange(-8, 8 + 1)
    ksize = 3
  else:
    grid = np.arange(-radius, radius + 1)
    ksize = 5
  xx, yy = np.meshgrid(grid, grid)
  disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
  disk /= disk.sum()
  taps = np.arange(ksize) - (ksize - 1) / 2
  gauss = np.exp(-(taps**2) / (2 * alias_blur**2))
  gauss /= gauss.sum()
  smooth = resample.correlation_matrix(len(grid), gauss, "mirror")
  return smooth @ disk @ smooth.T


def defocus_blur(key, image, radius: float, alias_blur: float):
  """Correlation with ``defocus_kernel`` (``cv2.filter2D`` borders)."""
  del key
  kernel = defocus_kernel(radius, alias_blur)
  return jnp.clip(resample.correlate2d(image, kernel, "mirror"), 0.0, 1.0)


def gaussian_blur(key, image, sigma: float):
  """``skimage.filters.gaussian(x, sigma)`` per channel (extra corruption)."""
  del key
  return jnp.clip(resample.gaussian_filter(image, sigma), 0.0, 1.0)


def glass_shuffle_permutation(
  key: jax.Array, height: int, width: int, max_delta: int, iterations: int
) -> jax.Array:
  """Flat source indices of CIFAR-10-C's sequential local pixel swaps.

  The reference visits, ``iterations`` times, every position (h, w) with
  ``h`` from ``height - max_delta`` down to ``max_delta + 1`` and ``w``
  likewise, and swaps pixel (h, w) with (h + dy, w + dx), where
  ``dx, dy ~ randint(-max_delta, max_delta)`` (upper bound exclusive). The
  swaps do not depend on pixel values, so the composed permutation is
  computed once on indices with a ``lax.fori_loop`` over the positions and
  applied to the image with a single gather.

  Returns:
    int32 array ``src`` of length ``height * width``: the shuffled image is
    ``image.reshape(-1, C)[src]``.
  """
  rows = np.arange(height - max_delta, max_delta, -1)
  cols = np.arange(width - max_delta, max_delta, -1)
  positions = (rows[:, None] * width + cols[None, :]).ravel()
  positions = jnp.asarray(np.tile(positions, iterations), jnp.int32)
  steps = positions.shape[0]
  offsets = jax.random.randint(
    key, (steps, 2), -max_delta, max_delta, jnp.int32
  )
  partners = positions + offsets[:, 1] * width + offsets[:, 0]

  def swap(t, src):
    a, b = positions[t], partners[t]
    src_a, src_b = src[a], src[b]
    return src.at[a].set(src_b).at[b].set(src_a)

  identity = jnp.arange(height * width, dtype=jnp.int32)
  return jax.lax.fori_loop(0, steps, swap, identity)


def glass_blur(key, image, sigma: float, max_delta: int, iterations: int):
  """Gaussian blur, uint8 truncation, local pixel shuffle, Gaussian blur."""
  h, w, c = image.shape
  blurred = resample.gaussian_filter(image, sigma)
  blurred = jnp.floor(jnp.clip(blurred, 0.0, 1.0) * 255.0) / 255.0
  src = glass_shuffle_permutation(key, h, w, max_delta, iterations)
  shuffled = blurred.reshape(h * w, c)[src].reshape(h, w, c)
  return jnp.clip(resample.gaussian_filter(shuffled, sigma), 0.0, 1.0)


def motion_blur_filter(
  image: jax.Array, radius: int, sigma: float, angle_degrees: jax.Array
) -> jax.Array:
  """ImageMagick's ``MotionBlurImage(radius, sigma, angle)`` on HW(C) data.

  ImageMagick's kernel (MagickCore/effect.c) has ``width = 2 * ceil(radius)
  + 1`` one-sided Gaussian weights ``exp(-i^2 / (2 sigma^2))``, i = 0..width-1
  normalised to sum 1; tap i reads the pixel at offset
  ``(ceil(i cos(a) - 1/2), ceil(i sin(a) - 1/2))`` (x = column, y = row)
  with edge-replicated virtual pixels. Implemented directly (the reference
  calls ImageMagick through Wand); the angle may be traced.
  """
  width = 2 * int(np.ceil(radius)) + 1
  taps = np.arange(width)
  weights = np.exp(-(taps**2) / (2.0 * sigma**2))
  weights = jnp.asarray(weights / weights.sum(), image.dtype)
  angle = jnp.deg2rad(angle_degrees)
  taps = jnp.arange(width, dtype=image.dtype)
  dx = jnp.ceil(taps * jnp.cos(angle) - 0.5).astype(jnp.int32)
  dy = jnp.ceil(taps * jnp.sin(angle) - 0.5).astype(jnp.int32)
  h, w = image.shape[:2]
  rows = jnp.clip(jnp.arange(h)[None, :] + dy[:, None], 0, h - 1)
  cols = jnp.clip(jnp.arange(w)[None, :] + dx[:, None], 0, w - 1)
  shifted = image[rows[:, :, None], cols[:, None, :]]  # (width, H, W, ...)
  return jnp.tensordot(weights, shifted, axes=1, precision=_HIGHEST)


def motion_blur(key, image, radius: int, sigma: float):
  """Motion blur at an angle ~ U(-45, 45) degrees."""
  angle = jax.random.uniform(key, (), minval=-45.0, maxval=45.0)
  out = motion_blur_filter(image, radius, sigma, angle)
  return jnp.clip(out, 0.0, 1.0)


def zoom_factors(max_zoom: float) -> np.ndarray:
  """``np.arange(1, max_zoom, 0.01)`` exactly as the reference.

  Floating-point rounding makes it include ``max_zoom`` itself for some
  stops (7 factors for 1.06, 12 for 1.11, 16 for 1.16, ...).
  """
  return np.arange(1, max_zoom, 0.01)


def zoom_blur(key, image, max_zoom: float):
  """Mean of the image and its centre zooms by each of ``zoom_factors``."""
  del key
  h, w = image.shape[:2]
  factors = zoom_factors(max_zoom)
  rows = jnp.asarray(
    np.stack([resample.zoom_matrix(h, z) for z in factors]), image.dtype
  )
  cols = jnp.asarray(
    np.stack([resample.zoom_matrix(w, z) for z in factors]), image.dtype
  )
  zoomed = jnp.einsum("fhi,ijc->fhjc", rows, image, precision=_HIGHEST)
  total = jnp.einsum("fwj,fhjc->hwc", cols, zoomed, precision=_HIGHEST)
  return jnp.clip((image + total) / (len(factors) + 1), 0.0, 1.0)
