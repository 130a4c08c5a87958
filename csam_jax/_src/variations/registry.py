"""Every family of semantic variations, declared once: `REGISTRY`.

A family's entry holds all that the library knows of it: where `compose`
applies it, how a one-number range reads (CC-Cert's conventions), the
bound its parameters must respect, the transform it applies, its CC-Cert
range, whether it is certified alone and its certification key offset.
`compose`, `parameter_range` and every list of names (here and in the
harness) derive from it, so a new family is one entry (and its transform).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from csam_jax._src.variations import base, blur, geometric, photometric

Array = base.Array
# An applied variation: ``op(image, params) -> image``; ``params`` maps each
# family's name to its drawn parameter and ``<name>/key`` to its own key.
Op = Callable[[Array, dict[str, Array]], Array]
# ``make_op((lo, hi), options) -> Op``: the transform of a family for its
# range and `compose`'s options (border_mode, cval, contrast_center,
# blur_mode).
MakeOp = Callable[[tuple[Any, Any], dict[str, Any]], Op]


class Family(NamedTuple):
  """One family of semantic variations, declared once (`REGISTRY`).

  Attributes:
    name: the family's name (a key of every ``ranges`` dict).
    group: where `compose` applies it: "photometric" (pointwise, on the
      original pixels), "geometric" (one resampling for all of them),
      "blur", "noise" (additive sensor noise, last).
    cc_cert_range: the range CC-Cert suggests (Pautov et al., AAAI 2022; how
      we use them: docs/method.md), read as `parameter_range` documents;
      None: not one of CC-Cert's families.
    certifiable: certified as a distribution of its own (CC-Cert's
      per-family certificates); every CC-Cert family is.
    seed_offset: its fold_in offset among the certification keys (fixed:
      adding a family never changes another family's draws).
    from_number: CC-Cert's reading of a one-number range ``v`` as
      ``(lo, hi)`` (raises for a ``v`` it cannot read); None for a family
      with a range of its own shape (translation: per axis).
    lower: the bound of its parameters, ``(bound, strict)``: ``lo >= bound``
      (``lo > bound`` when strict); None: unbounded.
    make_op: its transform, ``make_op((lo, hi), options) -> op``.
    fused: a geometric family's keyword of
      `geometric.rotate_scale_translate` (the one resampling of them all).
  """

  name: str
  group: str
  cc_cert_range: float | None
  certifiable: bool
  seed_offset: int | None
  from_number: Callable[[float], tuple[float, float]] | None = None
  lower: tuple[float, bool] | None = None
  make_op: MakeOp | None = None
  fused: str | None = None


def _symmetric(name: str) -> Callable[[float], tuple[float, float]]:
  def read(v: float) -> tuple[float, float]:
    if v < 0:
      raise ValueError(f"range of {name!r} must be >= 0, got {v}")
    return -v, v

  return read


def _reciprocal(v: float) -> tuple[float, float]:
  if v <= 0:
    raise ValueError(f"range of 'gamma' must be > 0, got {v}")
  return min(v, 1.0 / v), max(v, 1.0 / v)


def _pointwise(fn: Callable[..., Array], name: str, **fixed: str) -> MakeOp:
  """``fn(x, p[name], **{kw: options[option]})`` for ``fixed = {kw:
  option}``."""

  def make_op(bounds, options):
    kwargs = {kw: options[option] for kw, option in fixed.items()}
    return lambda x, p: fn(x, p[name], **kwargs)

  return make_op


def _resampled(fn: Callable[..., Array], name: str) -> MakeOp:
  """A geometric family alone (``fuse_geometric=False``)."""

  def make_op(bounds, options):
    mode, cval = options["border_mode"], options["cval"]
    return lambda x, p: fn(x, p[name], mode=mode, cval=cval)

  return make_op


def _blur_op(bounds, options):
  # The kernel's radius covers the range's largest sigma.
  radius = blur.default_radius(bounds[1])
  mode = options["blur_mode"]
  return lambda x, p: blur.gaussian_blur(
    x, p["gaussian_blur"], radius=radius, mode=mode
  )


def _noise_op(bounds, options):
  return lambda x, p: photometric.gaussian_noise(
    p["gaussian_noise/key"], x, p["gaussian_noise"]
  )


# The registry, in the canonical order in which `compose` applies them:
# pointwise photometric changes first (on the original pixels, before
# geometric transforms fill the border with `cval`), then the geometric
# transforms, then blur, then additive noise. The composed default
# ("semantic") is every family with a CC-Cert range.
REGISTRY = (
  Family(
    "gamma",
    "photometric",
    0.7,
    True,
    3,
    from_number=_reciprocal,
    lower=(0.0, True),
    make_op=_pointwise(photometric.gamma, "gamma"),
  ),
  Family(
    "contrast",
    "photometric",
    1.3,
    True,
    4,
    from_number=lambda v: (1.0 - abs(1.0 - v), 1.0 + abs(1.0 - v)),
    lower=(0.0, False),
    make_op=_pointwise(
      photometric.contrast, "contrast", center="contrast_center"
    ),
  ),
  Family(
    "brightness",
    "photometric",
    0.2,
    True,
    5,
    from_number=_symmetric("brightness"),
    make_op=_pointwise(photometric.brightness, "brightness"),
  ),
  Family(
    "rotation",
    "geometric",
    10.0,
    True,
    6,
    from_number=_symmetric("rotation"),
    make_op=_resampled(geometric.rotation, "rotation"),
    fused="degrees",
  ),
  Family(
    "scale",
    "geometric",
    None,
    False,
    None,
    from_number=lambda v: (1.0 - v, 1.0 + v),
    lower=(0.0, True),
    make_op=_resampled(geometric.scale, "scale"),
    fused="factor",
  ),
  Family(
    "translation",
    "geometric",
    0.1,
    True,
    7,
    make_op=_resampled(geometric.translation, "translation"),
    fused="shift",
  ),
  Family(
    "gaussian_blur",
    "blur",
    1.0,
    True,
    8,
    from_number=lambda v: (0.0, v),
    lower=(0.0, False),
    make_op=_blur_op,
  ),
  Family(
    "gaussian_noise",
    "noise",
    None,
    False,
    None,
    # A fixed sigma, as CC-Cert's awgn.
    from_number=lambda v: (v, v),
    lower=(0.0, False),
    make_op=_noise_op,
  ),
)
GROUPS = ("photometric", "geometric", "blur", "noise")
BY_NAME = {f.name: f for f in REGISTRY}

# Derived views (every other list of families derives from `REGISTRY`).
VARIATIONS = tuple(f.name for f in REGISTRY)
CC_CERT_RANGES = {
  f.name: f.cc_cert_range for f in REGISTRY if f.cc_cert_range is not None
}
CERTIFIABLE = tuple(f.name for f in REGISTRY if f.certifiable)
SEED_OFFSETS = {f.name: f.seed_offset for f in REGISTRY if f.certifiable}
