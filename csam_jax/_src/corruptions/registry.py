"""Names, CIFAR-10-C severity tables, ``corrupt`` and the corruption sampler.

Severity parameters are those of the CIFAR-10-C script
(hendrycks/robustness ``ImageNet-C/create_c/make_cifar_c.py``), not the
ImageNet-C ones (which are far too strong at 32 px).
"""

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from csam_jax._src.corruptions import (
  blur,
  digital,
  jpeg,
  noise,
  spatter,
  weather,
)


class Corruption(NamedTuple):
  """A corruption family.

  Attributes:
    fn: ``fn(key, image_hwc, *params) -> image_hwc`` for one image.
    severities: five parameter tuples, for severities 1..5.
  """

  fn: Callable[..., jax.Array]
  severities: tuple[tuple, ...]


_TABLE: dict[str, Corruption] = {
  "gaussian_noise": Corruption(
    noise.gaussian_noise, ((0.04,), (0.06,), (0.08,), (0.09,), (0.10,))
  ),
  "shot_noise": Corruption(
    noise.shot_noise, ((500,), (250,), (100,), (75,), (50,))
  ),
  "impulse_noise": Corruption(
    noise.impulse_noise, ((0.01,), (0.02,), (0.03,), (0.05,), (0.07,))
  ),
  "defocus_blur": Corruption(
    blur.defocus_blur,
    ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
  ),
  "glass_blur": Corruption(
    blur.glass_blur,
    ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
  ),
  "motion_blur": Corruption(
    blur.motion_blur, ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))
  ),
  "zoom_blur": Corruption(
    blur.zoom_blur, ((1.06,), (1.11,), (1.16,), (1.21,), (1.26,))
  ),
  "snow": Corruption(
    weather.snow,
    (
      (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
      (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
      (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
      (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
      (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
  ),
  "frost": Corruption(
    weather.frost, ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
  ),
  "fog": Corruption(
    weather.fog, ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))
  ),
  "brightness": Corruption(
    digital.brightness, ((0.05,), (0.1,), (0.15,), (0.2,), (0.3,))
  ),
  "contrast": Corruption(
    digital.contrast, ((0.75,), (0.5,), (0.4,), (0.3,), (0.15,))
  ),
  "elastic_transform": Corruption(
    digital.elastic_transform,
    (
      (0.0, 0.0, 0.08),
      (0.05, 0.2, 0.07),
      (0.08, 0.06, 0.06),
      (0.1, 0.04, 0.05),
      (0.1, 0.03, 0.03),
    ),
  ),
  "pixelate": Corruption(
    digital.pixelate, ((0.95,), (0.9,), (0.85,), (0.75,), (0.65,))
  ),
  "jpeg_compression": Corruption(
    jpeg.jpeg_compression, ((80,), (65,), (58,), (50,), (40,))
  ),
  "speckle_noise": Corruption(
    noise.speckle_noise, ((0.06,), (0.1,), (0.12,), (0.16,), (0.2,))
  ),
  "gaussian_blur": Corruption(
    blur.gaussian_blur, ((0.4,), (0.6,), (0.7,), (0.8,), (1.0,))
  ),
  "spatter": Corruption(
    spatter.spatter,
    (
      (0.62, 0.1, 0.7, 0.7, 0.5, 0),
      (0.65, 0.1, 0.8, 0.7, 0.5, 0),
      (0.65, 0.3, 1, 0.69, 0.5, 0),
      (0.65, 0.1, 0.7, 0.69, 0.6, 1),
      (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
  ),
  "saturate": Corruption(
    digital.saturate,
    ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
  ),
}

CORRUPTIONS = (
  "gaussian_noise",
  "shot_noise",
  "impulse_noise",
  "defocus_blur",
  "glass_blur",
  "motion_blur",
  "zoom_blur",
  "snow",
  "frost",
  "fog",
  "brightness",
  "contrast",
  "elastic_transform",
  "pixelate",
  "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)


def _check_name(name: str) -> str:
  if name not in _TABLE:
    raise ValueError(
      f"Unknown corruption `name` {name!r}; valid names: {ALL_CORRUPTIONS}."
    )
  return name


def _check_severity(severity: int) -> int:
  if isinstance(severity, bool) or not isinstance(severity, int):
    raise TypeError(
      f"`severity` must be a Python int in {SEVERITIES}, got {severity!r}."
    )
  if severity not in SEVERITIES:
    raise ValueError(f"`severity` must be in {SEVERITIES}, got {severity}.")
  return severity


def _single(name: str, severity: int) -> Callable[[jax.Array, jax.Array], ...]:
  corruption = _TABLE[name]
  params = corruption.severities[severity - 1]
  return functools.partial(_apply_one, corruption.fn, params)


def _apply_one(fn, params, key, image):
  out = fn(key, image.astype(jnp.float32), *params)
  return out.astype(jnp.float32)


def corrupt(
  key: jax.Array, images: jax.Array, name: str, severity: int
) -> jax.Array:
  """Applies a CIFAR-10-C corruption at a given severity.

  A batch gets one key per image, ``jax.random.split(key, N)``, so
  ``corrupt(key, images)[i] == corrupt(split(key, N)[i], images[i])``.
  Works under ``jax.jit`` (``name`` and ``severity`` static) and
  ``jax.vmap`` (over ``key`` and a single image).

  Args:
    key: a PRNG key (deterministic for a given key).
    images: float array in [0, 1], NHWC (batch) or HWC (one image), 3
      channels (RGB).
    name: one of ``CORRUPTIONS`` or ``EXTRA_CORRUPTIONS``.
    severity: Python int, 1..5 (CIFAR-10-C parameters).

  Returns:
    float32 array of the shape of ``images``, in [0, 1].

  Raises:
    ValueError: unknown name, severity outside 1..5, ``images`` not 3- or
      4-dimensional or without 3 channels.
    TypeError: severity not a Python int.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from csam_jax.variations import corrupt
    >>> x = jnp.full((2, 32, 32, 3), 0.5)
    >>> y = corrupt(jax.random.key(0), x, "gaussian_noise", 3)
    >>> y.shape, bool((y >= 0).all() & (y <= 1).all())
    ((2, 32, 32, 3), True)
  """
  _check_name(name)
  _check_severity(severity)
  shape = getattr(images, "shape", None)
  if shape is None or len(shape) not in (3, 4) or shape[-1] != 3:
    raise ValueError(
      "`images` must be a float array in [0, 1] of shape (N, H, W, 3) or "
      f"(H, W, 3), got shape {shape}."
    )
  fn = _single(name, severity)
  if len(shape) == 3:
    return fn(key, jnp.asarray(images))
  keys = jax.random.split(key, shape[0])
  return jax.vmap(fn)(keys, jnp.asarray(images))


def corruption_sampler(
  names: Sequence[str] = CORRUPTIONS,
  severities: Sequence[int] = SEVERITIES,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A ``sample_fn(key, image)`` drawing a random corruption and severity.

  The pair (name, severity) is uniform over ``names x severities`` and is
  applied with ``jax.lax.switch`` over the static list, so ``sample_fn``
  jits and vmaps (e.g. as the transformation distribution of
  ``csam_jax.certify.cc_cert``). Under ``vmap`` the switch evaluates every
  branch and selects, so the cost per sample is that of all listed pairs.

  Args:
    names: corruption names (default: the 15 CIFAR-10-C corruptions).
    severities: severities in 1..5 (default: all five).

  Returns:
    ``sample_fn(key, image)`` mapping one HWC image in [0, 1] to a
    corrupted float32 image of the same shape.

  Raises:
    ValueError: empty or unknown ``names`` / ``severities``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from csam_jax.variations import corruption_sampler
    >>> sample_fn = corruption_sampler(("contrast", "brightness"), (1, 5))
    >>> sample_fn(jax.random.key(0), jnp.full((8, 8, 3), 0.5)).shape
    (8, 8, 3)
  """
  names, severities = tuple(names), tuple(severities)
  if not names or not severities:
    raise ValueError("`names` and `severities` must be non-empty.")
  for name in names:
    _check_name(name)
  for severity in severities:
    _check_severity(severity)
  branches = [_single(n, s) for n in names for s in severities]

  def sample_fn(key: jax.Array, image: jax.Array) -> jax.Array:
    choice_key, corrupt_key = jax.random.split(key)
    index = jax.random.randint(choice_key, (), 0, len(branches))
    return jax.lax.switch(index, branches, corrupt_key, image)

  return sample_fn


def severity_parameters(name: str, severity: int) -> tuple:
  """The CIFAR-10-C parameters of ``name`` at ``severity`` (see the table).

  Example:
    >>> severity_parameters("jpeg_compression", 5)
    (40,)
  """
  _check_name(name)
  _check_severity(severity)
  return _TABLE[name].severities[severity - 1]
