"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur.

Each corruption is a pair: ``*_params(rows, height, width)`` turns the five
CIFAR-10-C parameter tuples into arrays stacked over severities (static
numpy, built at trace time), and ``fn(key, image, p)`` corrupts one HWC
image in [0, 1] with one severity's slice ``p`` (possibly traced, so one
compiled program serves every severity).
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


def defocus_params(rows, height, width):
  """Kernels of all severities, cropped to their common non-zero support."""
  del height, width
  kernels = [defocus_kernel(*row) for row in rows]
  size = max(k.shape[0] for k in kernels)
  padded = np.stack(
    [np.pad(k, (size - k.shape[0]) // 2) for k in kernels]
  )  # odd sizes around a common centre
  support = np.nonzero(np.any(padded != 0, axis=0))
  half = max(np.abs(np.concatenate(support) - size // 2).max(), 0)
  centre = slice(size // 2 - half, size // 2 + half + 1)
  return {"kernel": padded[:, centre, centre].astype(np.float32)}


def defocus_blur(key, image, p):
  """Correlation with ``defocus_kernel`` (``cv2.filter2D`` borders)."""
  del key
  out = resample.correlate2d(image, p["kernel"], "mirror")
  return jnp.clip(out, 0.0, 1.0)


def gaussian_params(rows, height, width, *, truncate=4.0, mode="nearest"):
  """``skimage.filters.gaussian`` matrices for each severity's sigma."""
  sigmas = [row[0] for row in rows]
  return {
    "rows": np.stack(
      [
        resample.gaussian_matrix(height, s, truncate=truncate, mode=mode)
        for s in sigmas
      ]
    ).astype(np.float32),
    "cols": np.stack(
      [
        resample.gaussian_matrix(width, s, truncate=truncate, mode=mode)
        for s in sigmas
      ]
    ).astype(np.float32),
  }


def gaussian_blur(key, image, p):
  """``skimage.filters.gaussian(x, sigma)`` per channel (extra corruption)."""
  del key
  out = resample.apply_separable(image, p["rows"], p["cols"])
  return jnp.clip(out, 0.0, 1.0)


def glass_params(rows, height, width):
  """Gaussian matrices, pixel offsets ``-d..d-1`` and an iteration mask."""
  deltas = {row[1] for row in rows}
  if len(deltas) != 1:
    raise ValueError(f"glass_blur needs one max delta, got {deltas}.")
  (delta,) = deltas
  iterations = [row[2] for row in rows]
  params = gaussian_params(rows, height, width)
  params["offsets"] = np.tile(np.arange(-delta, delta), (5, 1))
  params["iteration_mask"] = (
    np.arange(max(iterations))[None] < np.array(iterations)[:, None]
  )
  return params


def glass_shuffle_permutation(
  key: jax.Array,
  height: int,
  width: int,
  offsets: jax.Array,
  iteration_mask: jax.Array,
) -> jax.Array:
  """Flat source indices of CIFAR-10-C's sequential local pixel "swaps".

  The reference visits, once per iteration, every position (h, w) with
  ``h`` from ``height - d`` down to ``d + 1`` and ``w`` likewise, draws
  ``dx, dy`` uniform over ``offsets`` (``randint(-d, d)``: -d..d-1) and runs
  ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with ``(h', w') = (h + dy,
  w + dx)`` on the uint8 image of shape (H, W, C). There ``x[h, w]`` is a
  numpy *view* (a pixel of C channels), so the right-hand tuple holds two
  views: the first assignment copies pixel (h', w') into (h, w), and the
  second copies (h, w) - by then already equal to (h', w') - back into
  (h', w'), which keeps its value. The "swap" is a copy: each step sets
  ``x[h, w] = x[h', w']``, so a pixel value moves at most one step per
  visit (a true swap would carry it along the scan). We reproduce that.
  The steps do not depend on pixel values, so the composed index map is
  computed on indices with a ``lax.fori_loop`` over the positions
  (sequential, as in the reference) and applied to the image with a
  single gather. It is not a permutation: some pixels are duplicated.

  Args:
    key: PRNG key.
    height: image height.
    width: image width.
    offsets: (2d,) int array ``-d..d-1``.
    iteration_mask: (max_iterations,) bool; the number of True entries is
      the number of iterations (offsets are drawn for all of them).

  Returns:
    int32 array ``src`` of length ``height * width``: the shuffled image is
    ``image.reshape(-1, C)[src]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> src = glass_shuffle_permutation(jax.random.key(0), 4, 4,
    ...                                 jnp.arange(-1, 1), jnp.array([True]))
    >>> src.shape, bool(jnp.all((src >= 0) & (src < 16)))
    ((16,), True)
  """
  delta = offsets.shape[0] // 2
  rows = np.arange(height - delta, delta, -1)
  cols = np.arange(width - delta, delta, -1)
  positions = (rows[:, None] * width + cols[None, :]).ravel()
  max_iterations = iteration_mask.shape[0]
  positions = jnp.asarray(np.tile(positions, max_iterations), jnp.int32)
  draws = jax.random.randint(
    key, (positions.shape[0], 2), 0, offsets.shape[0], jnp.int32
  )
  steps = positions.shape[0] // max_iterations * jnp.sum(iteration_mask)
  dx, dy = offsets[draws[:, 0]], offsets[draws[:, 1]]
  partners = positions + dy * width + dx

  def copy_from_partner(t, src):
    return src.at[positions[t]].set(src[partners[t]])

  identity = jnp.arange(height * width, dtype=jnp.int32)
  return jax.lax.fori_loop(0, steps, copy_from_partner, identity)


def glass_blur(key, image, p):
  """Gaussian blur, uint8 truncation, local pixel shuffle, Gaussian blur."""
  h, w, c = image.shape
  blurred = resample.apply_separable(image, p["rows"], p["cols"])
  blurred = jnp.floor(jnp.clip(blurred, 0.0, 1.0) * 255.0) / 255.0
  src = glass_shuffle_permutation(key, h, w, p["offsets"], p["iteration_mask"])
  shuffled = blurred.reshape(h * w, c)[src].reshape(h, w, c)
  out = resample.apply_separable(shuffled, p["rows"], p["cols"])
  return jnp.clip(out, 0.0, 1.0)


def motion_weights(radius: int, sigma: float, width: int) -> np.ndarray:
  """ImageMagick's one-sided Gaussian motion kernel, zero-padded to width.

  ``2 * ceil(radius) + 1`` taps ``exp(-i^2 / (2 sigma^2))``, i = 0, 1, ...,
  normalised to sum 1 (MagickCore/effect.c, ``MotionBlurImage``).
  """
  taps = np.arange(2 * int(np.ceil(radius)) + 1)
  weights = np.exp(-(taps**2) / (2.0 * sigma**2))
  return np.pad(weights / weights.sum(), (0, width - len(taps)))


def motion_blur_filter(
  image: jax.Array, weights: jax.Array, angle_degrees: jax.Array
) -> jax.Array:
  """ImageMagick's ``MotionBlurImage`` on HW or HWC data.

  Tap i (weight ``weights[i]``, see ``motion_weights``) reads the pixel at
  offset ``(ceil(i cos(a) - 1/2), ceil(i sin(a) - 1/2))`` (x = column,
  y = row) with edge-replicated virtual pixels, as ImageMagick does.
  Implemented directly (the reference calls ImageMagick through Wand); the
  weights and the angle may be traced.
  """
  width = weights.shape[0]
  angle = jnp.deg2rad(angle_degrees)
  taps = jnp.arange(width, dtype=jnp.float32)
  dx = jnp.ceil(taps * jnp.cos(angle) - 0.5).astype(jnp.int32)
  dy = jnp.ceil(taps * jnp.sin(angle) - 0.5).astype(jnp.int32)
  h, w = image.shape[:2]
  rows = jnp.clip(jnp.arange(h)[None, :] + dy[:, None], 0, h - 1)
  cols = jnp.clip(jnp.arange(w)[None, :] + dx[:, None], 0, w - 1)
  shifted = image[rows[:, :, None], cols[:, None, :]]  # (width, H, W, ...)
  weights = jnp.asarray(weights, image.dtype)
  return jnp.tensordot(weights, shifted, axes=1, precision=_HIGHEST)


def motion_params(rows, height, width):
  del height, width
  size = max(2 * int(np.ceil(r)) + 1 for r, _ in rows)
  return {
    "weights": np.stack([motion_weights(r, s, size) for r, s in rows]).astype(
      np.float32
    )
  }


def motion_blur(key, image, p):
  """Motion blur at an angle ~ U(-45, 45) degrees."""
  angle = jax.random.uniform(key, (), minval=-45.0, maxval=45.0)
  out = motion_blur_filter(image, p["weights"], angle)
  return jnp.clip(out, 0.0, 1.0)


def zoom_factors(max_zoom: float) -> np.ndarray:
  """``np.arange(1, max_zoom, 0.01)`` exactly as the reference.

  Floating-point rounding makes it include ``max_zoom`` itself for some
  stops (7 factors for 1.06, 12 for 1.11, 16 for 1.16, ...).
  """
  return np.arange(1, max_zoom, 0.01)


def zoom_params(rows, height, width):
  """Zoom matrices of the longest factor list, weights per severity."""
  lists = [zoom_factors(row[0]) for row in rows]
  longest = max(lists, key=len)
  for factors in lists:
    np.testing.assert_array_equal(factors, longest[: len(factors)])
  weights = np.zeros((5, len(longest)))
  for i, factors in enumerate(lists):
    weights[i, : len(factors)] = 1.0 / (len(factors) + 1)
  stack = lambda n: np.stack([resample.zoom_matrix(n, z) for z in longest])
  return {
    "rows": np.broadcast_to(stack(height), (5, len(longest), height, height)),
    "cols": np.broadcast_to(stack(width), (5, len(longest), width, width)),
    "weights": weights.astype(np.float32),
    "self_weight": (1.0 / np.array([len(f) + 1 for f in lists])).astype(
      np.float32
    ),
  }


def zoom_blur(key, image, p):
  """Mean of the image and its centre zooms by each of ``zoom_factors``."""
  del key
  rows = jnp.asarray(p["rows"], image.dtype) * p["weights"][:, None, None]
  zoomed = jnp.einsum("fhi,ijc->fhjc", rows, image, precision=_HIGHEST)
  cols = jnp.asarray(p["cols"], image.dtype)
  total = jnp.einsum("fwj,fhjc->hwc", cols, zoomed, precision=_HIGHEST)
  return jnp.clip(p["self_weight"] * image + total, 0.0, 1.0)
