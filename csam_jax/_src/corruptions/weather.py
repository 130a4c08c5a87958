"""Weather corruptions: fog (plasma fractal), snow and frost.

Each corruption takes one HWC float image in [0, 1] plus the CIFAR-10-C
severity parameters and returns an image in [0, 1].
"""

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src.corruptions import blur, color, resample


def plasma_fractal(
  key: jax.Array, mapsize: int, wibble_decay: float | jax.Array
) -> jax.Array:
  """Diamond-square height map in [0, 1], as CIFAR-10-C's ``plasma_fractal``.

  ``mapsize`` must be a power of two. Starting from a zero corner with
  ``wibble = 100``, each level fills square centres and then diamond
  centres (toroidal neighbours, as ``np.roll`` in the reference) with the
  mean of their four neighbours plus ``wibble * U(-wibble, wibble)``, then
  halves the step and divides ``wibble`` by ``wibble_decay``; finally the
  map is min-max normalised. The loop over levels is static;
  ``wibble_decay`` may be traced.

  Example:
    >>> import jax
    >>> m = plasma_fractal(jax.random.key(0), 32, 3.0)
    >>> m.shape, float(m.min()), float(m.max())
    ((32, 32), 0.0, 1.0)
  """
  if mapsize < 2 or mapsize & (mapsize - 1):
    raise ValueError(f"`mapsize` must be a power of two, got {mapsize}.")
  # The grid at step s is kept as its (n/s, n/s) sub-grid of corners; each
  # level interleaves corners, row diamonds, column diamonds and square
  # centres into the next finer sub-grid (no strided scatters).
  levels = mapsize.bit_length() - 1
  sizes = [4**level for level in range(levels)]  # k * k for k = 2**level
  # One draw for all levels: 3 fills (squares, row and column diamonds) of
  # k * k values each; U(-1, 1) is scaled by wibble below.
  unit_noise = jax.random.uniform(key, (3 * sum(sizes),), minval=-1.0)
  corners = jnp.zeros((1, 1), jnp.float32)
  offset = 0
  for level in range(levels):
    k = 2**level
    wibble = 100.0 / jnp.asarray(wibble_decay, jnp.float32) ** level
    noise = unit_noise[offset : offset + 3 * k * k].reshape(3, k, k)
    noise = wibble * wibble * noise
    offset += 3 * k * k
    total = corners + jnp.roll(corners, -1, axis=0)
    total = total + jnp.roll(total, -1, axis=1)
    squares = total / 4 + noise[0]
    total = squares + jnp.roll(squares, 1, axis=0)
    total = total + corners + jnp.roll(corners, -1, axis=1)
    row_diamonds = total / 4 + noise[1]
    total = squares + jnp.roll(squares, 1, axis=1)
    total = total + corners + jnp.roll(corners, -1, axis=0)
    col_diamonds = total / 4 + noise[2]
    corners = jnp.stack(
      [jnp.stack([corners, row_diamonds]), jnp.stack([col_diamonds, squares])]
    )  # (2, 2, k, k): [row parity, column parity]
    corners = corners.transpose(2, 0, 3, 1).reshape(2 * k, 2 * k)
  grid = corners
  grid = grid - grid.min()
  return grid / grid.max()


def _plasma_for(key: jax.Array, image: jax.Array, wibble_decay: float):
  h, w = image.shape[:2]
  size = resample.next_power_of_two(max(h, w))
  return plasma_fractal(key, size, wibble_decay)[:h, :w]


def fog(key, image, p):
  """``clip((x + s * plasma) * max(x) / (max(x) + s))``, s = strength."""
  strength = p["strength"]
  max_value = jnp.max(image)
  plasma = _plasma_for(key, image, p["wibble_decay"])[..., None]
  fogged = image + strength * plasma
  return jnp.clip(fogged * max_value / (max_value + strength), 0.0, 1.0)


def snow_params(rows, height, width):
  """Scalars, zoom matrices and motion kernels of the snow layer."""
  cols = np.array(rows, np.float64)
  size = max(2 * int(np.ceil(r[4])) + 1 for r in rows)
  return {
    "mean": cols[:, 0].astype(np.float32),
    "std": cols[:, 1].astype(np.float32),
    "zoom_rows": np.stack(
      [resample.zoom_matrix(height, r[2]) for r in rows]
    ).astype(np.float32),
    "zoom_cols": np.stack(
      [resample.zoom_matrix(width, r[2]) for r in rows]
    ).astype(np.float32),
    "threshold": cols[:, 3].astype(np.float32),
    "motion_weights": np.stack(
      [blur.motion_weights(r[4], r[5], size) for r in rows]
    ).astype(np.float32),
    "blend": cols[:, 6].astype(np.float32),
  }


