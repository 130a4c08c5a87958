"""Input-variation samplers: one builder, one config shape.

A *sampler* is ``sampler(key, image) -> image``: one random draw of an input
variation applied to a [0, 1] HWC image, from a named *distribution*:

* "semantic": every family of ``variations.ranges`` composed in one draw
  (csam_jax.variations.compose);
* one family alone - "gamma", "contrast", "brightness", "rotation",
  "translation" or "gaussian_blur" - at its range in ``variations.ranges``
  (the CC-Cert range of ``csam_jax.variations.CC_CERT_RANGES`` when the
  family is absent there), with the same conventions: what the CC-Cert
  reference certifies in one run;
* "corruptions": the CIFAR-10-C corruptions ``variations.corruption_names``
  at ``variations.corruption_severities``
  (csam_jax.variations.corruption_sampler);
* "none": no sampler.

The same `make_sampler` and the same ``variations`` section (`get_config`)
serve C-SAM's certification hinge and data augmentation
(``config.search.csam.distribution`` / ``.variations``) and certification
(``config.certify.distributions`` / ``.variations``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from csam_jax import variations as csam_variations

Sampler = Callable[[jax.Array, jax.Array], jax.Array]

# The families certified alone (csam_jax.variations.REGISTRY decides).
FAMILIES = csam_variations.CERTIFIABLE
DISTRIBUTIONS = ("semantic", *FAMILIES, "corruptions", "none")


def get_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The ``variations`` section: parameters of every distribution.

  Fields:
    ranges: per-family ranges of the semantic kinds (CC-Cert's by default;
      csam_jax.variations.compose documents each family's range).
    border_mode: geometric families' border ("constant", "reflect", ...).
    cval: fill value of the "constant" border.
    contrast_center: "zero" (x * c, kornia's adjust_contrast as in the
      CC-Cert reference) or "mean" (per-image mean kept).
    corruption_names: CIFAR-10-C corruptions of the "corruptions" kind
      (empty: ``csam_jax.variations.CORRUPTIONS``).
    corruption_severities: their severities in 1..5.

  Example:
    >>> get_config(ranges=dict(brightness=0.2)).ranges.brightness
    0.2
  """
  section = ml_collections.ConfigDict(
    dict(
      ranges=ml_collections.ConfigDict(dict(csam_variations.CC_CERT_RANGES)),
      border_mode="constant",
      cval=0.0,
      contrast_center="zero",
      corruption_names=(),  # all of csam_jax.variations.CORRUPTIONS
      corruption_severities=(1, 2, 3, 4, 5),
    )
  )
  if "ranges" in overrides:
    section.ranges = ml_collections.ConfigDict(dict(overrides.pop("ranges")))
  section.update(overrides)
  return section


def check_distribution(field: str, name: Any, *, none_ok: bool = True) -> str:
  """``name`` if a distribution, else a ValueError naming ``field`` and the
  distributions."""
  valid = DISTRIBUTIONS if none_ok else DISTRIBUTIONS[:-1]
  if name not in valid:
    raise ValueError(f"{field} must be one of {valid}, got {name!r}.")
  return name


def make_sampler(distribution: str, variations: Any) -> Sampler | None:
  """The sampler of ``distribution`` with the parameters of ``variations``.

  Args:
    distribution: one of `DISTRIBUTIONS`.
    variations: a ``variations`` section (`get_config`).

  Returns:
    ``sampler(key, image) -> image`` on [0, 1] HWC images (None for
    "none").

  Raises:
    ValueError: an unknown distribution (and the variations module's range
      errors).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> sampler = make_sampler("brightness", get_config())
    >>> sampler(jax.random.key(0), jnp.full((4, 4, 3), 0.5)).shape
    (4, 4, 3)
  """
  check_distribution("the distribution", distribution)
  if distribution == "none":
    return None
  if distribution == "corruptions":
    names = tuple(variations.corruption_names) or csam_variations.CORRUPTIONS
    return csam_variations.corruption_sampler(
      names, tuple(variations.corruption_severities)
    )
  if distribution == "semantic":
    ranges = dict(variations.ranges)
  elif distribution in variations.ranges:
    ranges = {distribution: variations.ranges[distribution]}
  elif distribution in csam_variations.CC_CERT_RANGES:
    ranges = {distribution: csam_variations.CC_CERT_RANGES[distribution]}
  else:
    raise ValueError(
      f"the distribution {distribution!r} has no range: give one in "
      f"variations.ranges.{distribution} (it has no CC-Cert range)."
    )
  return csam_variations.compose(
    ranges,
    border_mode=variations.border_mode,
    cval=variations.cval,
    contrast_center=variations.contrast_center,
  )
