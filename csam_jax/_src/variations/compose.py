"""`compose`: a random semantic transformation from per-variation ranges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from csam_jax._src import validation
from csam_jax._src.variations import (
  base,
  blur,
  geometric,
  photometric,
  registry,
)
from csam_jax._src.variations import ranges as ranges_lib

Array = base.Array
Op = Callable[[Array, dict[str, Array]], Array]


def _fused(families, options) -> Op:
  """The geometric families present, in one resampling."""
  mode, cval = options["border_mode"], options["cval"]

  def op(x, p):
    kwargs = {f.fused: p[f.name] for f in families}
    return geometric.rotate_scale_translate(x, **kwargs, mode=mode, cval=cval)

  return op


def _ops(bounds: dict[str, Any], fuse: bool, options: dict[str, Any]):
  """The ops of the families in ``bounds`` (name -> ``(lo, hi)``), in the
  registry's order; the geometric ones fused into one when ``fuse``."""
  present = [f for f in registry.REGISTRY if f.name in bounds]
  geometric_families = [f for f in present if f.group == "geometric"]
  ops = []
  for family in present:
    if family.group != "geometric" or not fuse:
      ops.append(family.make_op(bounds[family.name], options))
    elif family is geometric_families[0]:
      ops.append(_fused(geometric_families, options))
  return ops


def compose(
  ranges: Any,
  *,
  border_mode: str = "constant",
  cval: float = 0.0,
  contrast_center: str = "zero",
  blur_mode: str = "reflect",
  fuse_geometric: bool = True,
) -> base.SampleFn:
  """Builds a random transformation ``sample_fn(key, image) -> image``.

  Each named variation draws its parameter independently (uniform on its
  range, see `parameter_range`) from its own sub-key, so parameters are
  i.i.d. across calls with different keys. The variations are applied in
  the fixed order of `VARIATIONS` (gamma, contrast, brightness, rotation,
  scale, translation, gaussian_blur, gaussian_noise), whatever the order of
  ``ranges``; every step clips to [0, 1]. Rotation, scale and translation
  are by default fused into one affine resampling
  (`rotate_scale_translate`): the same map as applying them one after the
  other, interpolated once.

  Args:
    ranges: mapping (dict or ConfigDict) from variation name to its range
      specification; entries whose value is None are skipped.
    border_mode: ``map_coordinates`` border mode of geometric transforms.
    cval: fill value for ``border_mode="constant"``.
    contrast_center: "zero" (``x * c``: kornia's ``adjust_contrast``, the
      CC-Cert reference's convention, so that ``compose(CC_CERT_RANGES)``
      is the CC-Cert distribution) or "mean" (``(x - mean) * c + mean``);
      see `contrast`.
    blur_mode: border mode of the Gaussian blur.
    fuse_geometric: True (default) resamples once for all geometric
      variations; False resamples once per variation, exactly as the
      individual `rotation`, `scale` and `translation` in that order (same
      parameters for the same key).

  Returns:
    ``sample_fn(key, image)`` on one HWC image; jit- and vmap-able.

  Raises:
    ValueError: for an unknown name, invalid range or option, or no
      variation at all.
    TypeError: for a range that is neither a number nor a pair.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> sample_fn = compose({"rotation": 10.0, "brightness": 0.2})
    >>> keys = jax.random.split(jax.random.key(0), 4)
    >>> jax.vmap(sample_fn)(keys, jnp.full((4, 8, 8, 3), 0.5)).shape
    (4, 8, 8, 3)
  """
  variations = registry.VARIATIONS
  items = {k: v for k, v in dict(ranges).items() if v is not None}
  unknown = sorted(set(items) - set(variations))
  if unknown:
    raise ValueError(f"unknown variation(s) {unknown}; valid: {variations}")
  if not items:
    raise ValueError(f"ranges must name at least one of {variations}")
  validation.check_choice("border_mode", border_mode, geometric.GEOMETRIC_MODES)
  validation.check_choice("blur_mode", blur_mode, blur.PAD_MODES)
  validation.check_choice(
    "contrast_center", contrast_center, photometric.CONTRAST_CENTERS
  )
  names = [n for n in variations if n in items]
  samplers = [ranges_lib.parameter_sampler(n, items[n]) for n in names]
  options = dict(
    border_mode=border_mode,
    cval=cval,
    contrast_center=contrast_center,
    blur_mode=blur_mode,
  )
  bounds = {n: ranges_lib.parameter_range(n, items[n]) for n in names}
  ops = _ops(bounds, bool(fuse_geometric), options)

  def sample_fn(key: Array, image: Array) -> Array:
    image = base.check_image(image)
    # Variation i draws its parameter from keys[2 i]; keys[2 i + 1] is its
    # own randomness (``<name>/key``: the noise of gaussian_noise).
    keys = jax.random.split(key, 2 * len(names))
    params = {}
    for i, (n, sample) in enumerate(zip(names, samplers, strict=True)):
      params[n] = sample(keys[2 * i])
      params[f"{n}/key"] = keys[2 * i + 1]
    for op in ops:
      image = op(image, params)
    return image

  return sample_fn