def snow(key, image, p):
  """Snow layer (thresholded zoomed noise, motion-blurred) over a greyed image.

  As the reference: a Gaussian layer ``N(mean, std^2)`` zoomed by ``zoom``
  (``clipped_zoom``), zeroed below ``threshold``, quantised to uint8,
  motion-blurred (ImageMagick kernel of the severity's radius and sigma,
  angle ~ U(-135, -45)); the image becomes ``blend * x + (1 - blend) *
  max(x, 1.5 * gray(x) + 0.5)`` and the layer and its 180-degree rotation
  are added.
  """
  layer_key, angle_key = jax.random.split(key)
  h, w = image.shape[:2]
  layer = p["mean"] + p["std"] * jax.random.normal(layer_key, (h, w))
  layer = resample.apply_separable(layer, p["zoom_rows"], p["zoom_cols"])
  layer = jnp.where(layer < p["threshold"], 0.0, layer)
  layer = jnp.floor(jnp.clip(layer, 0.0, 1.0) * 255.0) / 255.0
  angle = jax.random.uniform(angle_key, (), minval=-135.0, maxval=-45.0)
  layer = blur.motion_blur_filter(layer, p["motion_weights"], angle)
  layer = layer[..., None]
  gray = color.rgb_to_gray(image)[..., None]
  blend = p["blend"]
  image = blend * image + (1 - blend) * jnp.maximum(image, gray * 1.5 + 0.5)
  return jnp.clip(image + layer + layer[::-1, ::-1], 0.0, 1.0)


# Mean RGB of 32 px crops of the five frost photos CIFAR-10-C samples from
# (frost1-5 of the reference, resized by 0.2 as there; measured on the copies
# shipped by the `imagecorruptions` package).
FROST_TINT = (0.563, 0.647, 0.694)


def frost_texture(key: jax.Array, height: int, width: int) -> jax.Array:
  """A procedural frost texture (H, W, 3) in [0, 1].

  The reference crops one of five frost photographs (not part of any
  jax-only package; ``imagecorruptions`` ships them but pulls in OpenCV and
  scikit-image). The default texture is therefore generated, matched to the
  photos' first two moments: a rough plasma fractal (frozen film,
  ``wibble_decay = 1.5``) plus ice needles (sparse seeds motion-blurred along
  three random directions), standardised and scaled to a spatial standard
  deviation of 0.09 (the photos' 32 px crops: 0.05 to 0.14, mean 0.09),
  added to ``level * FROST_TINT`` with ``level ~ U(0.7, 1.2)`` (the
  photos' mean blue level spans 0.49 to 0.83, i.e. 0.71 to 1.2 times the
  tint's).

  Example:
    >>> import jax
    >>> frost_texture(jax.random.key(0), 32, 32).shape
    (32, 32, 3)
  """
  keys = jax.random.split(key, 5)
  size = resample.next_power_of_two(max(height, width))
  film = plasma_fractal(keys[0], size, 1.5)[:height, :width]
  seeds = jax.random.bernoulli(keys[1], 0.03, (height, width))
  seeds = seeds.astype(jnp.float32)
  angles = jax.random.uniform(keys[2], (3,), minval=-180.0, maxval=180.0)
  needle_weights = blur.motion_weights(6, 3.0, 13)
  needles = sum(
    blur.motion_blur_filter(seeds, needle_weights, angles[i]) for i in range(3)
  )
  needles = needles / jnp.maximum(needles.max(), 1e-6)
  detail = 0.6 * film + 0.4 * needles
  detail = (detail - detail.mean()) / jnp.maximum(detail.std(), 1e-6)
  level = jax.random.uniform(keys[3], (), minval=0.7, maxval=1.2)
  tint = jnp.asarray(FROST_TINT, jnp.float32)
  texture = level * tint + 0.09 * detail[..., None]
  return jnp.clip(texture, 0.0, 1.0)


def frost(key, image, p):
  """``clip(image_weight * x + frost_weight * frost_texture)``."""
  h, w = image.shape[:2]
  texture = frost_texture(key, h, w).astype(image.dtype)
  out = p["image_weight"] * image + p["frost_weight"] * texture
  return jnp.clip(out, 0.0, 1.0)
