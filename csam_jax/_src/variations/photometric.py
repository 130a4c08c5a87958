"""Pointwise photometric variations and additive sensor noise.

* ``brightness(image, delta)``: ``x + delta`` (additive; identity at 0).
* ``contrast(image, factor)``: ``(x - m) * factor + m`` where ``m`` is the
  mean of the image over all pixels and channels (``center="mean"``, the
  torchvision-style convention; identity at 1). ``center="zero"`` gives
  ``x * factor``, the convention of kornia's ``adjust_contrast`` that the
  CC-Cert code calls.
* ``gamma(image, exponent)``: ``x ** exponent`` (identity at 1).
* ``gaussian_noise(key, image, sigma)``: ``x + sigma * N(0, 1)``.

Every output is clipped to [0, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from csam_jax._src import validation
from csam_jax._src.variations import base

Array = base.Array
CONTRAST_CENTERS = ("mean", "zero")


def brightness(image: Array, delta: Array | float) -> Array:
  """Additive brightness change ``clip(x + delta)``.

  Args:
    image: float HWC image in [0, 1].
    delta: the additive shift (0 is the identity).

  Returns:
    The shifted image, clipped to [0, 1].

  Raises:
    ValueError: for an image that is not HWC.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(brightness(jnp.full((2, 2, 1), 0.5), 0.25)[0, 0, 0]), 6)
    0.75
  """
  return base.clip(base.check_image(image) + delta)


def contrast(
  image: Array, factor: Array | float, *, center: str = "mean"
) -> Array:
  """Multiplicative contrast change about the image mean (or about 0).

  Args:
    image: float HWC image in [0, 1].
    factor: contrast factor (1 is the identity).
    center: "mean" (``(x - m) * factor + m``, ``m`` the mean over all pixels
      and channels of this image) or "zero" (``x * factor``, kornia).

  Returns:
    The image with changed contrast, clipped to [0, 1].

  Raises:
    ValueError: for an unknown ``center`` or an image that is not HWC.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([0.25, 0.75]).reshape(1, 2, 1)
    >>> contrast(x, 2.0).ravel().tolist()
    [0.0, 1.0]
  """
  image = base.check_image(image)
  validation.check_choice("center", center, CONTRAST_CENTERS)
  if center == "mean":
    mean = jnp.mean(image)
    return base.clip((image - mean) * factor + mean)
  return base.clip(image * factor)


def gamma(image: Array, exponent: Array | float) -> Array:
  """Gamma correction ``x ** exponent`` (1 is the identity).

  Args:
    image: float HWC image in [0, 1].
    exponent: the gamma exponent, > 0.

  Returns:
    The corrected image, clipped to [0, 1].

  Raises:
    ValueError: for a concrete ``exponent <= 0`` or an image that is not HWC.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(gamma(jnp.full((1, 1, 1), 0.25), 0.5)[0, 0, 0]), 6)
    0.5
  """
  validation.check_positive("exponent", exponent)
  image = base.check_image(image)
  # exp(e log x), not jnp.power: 5x faster on CPU (XLA's pow handles signs
  # and integer exponents), the same for x in [0, 1] and e > 0 up to
  # rounding, and exactly 0 at x = 0 (log 0 = -inf).
  return base.clip(jnp.exp(exponent * jnp.log(image)))


def gaussian_noise(key: Array, image: Array, sigma: Array | float) -> Array:
  """Adds i.i.d. Gaussian noise ``sigma * N(0, 1)`` to every pixel.

  Args:
    key: PRNG key of the noise.
    image: float HWC image in [0, 1].
    sigma: noise standard deviation, >= 0 (0 is the identity).

  Returns:
    The noisy image, clipped to [0, 1].

  Raises:
    ValueError: for a concrete negative ``sigma`` or an image that is not HWC.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.full((2, 2, 3), 0.5)
    >>> gaussian_noise(jax.random.key(0), x, 0.1).shape
    (2, 2, 3)
  """
  image = base.check_image(image)
  validation.check_nonnegative("sigma", sigma)
  noise = jax.random.normal(key, image.shape, image.dtype)
  return base.clip(image + sigma * noise)
