"""Geometric variations: rotation, scale and translation by affine resampling.

Every geometric transform is an affine *source map* in pixel coordinates
``p = (row, col)`` about the image centre ``c = ((H-1)/2, (W-1)/2)``:
output pixel ``p`` takes the input value at ``c + M (p - c) + t``
(`AffineMap`). Conventions:

* ``rotation(image, degrees)``: positive = counter-clockwise on screen (row
  axis pointing down), so that 90 degrees equals ``jnp.rot90(image)``:
  ``M = [[cos, sin], [-sin, cos]]``, ``t = 0``.
* ``scale(image, factor)``: zoom about the centre, ``factor > 1`` enlarges:
  ``M = I / factor``, ``t = 0``.
* ``translation(image, shift)``: ``shift = (dy, dx)`` as fractions of
  ``(H, W)``; positive moves the content down / right: ``M = I``,
  ``t = -(dy H, dx W)``.

Applying map ``a`` and then map ``b`` is the single map `then(a, b)`
(``M = M_a M_b``, ``t = M_a t_b + t_a``), so `rotate_scale_translate` (and
``compose``) resamples once for rotation, scale and translation together:
one bilinear interpolation instead of three (cheaper, less interpolation
blur, and the border is filled once). The result equals the chain of
individual transforms exactly when every intermediate sampling point is a
pixel (e.g. multiples of 90 degrees and integer shifts), and otherwise up
to the interpolation error of the intermediate resamplings.

Sampling is bilinear (``jax.scipy.ndimage.map_coordinates``, ``order=1``).
Border mode: points that fall outside the image are filled with ``cval``
(``mode="constant"``, ``cval=0``: black, as kornia's default zero padding in
the CC-Cert code); any other ``map_coordinates`` mode can be passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from csam_jax._src import validation
from csam_jax._src.variations import base

Array = base.Array
GEOMETRIC_MODES = ("constant", "nearest", "wrap", "mirror", "reflect")


class AffineMap(NamedTuple):
  """Source map ``p -> c + matrix @ (p - c) + offset`` (pixel units).

  Attributes:
    matrix: (2, 2) float32, acting on centred (row, col) coordinates.
    offset: (2,) float32, (row, col) offset in pixels.
  """

  matrix: Array
  offset: Array


def rotation_map(degrees: Array | float) -> AffineMap:
  """`AffineMap` of a counter-clockwise rotation by ``degrees``."""
  theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  matrix = jnp.stack([jnp.stack([cos, sin]), jnp.stack([-sin, cos])])
  return AffineMap(matrix, jnp.zeros((2,), jnp.float32))


def scale_map(factor: Array | float) -> AffineMap:
  """`AffineMap` of a zoom by ``factor`` about the centre."""
  inverse = 1.0 / jnp.asarray(factor, jnp.float32)
  return AffineMap(inverse * jnp.eye(2), jnp.zeros((2,), jnp.float32))


def translation_map(
  shift: Array | Sequence[float], shape: Sequence[int]
) -> AffineMap:
  """`AffineMap` of a shift by ``(dy, dx)`` fractions of ``shape[:2]``."""
  shift = jnp.asarray(shift, jnp.float32)
  if shift.shape != (2,):
    raise ValueError(f"shift must have shape (2,), got {shift.shape}")
  size = jnp.asarray(shape[:2], jnp.float32)
  return AffineMap(jnp.eye(2), -shift * size)


def then(first: AffineMap, second: AffineMap) -> AffineMap:
  """The map of applying ``first`` and then ``second`` to an image."""
  # Output p of `second` reads its input at s2(p), which `first` read at
  # s1(s2(p)); 2x2 products at full precision (TPU default is bf16).
  hi = jax.lax.Precision.HIGHEST
  matrix = jnp.matmul(first.matrix, second.matrix, precision=hi)
  offset = jnp.matmul(first.matrix, second.offset, precision=hi)
  return AffineMap(matrix, offset + first.offset)


def affine(
  image: Array,
  source_map: AffineMap,
  *,
  mode: str = "constant",
  cval: float = 0.0,
) -> Array:
  """Resamples ``image`` bilinearly at the points of ``source_map``.

  Args:
    image: float HWC image in [0, 1].
    source_map: output pixel ``p`` reads the input at
      ``c + matrix @ (p - c) + offset``, ``c`` the image centre.
    mode: border mode of ``jax.scipy.ndimage.map_coordinates``, one of
      "constant", "nearest", "wrap", "mirror", "reflect".
    cval: fill value for ``mode="constant"``.

  Returns:
    The resampled image, clipped to [0, 1].

  Raises:
    ValueError: for a non-HWC image or an unknown mode.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([0.0, 1.0, 0.0, 0.0]).reshape(1, 4, 1)
    >>> m = AffineMap(jnp.eye(2), jnp.array([0.0, -1.0]))
    >>> affine(x, m).ravel().tolist()
    [0.0, 0.0, 1.0, 0.0]
  """
  image = base.check_image(image)
  validation.check_choice("mode", mode, GEOMETRIC_MODES)
  height, width, _ = image.shape
  cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
  dy, dx = jnp.meshgrid(
    jnp.arange(height, dtype=jnp.float32) - cy,
    jnp.arange(width, dtype=jnp.float32) - cx,
    indexing="ij",
  )
  (m00, m01), (m10, m11) = source_map.matrix
  rows = cy + m00 * dy + m01 * dx + source_map.offset[0]
  cols = cx + m10 * dy + m11 * dx + source_map.offset[1]
  # Materialise the input once: otherwise XLA fuses its producer (e.g. the
  # photometric steps of `compose`) into each of the four bilinear gathers.
  image = jax.lax.optimization_barrier(image)

  def one_channel(channel):
    return jax.scipy.ndimage.map_coordinates(
      channel, (rows, cols), order=1, mode=mode, cval=cval
    )

  out = jax.vmap(one_channel, in_axes=2, out_axes=2)(image)
  return base.clip(out.astype(image.dtype))


def rotation(
  image: Array,
  degrees: Array | float,
  *,
  mode: str = "constant",
  cval: float = 0.0,
) -> Array:
  """Rotates counter-clockwise about the image centre (bilinear).

  Args:
    image: float HWC image in [0, 1].
    degrees: the angle in degrees (0 is the identity; 90 equals
      ``jnp.rot90(image)`` for a square image).
    mode: border mode of ``jax.scipy.ndimage.map_coordinates``.
    cval: fill value for ``mode="constant"``.

  Returns:
    The rotated image, clipped to [0, 1].

  Raises:
    ValueError: for a non-HWC image or an unknown mode.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(9.0).reshape(3, 3, 1) / 8
    >>> bool(jnp.allclose(rotation(x, 90.0), jnp.rot90(x), atol=1e-6))
    True
  """
  return affine(image, rotation_map(degrees), mode=mode, cval=cval)


def translation(
  image: Array,
  shift: Array | Sequence[float],
  *,
  mode: str = "constant",
  cval: float = 0.0,
) -> Array:
  """Translates by ``shift = (dy, dx)`` fractions of ``(H, W)`` (bilinear).

  Args:
    image: float HWC image in [0, 1].
    shift: length-2 array, fractions of the height and width; positive
      moves the content down / right. (0, 0) is the identity.
    mode: border mode of ``jax.scipy.ndimage.map_coordinates``.
    cval: fill value for ``mode="constant"``.

  Returns:
    The translated image, clipped to [0, 1].

  Raises:
    ValueError: for a non-HWC image, an unknown mode or a shift that is not
      a pair.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([0.0, 1.0, 0.0, 0.0]).reshape(1, 4, 1)
    >>> translation(x, (0.0, 0.25)).ravel().tolist()
    [0.0, 0.0, 1.0, 0.0]
  """
  image = base.check_image(image)
  source_map = translation_map(shift, image.shape)
  return affine(image, source_map, mode=mode, cval=cval)


def scale(
  image: Array,
  factor: Array | float,
  *,
  mode: str = "constant",
  cval: float = 0.0,
) -> Array:
  """Zooms about the image centre by ``factor`` (bilinear; 1 = identity).

  Args:
    image: float HWC image in [0, 1].
    factor: zoom factor > 0; > 1 enlarges the content.
    mode: border mode of ``jax.scipy.ndimage.map_coordinates``.
    cval: fill value for ``mode="constant"``.

  Returns:
    The zoomed image, clipped to [0, 1].

  Raises:
    ValueError: for a non-HWC image, an unknown mode or a concrete
      ``factor <= 0``.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([0.0, 0.5, 1.0]).reshape(1, 3, 1)
    >>> scale(x, 2.0).ravel().tolist()
    [0.25, 0.5, 0.75]
  """
  validation.check_positive("factor", factor)
  return affine(image, scale_map(factor), mode=mode, cval=cval)


def rotate_scale_translate(
  image: Array,
  *,
  degrees: Array | float = 0.0,
  factor: Array | float = 1.0,
  shift: Array | Sequence[float] = (0.0, 0.0),
  mode: str = "constant",
  cval: float = 0.0,
) -> Array:
  """Rotation, then scale, then translation, in ONE bilinear resampling.

  The source map is ``then(then(rotation_map, scale_map), translation_map)``
  (module docstring), so only the final image is interpolated and its
  border filled. With the identity for two of the three parameters it
  equals the remaining individual transform exactly.

  Args:
    image: float HWC image in [0, 1].
    degrees: rotation angle (see `rotation`).
    factor: zoom factor > 0 (see `scale`).
    shift: ``(dy, dx)`` fractions of ``(H, W)`` (see `translation`).
    mode: border mode of ``jax.scipy.ndimage.map_coordinates``.
    cval: fill value for ``mode="constant"``.

  Returns:
    The transformed image, clipped to [0, 1].

  Raises:
    ValueError: for a non-HWC image, an unknown mode, a shift that is not a
      pair or a concrete ``factor <= 0``.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 15
    >>> seq = translation(rotation(x, 90.0), (0.25, 0.0))
    >>> one = rotate_scale_translate(x, degrees=90.0, shift=(0.25, 0.0))
    >>> bool(jnp.allclose(one, seq, atol=1e-6))
    True
  """
  image = base.check_image(image)
  validation.check_positive("factor", factor)
  source_map = then(
    then(rotation_map(degrees), scale_map(factor)),
    translation_map(shift, image.shape),
  )
  return affine(image, source_map, mode=mode, cval=cval)
