"""Names, CIFAR-10-C severity tables, ``corrupt`` and the corruption sampler.

Severity parameters are those of the CIFAR-10-C script
(hendrycks/robustness ``ImageNet-C/create_c/make_cifar_c.py``), not the
ImageNet-C ones (which are far too strong at 32 px).
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src import validation
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
    fn: ``fn(key, image_hwc, p) -> image_hwc`` for one image, ``p`` one
      severity's parameters (a dict of arrays, possibly traced).
    params_fn: ``params_fn(severities, height, width)`` -> dict of numpy
      arrays stacked over the five severities.
    severities: the five CIFAR-10-C parameter tuples (severity 1..5).
  """

  fn: Callable[..., jax.Array]
  params_fn: Callable[..., dict]
  severities: tuple[tuple, ...]


def _scalars(*names: str) -> Callable[..., dict]:
  """A params_fn stacking each positional parameter under a name."""

  def params_fn(rows, height, width):
    del height, width
    table = np.array(rows, np.float32)
    return {name: table[:, i] for i, name in enumerate(names)}

  return params_fn


_TABLE: dict[str, Corruption] = {
  "gaussian_noise": Corruption(
    noise.gaussian_noise,
    _scalars("sigma"),
    ((0.04,), (0.06,), (0.08,), (0.09,), (0.10,)),
  ),
  "shot_noise": Corruption(
    noise.shot_noise,
    _scalars("scale"),
    ((500,), (250,), (100,), (75,), (50,)),
  ),
  "impulse_noise": Corruption(
    noise.impulse_noise,
    _scalars("amount"),
    ((0.01,), (0.02,), (0.03,), (0.05,), (0.07,)),
  ),
  "defocus_blur": Corruption(
    blur.defocus_blur,
    blur.defocus_params,
    ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
  ),
  "glass_blur": Corruption(
    blur.glass_blur,
    blur.glass_params,
    ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
  ),
  "motion_blur": Corruption(
    blur.motion_blur,
    blur.motion_params,
    ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
  ),
  "zoom_blur": Corruption(
    blur.zoom_blur,
    blur.zoom_params,
    ((1.06,), (1.11,), (1.16,), (1.21,), (1.26,)),
  ),
  "snow": Corruption(
    weather.snow,
    weather.snow_params,
    (
      (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
      (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
      (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
      (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
      (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
  ),
  "frost": Corruption(
    weather.frost,
    _scalars("image_weight", "frost_weight"),
    ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
  ),
  "fog": Corruption(
    weather.fog,
    _scalars("strength", "wibble_decay"),
    ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
  ),
  "brightness": Corruption(
    digital.brightness,
    _scalars("shift"),
    ((0.05,), (0.1,), (0.15,), (0.2,), (0.3,)),
  ),
  "contrast": Corruption(
    digital.contrast,
    _scalars("factor"),
    ((0.75,), (0.5,), (0.4,), (0.3,), (0.15,)),
  ),
  "elastic_transform": Corruption(
    digital.elastic_transform,
    digital.elastic_params,
    (
      (0.0, 0.0, 0.08),
      (0.05, 0.2, 0.07),
      (0.08, 0.06, 0.06),
      (0.1, 0.04, 0.05),
      (0.1, 0.03, 0.03),
    ),
  ),
  "pixelate": Corruption(
    digital.pixelate,
    digital.pixelate_params,
    ((0.95,), (0.9,), (0.85,), (0.75,), (0.65,)),
  ),
  "jpeg_compression": Corruption(
    jpeg.jpeg_compression,
    jpeg.jpeg_params,
    ((80,), (65,), (58,), (50,), (40,)),
  ),
  "speckle_noise": Corruption(
    noise.speckle_noise,
    _scalars("sigma"),
    ((0.06,), (0.1,), (0.12,), (0.16,), (0.2,)),
  ),
  "gaussian_blur": Corruption(
    blur.gaussian_blur,
    blur.gaussian_params,
    ((0.4,), (0.6,), (0.7,), (0.8,), (1.0,)),
  ),
  "spatter": Corruption(
    spatter.spatter,
    spatter.spatter_params,
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
    _scalars("scale", "offset"),
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
  severity = validation.check_int("severity", severity)
  return validation.check_choice("severity", severity, SEVERITIES)


def _check_images(images, ndims: tuple[int, ...]) -> tuple[int, ...]:
  shape = getattr(images, "shape", None)
  expected = " or ".join({3: "(H, W, 3)", 4: "(N, H, W, 3)"}[n] for n in ndims)
  if shape is None or len(shape) not in ndims or shape[-1] != 3:
    raise ValueError(
      f"`images` must be a float array in [0, 1] of shape {expected}, got "
      f"shape {shape}."
    )
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(
      f"`images` must be floating point in [0, 1], got dtype {images.dtype}."
    )
  return tuple(shape)


@functools.lru_cache(maxsize=256)
def _stacked_params(name: str, height: int, width: int) -> dict:
  corruption = _TABLE[name]
  return corruption.params_fn(corruption.severities, height, width)


def apply_at(
  key: jax.Array, image: jax.Array, name: str, severity_index
) -> jax.Array:
  """One HWC image, severity given as a 0-based (possibly traced) index.

  No validation (internal): one compiled program serves all severities.
  """
  h, w = image.shape[:2]
  params = jax.tree.map(
    lambda a: jnp.asarray(a)[severity_index], _stacked_params(name, h, w)
  )
  out = _TABLE[name].fn(key, image.astype(jnp.float32), params)
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
    float32 array of the shape of ``images``, in [0, 1]. Not quantised: the
    published CIFAR-10-C arrays are ``uint8(255 * output)`` (truncated).

  Raises:
    ValueError: unknown name, severity outside 1..5, ``images`` not 3- or
      4-dimensional or without 3 channels.
    TypeError: severity not a Python int, ``images`` not floating point.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from csam_jax.variations import corrupt
    >>> x = jnp.full((2, 32, 32, 3), 0.5)
    >>> y = corrupt(jax.random.key(0), x, "gaussian_noise", 3)
    >>> y.shape, bool((y >= 0).all() & (y <= 1).all())
    ((2, 32, 32, 3), True)
  """
  _check_name(name)
  severity = _check_severity(severity)
  shape = _check_images(images, ndims=(3, 4))
  fn = functools.partial(apply_at, name=name, severity_index=severity - 1)
  if len(shape) == 3:
    return fn(key, jnp.asarray(images))
  keys = jax.random.split(key, shape[0])
  return jax.vmap(fn)(keys, jnp.asarray(images))


def _applier(name: str) -> Callable[..., jax.Array]:
  """``fn(keys, images, severity_indices)``: ``apply_at`` vmapped."""
  return jax.vmap(lambda k, im, s: apply_at(k, im, name, s))


@dataclasses.dataclass(frozen=True)
class CorruptionSampler:
  """The distribution of `corruption_sampler`: a random corruption per draw.

  Equal samplers (same names and severities) are equal and hash alike, so
  the certifiers' compiled programs are reused across instances.

  Attributes:
    names: the corruption names, drawn uniformly.
    severities: the severities (1..5), drawn uniformly.
    bucket_size: draws per corruption program in `sample_batch`.
  """

  names: tuple[str, ...]
  severities: tuple[int, ...]
  bucket_size: int = 16

  def draw(self, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(name index, 0-based severity index, corruption key)`` of a draw."""
    name_key, severity_key, corrupt_key = jax.random.split(key, 3)
    which = jax.random.randint(name_key, (), 0, len(self.names))
    indices = jnp.asarray(np.asarray(self.severities, np.int32) - 1)
    return which, jax.random.choice(severity_key, indices), corrupt_key

  def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
    """One draw: a random corruption of one HWC image."""
    _check_images(image, ndims=(3,))
    which, severity_index, corrupt_key = self.draw(key)
    branches = [
      functools.partial(_apply_index, name=name) for name in self.names
    ]
    return jax.lax.switch(which, branches, corrupt_key, image, severity_index)

  def sample_batch(self, keys: jax.Array, images: jax.Array) -> jax.Array:
    """``jax.vmap(self)(keys, images)``, each corruption run on its draws only.

    The labels of all draws come first (`draw`); the draws are sorted by
    corruption (stable, so in draw order within a corruption) and each
    corruption runs, ``jax.vmap``-ed, on its draws in buckets of
    ``bucket_size`` (a ``lax.while_loop`` over its ``ceil(n_c /
    bucket_size)`` buckets; the padding slots of the last one compute on a
    real draw and are dropped); the results are scattered back in draw
    order. A chunk of S draws over K names costs about ``S + K *
    bucket_size / 2`` corruption evaluations (``S * K`` under ``vmap`` of
    the switch). Every corruption program has the fixed shape
    ``(bucket_size, H, W, 3)``, so a draw's output depends only on its key
    and image, bit for bit, whatever the size and the other draws of the
    chunk.
    """
    shape = _check_images(images, ndims=(4,))
    if keys.shape != shape[:1]:
      raise ValueError(
        f"`keys` must hold one key per image, shape {shape[:1]}, got "
        f"{keys.shape}."
      )
    size, bucket = shape[0], self.bucket_size
    which, severity_index, corrupt_keys = jax.vmap(self.draw)(keys)
    order = jnp.argsort(which, stable=True)
    order = jnp.concatenate([order, jnp.full((bucket,), size, order.dtype)])
    counts = jnp.bincount(which, length=len(self.names))
    starts = jnp.cumsum(counts) - counts
    out = jnp.zeros(shape, jnp.float32)
    for c, name in enumerate(self.names):
      corrupt_fn = _applier(name)
      end = starts[c] + counts[c]

      def body(i, out, c=c, end=end, corrupt_fn=corrupt_fn):
        slots = starts[c] + i * bucket + jnp.arange(bucket)
        idx = jnp.where(slots < end, order[slots], size)
        safe = jnp.minimum(idx, size - 1)
        # The barrier keeps XLA from specialising the corruption to its
        # inputs (e.g. to one image broadcast when the chunk has one draw),
        # so its program, and rounding, is the same for every chunk.
        args = (corrupt_keys[safe], images[safe], severity_index[safe])
        done = corrupt_fn(*jax.lax.optimization_barrier(args))
        return out.at[idx].set(done, mode="drop")

      num_buckets = (counts[c] + bucket - 1) // bucket
      out = jax.lax.fori_loop(0, num_buckets, body, out)
    return out


def _apply_index(key, image, severity_index, *, name):
  return apply_at(key, image, name, severity_index)


def corruption_sampler(
  names: Sequence[str] = CORRUPTIONS,
  severities: Sequence[int] = SEVERITIES,
  *,
  bucket_size: int = 16,
) -> CorruptionSampler:
  """A ``sample_fn(key, image)`` drawing a random corruption and severity.

  The name and the severity are drawn independently and uniformly (so the
  pair is uniform over ``names x severities``) from the draw's key
  (`CorruptionSampler.draw`, which also gives the corruption's key), so a
  draw is a function of its key and image only. Two ways to apply it:

  * ``sample_fn(key, image)``: one image; ``jax.lax.switch`` over the names,
    each branch taking the severity as a traced index into its stacked
    parameters. It jits and vmaps, but under ``vmap`` the switch runs every
    branch and selects, so a draw costs one pass of every listed name.
  * ``sample_fn.sample_batch(keys, images)``: a batch of draws, one key per
    image; the draws are grouped by corruption and each corruption runs on
    its own draws only, in fixed-size buckets of ``bucket_size``, so a draw
    costs about one corruption. The certifiers (`csam_jax.certify.cc_cert`,
    `binomial_certificate`) use it on each chunk of ``batch_size`` draws
    (`csam_jax._src.certify.montecarlo.transform`).

  Both draw the same corruption, severity and corruption key for a key; the
  images agree to float32 rounding (a few ulp: XLA compiles the vmapped
  switch and the buckets into different programs). ``sample_batch`` is
  bitwise independent of the batch size and chunking for a given
  ``bucket_size``.

  Args:
    names: corruption names (default: the 15 CIFAR-10-C corruptions).
    severities: severities in 1..5 (default: all five).
    bucket_size: draws per corruption program in ``sample_batch``, >= 1.
      A chunk of S draws over K names costs about ``S + K * bucket_size / 2``
      corruption evaluations in ``ceil(S / bucket_size) + K`` sequential
      buckets: small on CPU; larger (e.g. 128) on accelerators, which favour
      fewer, wider programs.

  Returns:
    A `CorruptionSampler` (hashable, equal for equal arguments):
    ``sample_fn(key, image)`` maps one HWC image in [0, 1] to a corrupted
    float32 image of the same shape.

  Raises:
    ValueError: empty or unknown ``names`` / ``severities``, ``bucket_size``
      < 1; ``sample_fn`` raises ValueError for an image that is not
      (H, W, 3), ``sample_batch`` for images that are not (N, H, W, 3) or
      keys that are not (N,).
    TypeError: ``bucket_size`` or a severity not an int.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from csam_jax.variations import corruption_sampler
    >>> sample_fn = corruption_sampler(("contrast", "brightness"), (1, 5))
    >>> sample_fn(jax.random.key(0), jnp.full((8, 8, 3), 0.5)).shape
    (8, 8, 3)
    >>> keys = jax.random.split(jax.random.key(0), 4)
    >>> images = jnp.full((4, 8, 8, 3), 0.5)
    >>> bool(jnp.allclose(sample_fn.sample_batch(keys, images),
    ...                   jax.vmap(sample_fn)(keys, images), atol=1e-6))
    True
  """
  names, severities = tuple(names), tuple(severities)
  if not names or not severities:
    raise ValueError("`names` and `severities` must be non-empty.")
  for name in names:
    _check_name(name)
  severities = tuple(_check_severity(s) for s in severities)
  bucket_size = validation.check_int("bucket_size", bucket_size)
  return CorruptionSampler(names, severities, bucket_size)


def severity_parameters(name: str, severity: int) -> tuple:
  """The CIFAR-10-C parameters of ``name`` at ``severity`` (see the table).

  Example:
    >>> severity_parameters("jpeg_compression", 5)
    (40,)
  """
  _check_name(name)
  _check_severity(severity)
  return _TABLE[name].severities[severity - 1]
