"""Digital corruptions: brightness, contrast, saturate, elastic, pixelate.

Each corruption takes one HWC float image in [0, 1] plus the CIFAR-10-C
severity parameters and returns an image in [0, 1]. (JPEG lives in jpeg.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src.corruptions import color, resample


def brightness(key, image, shift: float):
  """HSV value + ``shift``, clipped to [0, 1], back to RGB."""
  del key
  hsv = color.rgb_to_hsv(image)
  hsv = hsv.at[..., 2].set(jnp.clip(hsv[..., 2] + shift, 0.0, 1.0))
  return jnp.clip(color.hsv_to_rgb(hsv), 0.0, 1.0)


def saturate(key, image, scale: float, offset: float):
  """HSV saturation ``* scale + offset``, clipped (extra corruption)."""
  del key
  hsv = color.rgb_to_hsv(image)
  saturation = jnp.clip(hsv[..., 1] * scale + offset, 0.0, 1.0)
  hsv = hsv.at[..., 1].set(saturation)
  return jnp.clip(color.hsv_to_rgb(hsv), 0.0, 1.0)


def contrast(key, image, factor: float):
  """``(x - mean) * factor + mean`` with per-channel spatial means."""
  del key
  means = jnp.mean(image, axis=(0, 1), keepdims=True)
  return jnp.clip((image - means) * factor + means, 0.0, 1.0)


def pixelate(key, image, factor: float):
  """Pillow BOX resize to ``int(size * factor)`` and back (per axis)."""
  del key
  h, w = image.shape[:2]
  small_h, small_w = int(h * factor), int(w * factor)
  rows = resample.pil_box_matrix(small_h, h) @ resample.pil_box_matrix(
    h, small_h
  )
  cols = resample.pil_box_matrix(small_w, w) @ resample.pil_box_matrix(
    w, small_w
  )
  return jnp.clip(resample.apply_separable(image, rows, cols), 0.0, 1.0)


def _random_affine(key: jax.Array, height: int, width: int, max_shift: float):
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


def elastic_transform(
  key,
  image,
  alpha_fraction: float,
  sigma_fraction: float,
  shift_fraction: float,
):
  """Random affine warp, then a smooth random displacement field.

  As the reference: ``cv2.warpAffine`` (bilinear, ``BORDER_REFLECT_101``)
  with a random affine map, then displacements ``alpha * gaussian(U(-1, 1),
  sigma, mode="reflect", truncate=3)`` per axis, resampled bilinearly with
  ``map_coordinates(mode="reflect")``. ``alpha``, ``sigma`` and the
  affine ``max_shift`` are the given fractions times the image size
  (``min(H, W)``; 32 in the CIFAR script). OpenCV's 5-bit fixed-point
  interpolation weights are replaced by exact float weights.
  """
  affine_key, dx_key, dy_key = jax.random.split(key, 3)
  h, w = image.shape[:2]
  alpha = alpha_fraction * min(h, w)
  sigma = sigma_fraction * min(h, w)
  max_shift = shift_fraction * min(h, w)
  linear_inv, offset_inv = _random_affine(affine_key, h, w, max_shift)
  yy, xx = jnp.meshgrid(
    jnp.arange(h, dtype=jnp.float32),
    jnp.arange(w, dtype=jnp.float32),
    indexing="ij",
  )
  src_x = linear_inv[0, 0] * xx + linear_inv[0, 1] * yy + offset_inv[0]
  src_y = linear_inv[1, 0] * xx + linear_inv[1, 1] * yy + offset_inv[1]
  warped = resample.bilinear_sample(image, src_y, src_x, "mirror")
  if alpha == 0:
    return jnp.clip(warped, 0.0, 1.0)

  def displacement(k):
    field = jax.random.uniform(k, (h, w), minval=-1.0, maxval=1.0)
    smooth = resample.apply_separable(
      field,
      resample.gaussian_matrix(h, sigma, truncate=3.0, mode="reflect"),
      resample.gaussian_matrix(w, sigma, truncate=3.0, mode="reflect"),
    )
    return alpha * smooth

  out = resample.bilinear_sample(
    warped, yy + displacement(dy_key), xx + displacement(dx_key), "reflect"
  )
  return jnp.clip(out, 0.0, 1.0)
