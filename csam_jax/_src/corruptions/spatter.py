"""The spatter corruption (an extra of CIFAR-10-C): water drops or mud.

The reference builds its water layer with OpenCV (Canny edges, a 5x5
chamfer distance transform, histogram equalisation, an emboss filter).
Those steps are implemented here in JAX following OpenCV's algorithms
(OpenCV is not a dependency; the steps were checked against it offline).
"""

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src.corruptions import resample

_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float64)
_BOX3 = np.full((3, 3), 1.0 / 9.0)
_TAN_22_5 = float(np.tan(np.pi / 8))


def _dilate(mask: jax.Array) -> jax.Array:
  padded = jnp.pad(mask, 1)
  h, w = mask.shape
  shifts = [
    padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)
  ]
  return jnp.any(jnp.stack(shifts), axis=0)


def canny(image: jax.Array, low: float, high: float) -> jax.Array:
  """``cv2.Canny(image, low, high)`` (L1 gradient) on an (H, W) 0..255 image.

  Sobel gradients with replicated borders, non-maximum suppression in four
  direction sectors (OpenCV's comparisons, zero magnitude outside the
  image), double threshold and 8-connected hysteresis (a while loop of
  dilations until no weak pixel joins).
  """
  dx = resample.correlate2d(image, _SOBEL_X, "nearest")
  dy = resample.correlate2d(image, _SOBEL_X.T, "nearest")
  mag = jnp.abs(dx) + jnp.abs(dy)
  h, w = mag.shape
  pad = jnp.pad(mag, 1)
  at = lambda oy, ox: pad[1 + oy : 1 + oy + h, 1 + ox : 1 + ox + w]
  ax, ay = jnp.abs(dx), jnp.abs(dy)
  horizontal = ay < ax * _TAN_22_5
  vertical = ay > ax * (_TAN_22_5 + 2.0)
  same_sign = (dx < 0) == (dy < 0)
  diagonal_max = jnp.where(
    same_sign,
    (mag > at(-1, -1)) & (mag > at(1, 1)),
    (mag > at(-1, 1)) & (mag > at(1, -1)),
  )
  local_max = jnp.where(
    horizontal,
    (mag > at(0, -1)) & (mag >= at(0, 1)),
    jnp.where(vertical, (mag > at(-1, 0)) & (mag >= at(1, 0)), diagonal_max),
  )
  weak = local_max & (mag > low)
  strong = weak & (mag > high)

  def grow(state):
    edges, _ = state
    grown = edges | (weak & _dilate(edges))
    return grown, jnp.any(grown != edges)

  edges, _ = jax.lax.while_loop(lambda s: s[1], grow, (strong, True))
  return edges


# OpenCV's 5x5 chamfer weights for DIST_L2 (distance.cpp): axial, diagonal
# and knight moves.
_CHAMFER_MOVES = tuple(
  (dy, dx, cost)
  for dy in range(-2, 3)
  for dx in range(-2, 3)
  for cost in [{1: 1.0, 2: 1.4, 5: 2.1969}.get(dy * dy + dx * dx)]
  if cost is not None
)


