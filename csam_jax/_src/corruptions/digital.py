"""Digital corruptions: brightness, contrast, saturate, elastic, pixelate.

Each corruption takes one HWC float image in [0, 1] plus the CIFAR-10-C
severity parameters and returns an image in [0, 1]. (JPEG lives in jpeg.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src.corruptions import color, resample


def brightness(key, image, p):
  """HSV value + ``shift``, clipped to [0, 1], back to RGB."""
  del key
  hsv = color.rgb_to_hsv(image)
  hsv = hsv.at[..., 2].set(jnp.clip(hsv[..., 2] + p["shift"], 0.0, 1.0))
  return jnp.clip(color.hsv_to_rgb(hsv), 0.0, 1.0)


def saturate(key, image, p):
  """HSV saturation ``* scale + offset``, clipped (extra corruption)."""
  del key
  hsv = color.rgb_to_hsv(image)
  saturation = hsv[..., 1] * p["scale"] + p["offset"]
  saturation = jnp.clip(saturation, 0.0, 1.0)
  hsv = hsv.at[..., 1].set(saturation)
  return jnp.clip(color.hsv_to_rgb(hsv), 0.0, 1.0)


def contrast(key, image, p):
  """``(x - mean) * factor + mean`` with per-channel spatial means."""
  del key
  means = jnp.mean(image, axis=(0, 1), keepdims=True)
  return jnp.clip((image - means) * p["factor"] + means, 0.0, 1.0)


def pixelate_params(rows, height, width):
  """Pillow BOX down to ``int(size * factor)`` then up, as one matrix."""

  def matrix(n, factor):
    small = int(n * factor)
    return resample.pil_box_matrix(small, n) @ resample.pil_box_matrix(n, small)

  return {
    "rows": np.stack([matrix(height, r[0]) for r in rows]).astype(np.float32),
    "cols": np.stack([matrix(width, r[0]) for r in rows]).astype(np.float32),
  }


def pixelate(key, image, p):
  """Pillow BOX resize to ``int(size * factor)`` and back (per axis)."""
  del key
  out = resample.apply_separable(image, p["rows"], p["cols"])
  return jnp.clip(out, 0.0, 1.0)


def _random_affine(key: jax.Array, height: int, width: int, max_shift):
  """Inverse of the reference's random 3-point affine map (dst -> src).

  The reference moves three points around the image centre by
  U(-max_shift, max_shift) each, fits ``cv2.getAffineTransform`` and warps
  with ``cv2.warpAffine``, which samples the source at the inverse map.
  Points are (x, y) = (column, row).
  """
  centre = np.array([width // 2, height // 2], np.float32)
  half = min(height, width) // 3
  src_points = np.stack(
    [centre + half, centre + [half, -half], centre - half]
  ).astype(np.float32)
  shift = jax.random.uniform(key, (3, 2), minval=-max_shift, maxval=max_shift)
  dst_points = jnp.asarray(src_points) + shift
  # Solve dst = A @ src + b for the 2x3 forward map, then invert it.
  design = jnp.concatenate([jnp.asarray(src_points), jnp.ones((3, 1))], 1)
  forward = jnp.linalg.solve(design, dst_points).T  # (2, 3)
  linear_inv = jnp.linalg.inv(forward[:, :2])
  return linear_inv, -linear_inv @ forward[:, 2]


def elastic_params(rows, height, width):
  """Sizes in pixels (fractions times ``min(H, W)``, 32 in the script)."""
  size = min(height, width)
  sigmas = [r[1] * size for r in rows]
  gauss = lambda n: np.stack(
    [
      resample.gaussian_matrix(n, s, truncate=3.0, mode="reflect")
      for s in sigmas
    ]
  ).astype(np.float32)
  return {
    "alpha": np.array([r[0] * size for r in rows], np.float32),
    "rows": gauss(height),
    "cols": gauss(width),
    "max_shift": np.array([r[2] * size for r in rows], np.float32),
  }


def elastic_transform(key, image, p):
  """Random affine warp, then a smooth random displacement field.

  As the reference: ``cv2.warpAffine`` (bilinear, ``BORDER_REFLECT_101``)
  with a random affine map, then displacements ``alpha * gaussian(U(-1, 1),
  sigma, mode="reflect", truncate=3)`` per axis, resampled bilinearly with
  ``map_coordinates(mode="reflect")``. OpenCV's 5-bit fixed-point
  interpolation weights are replaced by exact float weights.
  """
  affine_key, dx_key, dy_key = jax.random.split(key, 3)
  h, w = image.shape[:2]
  linear_inv, offset_inv = _random_affine(affine_key, h, w, p["max_shift"])
  yy, xx = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32),
    jnp.arange(w, dtype=jnp.float32),
    indexing="ij",
  )
  src_x = linear_inv[0, 0] * xx + linear_inv[0, 1] * yy + offset_inv[0]
  src_y = linear_inv[1, 0] * xx + linear_inv[1, 1] * yy + offset_inv[1]
  warped = resample.bilinear_sample(image, src_y, src_x, "mirror")

  def displacement(k):
    field = jax.random.uniform(k, (h, w), minval=-1.0, maxval=1.0)
    smooth = resample.apply_separable(field, p["rows"], p["cols"])
    return p["alpha"] * smooth

  # alpha = 0 (severity 1) gives integer coordinates: an exact copy.
  out = resample.bilinear_sample(
    warped, yy + displacement(dy_key), xx + displacement(dx_key), "reflect"
  )
  return jnp.clip(out, 0.0, 1.0)
