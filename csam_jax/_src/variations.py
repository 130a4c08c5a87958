"""Semantic input variations: deterministic transforms, samplers, compose.

Every transform maps one image, float32 HWC with values in [0, 1], to an
image of the same shape and dtype, clipped to [0, 1]. All of them are pure
JAX: they run under ``jax.jit`` and batch with ``jax.vmap`` (images NHWC,
one parameter per image). Parameters may be traced arrays.

Parameter conventions (those of the CC-Cert reference, Pautov et al. 2022,
unless stated):

* ``brightness(image, delta)``: ``x + delta`` (additive; identity at 0).
* ``contrast(image, factor)``: ``(x - m) * factor + m`` where ``m`` is the
  mean of the image over all pixels and channels (``center="mean"``, the
  torchvision-style convention; identity at 1). ``center="zero"`` gives
  ``x * factor``, the convention of kornia's ``adjust_contrast`` that the
  CC-Cert code calls.
* ``gamma(image, exponent)``: ``x ** exponent`` (identity at 1).
* ``rotation(image, degrees)``: rotation about the image centre
  ``((H-1)/2, (W-1)/2)``, positive = counter-clockwise on screen (row axis
  pointing down), so that 90 degrees equals ``jnp.rot90(image)``.
* ``translation(image, shift)``: ``shift = (dy, dx)`` as fractions of
  ``(H, W)``; positive moves the content down / right.
* ``scale(image, factor)``: zoom about the centre; ``factor > 1`` enlarges.
* ``gaussian_blur(image, sigma)``: separable Gaussian filter with taps
  ``exp(-k^2 / (2 sigma^2))`` on ``|k| <= radius`` (normalised), default
  radius ``int(4 sigma + 0.5)`` as ``scipy.ndimage.gaussian_filter``;
  ``sigma = 0`` is exactly the identity.
* ``gaussian_noise(key, image, sigma)``: ``x + sigma * N(0, 1)``.

Geometric transforms sample the input with bilinear interpolation
(``jax.scipy.ndimage.map_coordinates``, ``order=1``). Border mode: points
that fall outside the image are filled with ``cval`` (``mode="constant"``,
``cval=0``: black, as kornia's default zero padding in the CC-Cert code);
any other ``map_coordinates`` mode can be passed. The blur pads with
``mode="reflect"`` (scipy's convention: ``d c b a | a b c d | d c b a``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
SampleFn = Callable[[Array, Array], Array]

# Canonical order in which `compose` applies the variations: pointwise
# photometric changes first (on the original pixels, before geometric
# transforms fill the border with `cval`), then one resampling per
# geometric transform, then blur, then additive sensor noise last.
VARIATIONS = (
  "gamma",
  "contrast",
  "brightness",
  "rotation",
  "scale",
  "translation",
  "gaussian_blur",
  "gaussian_noise",
)

# CC-Cert suggested ranges (METHOD.md): the value is the CC-Cert parameter
# of each family, interpreted as documented in `parameter_range`.
CC_CERT_RANGES = {
  "gamma": 0.7,
  "contrast": 1.3,
  "brightness": 0.2,
  "rotation": 10.0,
  "translation": 0.1,
  "gaussian_blur": 1.0,
}

_GEOMETRIC_MODES = ("constant", "nearest", "wrap", "mirror", "reflect")
# scipy.ndimage border names -> numpy/jnp.pad names.
_PAD_MODES = {
  "reflect": "symmetric",
  "mirror": "reflect",
  "wrap": "wrap",
  "nearest": "edge",
  "constant": "constant",
}


def _check_image(image: Array) -> Array:
  image = jnp.asarray(image)
  if image.ndim != 3:
    raise ValueError(
      f"image must be HWC (rank 3), got shape {image.shape}; use jax.vmap "
      "for a batch"
    )
  return image


def _clip(image: Array) -> Array:
  return jnp.clip(image, 0.0, 1.0)


def _check_nonnegative(name: str, value: Any) -> None:
  """Raises for a concrete negative value (traced values are not checked)."""
  if isinstance(value, jax.core.Tracer):
    return
  if jnp.any(jnp.asarray(value) < 0):
    raise ValueError(f"{name} must be >= 0, got {value}")


def brightness(image: Array, delta: Array | float) -> Array:
  """Additive brightness change ``clip(x + delta)``.

  Args:
    image: float HWC image in [0, 1].
    delta: the additive shift (0 is the identity).

  Returns:
    The shifted image, clipped to [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(brightness(jnp.full((2, 2, 1), 0.5), 0.25)[0, 0, 0]), 6)
    0.75
  """
  return _clip(_check_image(image) + delta)


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
    ValueError: for an unknown ``center``.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([0.25, 0.75]).reshape(1, 2, 1)
    >>> contrast(x, 2.0).ravel().tolist()
    [0.0, 1.0]
  """
  image = _check_image(image)
  if center == "mean":
    mean = jnp.mean(image)
    return _clip((image - mean) * factor + mean)
  if center == "zero":
    return _clip(image * factor)
  raise ValueError(f"center must be 'mean' or 'zero', got {center!r}")


