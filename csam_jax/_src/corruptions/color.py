"""RGB <-> HSV and luma in JAX, with skimage's / matplotlib's conventions.

Hue in [0, 1), S = (max - min) / max (0 where max = 0), V = max; hue and
saturation are 0 for grey pixels. Hand-written because neither jax nor
jax.scipy ships a colour-space conversion (dm_pix has none for HSV with these
conventions either).
"""

import jax
import jax.numpy as jnp


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """RGB (..., 3) in [0, 1] to HSV (..., 3), as skimage.color.rgb2hsv."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  value = jnp.max(rgb, axis=-1)
  delta = value - jnp.min(rgb, axis=-1)
  positive = delta > 0
  safe_delta = jnp.where(positive, delta, 1.0)
  safe_value = jnp.where(value > 0, value, 1.0)
  saturation = jnp.where(value > 0, delta / safe_value, 0.0)
  # Ties resolve as in skimage / matplotlib: blue over green over red.
  hue = jnp.where(
    b == value,
    4.0 + (r - g) / safe_delta,
    jnp.where(g == value, 2.0 + (b - r) / safe_delta, (g - b) / safe_delta),
  )
  hue = jnp.where(positive, (hue / 6.0) % 1.0, 0.0)
  return jnp.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """HSV (..., 3) to RGB (..., 3), as skimage.color.hsv2rgb."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  sector = jnp.floor(h * 6.0)
  f = h * 6.0 - sector
  sector = sector.astype(jnp.int32) % 6
  p = v * (1.0 - s)
  q = v * (1.0 - s * f)
  t = v * (1.0 - s * (1.0 - f))
  choices_r = jnp.stack([v, q, p, p, t, v], axis=-1)
  choices_g = jnp.stack([t, v, v, q, p, p], axis=-1)
  choices_b = jnp.stack([p, p, t, v, v, q], axis=-1)
  pick = lambda c: jnp.take_along_axis(c, sector[..., None], axis=-1)[..., 0]
  return jnp.stack([pick(choices_r), pick(choices_g), pick(choices_b)], -1)


def rgb_to_gray(rgb: jax.Array) -> jax.Array:
  """ITU-R BT.601 luma (..., 3) -> (...), as ``cv2.COLOR_RGB2GRAY``."""
  return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
