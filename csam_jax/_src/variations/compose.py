"""`compose`: a random semantic transformation from per-variation ranges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from csam_jax._src import validation
from csam_jax._src.variations import base, blur, geometric, photometric
from csam_jax._src.variations import ranges as ranges_lib

Array = base.Array
Op = Callable[[Array, dict[str, Array]], Array]


def _geometric_ops(names, fuse, mode, cval) -> list[Op]:
  """One op resampling once for all of ``names`` (fused) or one per name."""
  if not names:
    return []
  opts = dict(mode=mode, cval=cval)
  if fuse:

    def fused(x, p):
      return geometric.rotate_scale_translate(
        x,
        degrees=p.get("rotation", 0.0),
        factor=p.get("scale", 1.0),
        shift=p.get("translation", (0.0, 0.0)),
        **opts,
      )

    return [fused]
  fns = {
    "rotation": geometric.rotation,
    "scale": geometric.scale,
    "translation": geometric.translation,
  }
  return [
    lambda x, p, name=name: fns[name](x, p[name], **opts) for name in names
  ]


def _ops(items: dict[str, Any], fuse: bool, options: dict[str, Any]):
  """The ops of ``items`` in the canonical order of `VARIATIONS`."""
  center = options["contrast_center"]
  photo = {
    "gamma": lambda x, p: photometric.gamma(x, p["gamma"]),
    "contrast": lambda x, p: photometric.contrast(
      x, p["contrast"], center=center
    ),
    "brightness": lambda x, p: photometric.brightness(x, p["brightness"]),
  }
  ops = [photo[n] for n in ranges_lib.PHOTOMETRIC if n in items]
  ops += _geometric_ops(
    [n for n in ranges_lib.GEOMETRIC if n in items],
    fuse,
    options["border_mode"],
    options["cval"],
  )
  if "gaussian_blur" in items:
    sigma_max = ranges_lib.parameter_range(
      "gaussian_blur", items["gaussian_blur"]
    )[1]
    radius = blur.default_radius(sigma_max)
    ops.append(
      lambda x, p: blur.gaussian_blur(
        x, p["gaussian_blur"], radius=radius, mode=options["blur_mode"]
      )
    )
  if "gaussian_noise" in items:
    ops.append(
      lambda x, p: photometric.gaussian_noise(
        p["noise_key"], x, p["gaussian_noise"]
      )
    )
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
  variations = ranges_lib.VARIATIONS
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
  ops = _ops(items, bool(fuse_geometric), options)

  def sample_fn(key: Array, image: Array) -> Array:
    image = base.check_image(image)
    # Variation i draws its parameter from keys[2 i]; keys[2 i + 1] is its
    # own randomness (the noise of gaussian_noise).
    keys = jax.random.split(key, 2 * len(names))
    params = {
      n: sample(keys[2 * i])
      for i, (n, sample) in enumerate(zip(names, samplers, strict=True))
    }
    if "gaussian_noise" in items:
      params["noise_key"] = keys[2 * names.index("gaussian_noise") + 1]
    for op in ops:
      image = op(image, params)
    return image

  return sample_fn