def gamma(image: Array, exponent: Array | float) -> Array:
  """Gamma correction ``x ** exponent`` (1 is the identity).

  Args:
    image: float HWC image in [0, 1].
    exponent: the gamma exponent, > 0.

  Returns:
    The corrected image, clipped to [0, 1].

  Raises:
    ValueError: for a concrete ``exponent <= 0``.

  Example:
    >>> import jax.numpy as jnp
    >>> float(gamma(jnp.full((1, 1, 1), 0.25), 0.5)[0, 0, 0])
    0.5
  """
  if not isinstance(exponent, jax.core.Tracer) and jnp.any(
    jnp.asarray(exponent) <= 0
  ):
    raise ValueError(f"exponent must be > 0, got {exponent}")
  return _clip(jnp.power(_check_image(image), exponent))


def _resample(
  image: Array, source_fn: Callable, mode: str, cval: float
) -> Array:
  """Samples ``image`` at ``source_fn(rows, cols)`` bilinearly per channel."""
  image = _check_image(image)
  if mode not in _GEOMETRIC_MODES:
    raise ValueError(f"mode must be one of {_GEOMETRIC_MODES}, got {mode!r}")
  height, width, _ = image.shape
  rows, cols = jnp.meshgrid(
    jnp.arange(height, dtype=image.dtype),
    jnp.arange(width, dtype=image.dtype),
    indexing="ij",
  )
  src_rows, src_cols = source_fn(rows, cols)
  # Materialise the input once: otherwise XLA fuses its producer (e.g. an
  # earlier resampling of `compose`) into each of the four bilinear gathers.
  image = jax.lax.optimization_barrier(image)

  def one_channel(channel):
    return jax.scipy.ndimage.map_coordinates(
      channel, (src_rows, src_cols), order=1, mode=mode, cval=cval
    )

  out = jax.vmap(one_channel, in_axes=2, out_axes=2)(image)
  return _clip(out)