def chamfer_distance(mask: jax.Array, cap: float) -> jax.Array:
  """``min(cv2.distanceTransform(~mask, DIST_L2, 5), cap)`` (H, W).

  OpenCV's 5x5 chamfer distance is the cheapest path to a True pixel with
  axial (1), diagonal (1.4) and knight (2.1969) moves. It is computed by
  min-plus relaxation over the 16 moves until nothing changes, starting
  from ``cap + 3`` away from the mask, so only distances up to the cap are
  propagated (a few dozen iterations at most).
  """
  h, w = mask.shape
  big = cap + 3.0
  dist = jnp.where(mask, 0.0, big)

  def relax(state):
    dist, _ = state
    padded = jnp.pad(dist, 2, constant_values=big)
    best = dist
    for dy, dx, cost in _CHAMFER_MOVES:
      moved = padded[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
      best = jnp.minimum(best, moved + cost)
    return best, jnp.any(best < dist)

  dist, _ = jax.lax.while_loop(lambda s: s[1], relax, (dist, True))
  return jnp.minimum(dist, cap)


def equalize_hist(image: jax.Array) -> jax.Array:
  """``cv2.equalizeHist`` of an (H, W) image of integers 0..255."""
  levels = image.astype(jnp.int32).ravel()
  hist = jnp.bincount(levels, length=256)
  cdf = jnp.cumsum(hist)
  first = jnp.argmax(hist > 0)
  total = levels.shape[0]
  below = cdf[first]
  scale = 255.0 / jnp.maximum(total - below, 1)
  lut = jnp.clip(jnp.round((cdf - below) * scale), 0, 255)
  lut = jnp.where(below == total, first.astype(lut.dtype), lut)
  return lut[levels].reshape(image.shape).astype(jnp.float32)


def _water_layer(liquid: jax.Array) -> jax.Array:
  """The embossed, equalised distance-to-drop-edge map (reference steps).

  Liquid values above 1 (rare) are clipped before the uint8 conversion,
  where the reference's numpy cast would wrap around.
  """
  liquid8 = jnp.floor(jnp.clip(liquid, 0.0, 1.0) * 255.0)
  edges = canny(liquid8, 50.0, 150.0)
  dist = chamfer_distance(edges, 20.0)
  dist = jnp.floor(resample.correlate2d(dist, _BOX3, "mirror"))
  dist = equalize_hist(dist)
  dist = jnp.clip(
    jnp.round(resample.correlate2d(dist, _EMBOSS, "mirror")), 0, 255
  )
  dist = jnp.round(resample.correlate2d(dist, _BOX3, "mirror"))
  return liquid8 * dist


def spatter_params(rows, height, width):
  """Scalars and Gaussian matrices (liquid blur; mud mask blur)."""
  table = np.array(rows, np.float64)
  mud = table[:, 5] == 1

  def gauss(n, sigmas):
    return np.stack([resample.gaussian_matrix(n, s) for s in sigmas]).astype(
      np.float32
    )

  mud_sigmas = np.where(mud, table[:, 4], 0.0)
  return {
    "mean": table[:, 0].astype(np.float32),
    "std": table[:, 1].astype(np.float32),
    "liquid_rows": gauss(height, table[:, 2]),
    "liquid_cols": gauss(width, table[:, 2]),
    "threshold": table[:, 3].astype(np.float32),
    "strength": table[:, 4].astype(np.float32),
    "mud": mud,
    "mud_rows": gauss(height, mud_sigmas),
    "mud_cols": gauss(width, mud_sigmas),
  }


def spatter(key, image, p):
  """Water drops (severities 1-3) or mud splashes (severities 4-5).

  A liquid layer ``gaussian(N(mean, std^2), sigma)`` is zeroed below
  ``threshold``. Water: the layer times the processed distance map,
  normalised to max 1, times ``strength``, adds pale turquoise
  (175, 238, 238)/255. Mud: the thresholded mask blurred with
  ``sigma = strength``, zeroed below 0.8, blends the image towards mud
  brown (63, 42, 20)/255. Both are computed and one is selected, so the
  severity may be traced.
  """
  h, w = image.shape[:2]
  liquid = p["mean"] + p["std"] * jax.random.normal(key, (h, w))
  liquid = resample.apply_separable(liquid, p["liquid_rows"], p["liquid_cols"])
  liquid = jnp.where(liquid < p["threshold"], 0.0, liquid)
  m = _water_layer(liquid)
  m = p["strength"] * m / jnp.maximum(m.max(), 1e-12)
  water_rgb = jnp.asarray([175.0, 238.0, 238.0]) / 255.0
  water = jnp.clip(image + m[..., None] * water_rgb, 0.0, 1.0)
  m = (liquid > p["threshold"]).astype(jnp.float32)
  m = resample.apply_separable(m, p["mud_rows"], p["mud_cols"])
  m = jnp.where(m < 0.8, 0.0, m)[..., None]
  brown = jnp.asarray([63.0, 42.0, 20.0]) / 255.0
  mud = jnp.clip(image * (1 - m) + brown * m, 0.0, 1.0)
  return jnp.where(p["mud"], mud, water)