def _center(image: Array) -> tuple[float, float]:
  height, width = image.shape[0], image.shape[1]
  return (height - 1) / 2.0, (width - 1) / 2.0


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
  cy, cx = _center(_check_image(image))
  theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)

  def source(rows, cols):
    dy, dx = rows - cy, cols - cx
    return cy + cos * dy + sin * dx, cx - sin * dy + cos * dx

  return _resample(image, source, mode, cval)


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
    ValueError: for a non-HWC image or an unknown mode.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([0.0, 1.0, 0.0, 0.0]).reshape(1, 4, 1)
    >>> translation(x, (0.0, 0.25)).ravel().tolist()
    [0.0, 0.0, 1.0, 0.0]
  """
  image = _check_image(image)
  height, width, _ = image.shape
  shift = jnp.asarray(shift, jnp.float32)
  if shift.shape != (2,):
    raise ValueError(f"shift must have shape (2,), got {shift.shape}")

  def source(rows, cols):
    return rows - shift[0] * height, cols - shift[1] * width

  return _resample(image, source, mode, cval)


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
  if not isinstance(factor, jax.core.Tracer) and jnp.any(
    jnp.asarray(factor) <= 0
  ):
    raise ValueError(f"factor must be > 0, got {factor}")
  cy, cx = _center(_check_image(image))

  def source(rows, cols):
    return cy + (rows - cy) / factor, cx + (cols - cx) / factor

  return _resample(image, source, mode, cval)


def _blur_axis(image: Array, taps: Array, axis: int, mode: str) -> Array:
  """Correlates ``image`` with ``taps`` along ``axis`` after padding.

  Written as a sum of 2r+1 shifted slices: for the few taps of an image blur
  this is exact and, on CPU, faster than a depthwise ``lax.conv`` under
  ``vmap``. The optimization barrier keeps XLA from fusing (and so
  recomputing) the producer of ``image``, e.g. a geometric resampling, into
  every slice.
  """
  radius = (taps.shape[0] - 1) // 2
  pad = [(0, 0)] * image.ndim
  pad[axis] = (radius, radius)
  padded = jnp.pad(image, pad, mode=_PAD_MODES[mode])
  padded = jax.lax.optimization_barrier(padded)
  size = image.shape[axis]
  out = jnp.zeros_like(image)
  for k in range(2 * radius + 1):
    window = jax.lax.slice_in_dim(padded, k, k + size, axis=axis)
    out = out + taps[k] * window
  return out


def gaussian_blur(
  image: Array,
  sigma: Array | float,
  *,
  radius: int | None = None,
  mode: str = "reflect",
) -> Array:
  """Separable Gaussian blur; ``sigma = 0`` is exactly the identity.

  Args:
    image: float HWC image in [0, 1].
    sigma: standard deviation in pixels, >= 0 (may be traced).
    radius: static half-width of the kernel. Default ``int(4 sigma + 0.5)``
      (scipy's ``truncate=4``), which needs a concrete ``sigma``; pass it
      when ``sigma`` is traced (the samplers use their maximum sigma).
    mode: border mode, one of "reflect" (scipy's, default), "mirror",
      "wrap" (keeps the mean exactly), "nearest", "constant" (zeros).

  Returns:
    The blurred image, clipped to [0, 1].

  Raises:
    ValueError: for a concrete negative ``sigma``, an unknown mode, a
      missing ``radius`` with a traced ``sigma`` or a negative ``radius``.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.zeros((5, 5, 1)).at[2, 2, 0].set(1.0)
    >>> round(float(gaussian_blur(x, 1.0).sum()), 4)
    1.0
  """
  image = _check_image(image)
  _check_nonnegative("sigma", sigma)
  if mode not in _PAD_MODES:
    raise ValueError(f"mode must be one of {tuple(_PAD_MODES)}, got {mode!r}")
  if radius is None:
    if isinstance(sigma, jax.core.Tracer):
      raise ValueError("radius is required when sigma is traced")
    radius = int(4.0 * float(sigma) + 0.5)
  if radius < 0:
    raise ValueError(f"radius must be >= 0, got {radius}")
  sigma = jnp.asarray(sigma, jnp.float32)
  k = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  safe_sigma = jnp.where(sigma > 0, sigma, 1.0)
  weights = jnp.exp(-0.5 * (k / safe_sigma) ** 2)
  # sigma = 0: a unit impulse, so the filter is exactly the identity.
  weights = jnp.where(sigma > 0, weights, (k == 0).astype(jnp.float32))
  taps = (weights / jnp.sum(weights)).astype(image.dtype)
  out = _blur_axis(image, taps, 0, mode)
  return _clip(_blur_axis(out, taps, 1, mode))


def gaussian_noise(key: Array, image: Array, sigma: Array | float) -> Array:
  """Adds i.i.d. Gaussian noise ``sigma * N(0, 1)`` to every pixel.

  Args:
    key: PRNG key of the noise.
    image: float HWC image in [0, 1].
    sigma: noise standard deviation, >= 0 (0 is the identity).

  Returns:
    The noisy image, clipped to [0, 1].

  Raises:
    ValueError: for a concrete negative ``sigma``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.full((2, 2, 3), 0.5)
    >>> gaussian_noise(jax.random.key(0), x, 0.1).shape
    (2, 2, 3)
  """
  image = _check_image(image)
  _check_nonnegative("sigma", sigma)
  noise = jax.random.normal(key, image.shape, image.dtype)
  return _clip(image + sigma * noise)


def _as_pair(name: str, spec: Any) -> tuple[float, float] | None:
  """Returns ``spec`` as an explicit (lo, hi) range, or None for a number."""
  if isinstance(spec, int | float) and not isinstance(spec, bool):
    if not math.isfinite(spec):
      raise ValueError(f"range of {name!r} must be finite, got {spec}")
    return None
  if isinstance(spec, Sequence) and len(spec) == 2:
    lo, hi = (float(v) for v in spec)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
      raise ValueError(
        f"range of {name!r} must be finite (lo, hi) with lo <= hi, got {spec}"
      )
    return lo, hi
  raise TypeError(
    f"range of {name!r} must be a number or a (lo, hi) pair, got {spec!r}"
  )


def _symmetric(name: str, value: float) -> tuple[float, float]:
  if value < 0:
    raise ValueError(f"range of {name!r} must be >= 0, got {value}")
  return -value, value


def _scalar_range(name: str, spec: Any) -> tuple[float, float]:
  """(lo, hi) of a one-number family; see `parameter_range`."""
  pair = _as_pair(name, spec)
  if pair is None:
    value = float(spec)
    if name in ("brightness", "rotation"):
      pair = _symmetric(name, value)
    elif name == "contrast":
      pair = (1.0 - abs(1.0 - value), 1.0 + abs(1.0 - value))
    elif name == "gamma":
      if value <= 0:
        raise ValueError(f"range of 'gamma' must be > 0, got {value}")
      pair = (min(value, 1.0 / value), max(value, 1.0 / value))
    elif name == "scale":
      pair = (1.0 - value, 1.0 + value)
    elif name == "gaussian_blur":
      pair = (0.0, value)
    else:  # gaussian_noise: a fixed sigma, as CC-Cert's awgn.
      pair = (value, value)
  lo, hi = min(pair), max(pair)
  if name in ("gaussian_blur", "gaussian_noise", "contrast") and lo < 0:
    raise ValueError(f"range of {name!r} must be >= 0, got {spec}")
  if name in ("gamma", "scale") and lo <= 0:
    raise ValueError(f"range of {name!r} must be > 0, got {spec}")
  return lo, hi


def parameter_range(name: str, spec: Any) -> tuple[Any, Any]:
  """Validates a range specification and returns its ``(lo, hi)``.

  A number is read with the CC-Cert convention of the family; a pair
  ``(lo, hi)`` is taken as the explicit range (except for translation):

  ================  ===================================  ==================
  name              number v                             identity parameter
  ================  ===================================  ==================
  brightness        U[-v, v]                             0
  contrast          U[1 - |1 - v|, 1 + |1 - v|]          1
  gamma             U[min(v, 1/v), max(v, 1/v)]          1
  rotation          U[-v, v] degrees                     0
  translation       U[-v, v] per axis; a pair (vy, vx)   (0, 0)
                    gives U[-vy, vy] x U[-vx, vx]
  scale             U[1 - v, 1 + v]                      1
  gaussian_blur     sigma ~ U[0, v]                      0
  gaussian_noise    sigma = v (fixed, CC-Cert's awgn)    0
  ================  ===================================  ==================

  Args:
    name: one of `VARIATIONS`.
    spec: a number or a (lo, hi) pair as above.

  Returns:
    ``(lo, hi)``: floats, or for translation two (y, x) tuples.

  Raises:
    ValueError: for an unknown name or an invalid range.
    TypeError: for a spec that is neither a number nor a pair.

  Example:
    >>> parameter_range("contrast", 1.3)
    (0.7, 1.3)
  """
  if name not in VARIATIONS:
    raise ValueError(f"unknown variation {name!r}; valid: {VARIATIONS}")
  if name != "translation":
    lo, hi = _scalar_range(name, spec)
    return round(lo, 12), round(hi, 12)
  if isinstance(spec, Sequence) and len(spec) == 2:
    values = [float(v) for v in spec]
  else:
    _as_pair(name, spec)  # type / finiteness check
    values = [float(spec)] * 2
  for v in values:
    if not (math.isfinite(v) and v >= 0):
      raise ValueError(
        f"range of 'translation' must be >= 0 per axis, got {spec}"
      )
  return tuple(-v for v in values), tuple(values)


def parameter_sampler(name: str, spec: Any) -> Callable[[Array], Array]:
  """Builds ``sample(key) -> parameter``, uniform on `parameter_range`.

  Args:
    name: one of `VARIATIONS`.
    spec: range specification (see `parameter_range`).

  Returns:
    A pure function of a PRNG key returning a float32 scalar (shape (2,)
    for translation).

  Raises:
    ValueError / TypeError: as `parameter_range`, eagerly.

  Example:
    >>> import jax
    >>> sample = parameter_sampler("rotation", 10.0)
    >>> bool(abs(sample(jax.random.key(0))) <= 10.0)
    True
  """
  lo, hi = parameter_range(name, spec)
  lo = jnp.asarray(lo, jnp.float32)
  hi = jnp.asarray(hi, jnp.float32)

  def sample(key: Array) -> Array:
    return jax.random.uniform(key, lo.shape, jnp.float32, lo, hi)

  return sample


def compose(
  ranges: Any,
  *,
  border_mode: str = "constant",
  cval: float = 0.0,
  contrast_center: str = "mean",
  blur_mode: str = "reflect",
) -> SampleFn:
  """Builds a random transformation ``sample_fn(key, image) -> image``.

  Each named variation draws its parameter independently (uniform on its
  range, see `parameter_range`) from its own sub-key, so parameters are
  i.i.d. across calls with different keys. The variations are applied in
  the fixed order of `VARIATIONS` (gamma, contrast, brightness, rotation,
  scale, translation, gaussian_blur, gaussian_noise), whatever the order of
  ``ranges``; every step clips to [0, 1].

  Args:
    ranges: mapping (dict or ConfigDict) from variation name to its range
      specification; entries whose value is None are skipped.
    border_mode: ``map_coordinates`` border mode of geometric transforms.
    cval: fill value for ``border_mode="constant"``.
    contrast_center: "mean" or "zero" (see `contrast`).
    blur_mode: border mode of the Gaussian blur.

  Returns:
    ``sample_fn(key, image)`` on one HWC image; jit- and vmap-able.

  Raises:
    ValueError: for an unknown name, invalid range or option, or no
      variation at all.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> sample_fn = compose({"rotation": 10.0, "brightness": 0.2})
    >>> keys = jax.random.split(jax.random.key(0), 4)
    >>> jax.vmap(sample_fn)(keys, jnp.full((4, 8, 8, 3), 0.5)).shape
    (4, 8, 8, 3)
  """
  items = {k: v for k, v in dict(ranges).items() if v is not None}
  unknown = sorted(set(items) - set(VARIATIONS))
  if unknown:
    raise ValueError(f"unknown variation(s) {unknown}; valid: {VARIATIONS}")
  if not items:
    raise ValueError(f"ranges must name at least one of {VARIATIONS}")
  if border_mode not in _GEOMETRIC_MODES:
    raise ValueError(
      f"border_mode must be one of {_GEOMETRIC_MODES}, got {border_mode!r}"
    )
  if blur_mode not in _PAD_MODES:
    raise ValueError(
      f"blur_mode must be one of {tuple(_PAD_MODES)}, got {blur_mode!r}"
    )
  if contrast_center not in ("mean", "zero"):
    raise ValueError(
      f"contrast_center must be 'mean' or 'zero', got {contrast_center!r}"
    )
  geometric = dict(mode=border_mode, cval=cval)
  ops = {
    "gamma": gamma,
    "contrast": lambda x, p: contrast(x, p, center=contrast_center),
    "brightness": brightness,
    "rotation": lambda x, p: rotation(x, p, **geometric),
    "scale": lambda x, p: scale(x, p, **geometric),
    "translation": lambda x, p: translation(x, p, **geometric),
  }
  steps = []
  for name in VARIATIONS:
    if name not in items:
      continue
    sampler = parameter_sampler(name, items[name])
    if name == "gaussian_blur":
      radius = int(4.0 * parameter_range(name, items[name])[1] + 0.5)

      def op(x, p, _, radius=radius):
        return gaussian_blur(x, p, radius=radius, mode=blur_mode)
    elif name == "gaussian_noise":

      def op(x, p, key):
        return gaussian_noise(key, x, p)
    else:

      def op(x, p, _, fn=ops[name]):
        return fn(x, p)

    steps.append((sampler, op))

  def sample_fn(key: Array, image: Array) -> Array:
    image = _check_image(image)
    keys = jax.random.split(key, 2 * len(steps))
    for i, (sampler, op) in enumerate(steps):
      image = op(image, sampler(keys[2 * i]), keys[2 * i + 1])
    return image

  return sample_fn
