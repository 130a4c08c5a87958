"""Parameter ranges and samplers of the semantic variations."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from csam_jax._src.variations import base

Array = base.Array


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
  """

  name: str
  group: str
  cc_cert_range: float | None
  certifiable: bool
  seed_offset: int | None


# The registry, in the canonical order in which `compose` applies them:
# pointwise photometric changes first (on the original pixels, before
# geometric transforms fill the border with `cval`), then the geometric
# transforms, then blur, then additive noise. The composed default
# ("semantic") is every family with a CC-Cert range.
REGISTRY = (
  Family("gamma", "photometric", 0.7, True, 3),
  Family("contrast", "photometric", 1.3, True, 4),
  Family("brightness", "photometric", 0.2, True, 5),
  Family("rotation", "geometric", 10.0, True, 6),
  Family("scale", "geometric", None, False, None),
  Family("translation", "geometric", 0.1, True, 7),
  Family("gaussian_blur", "blur", 1.0, True, 8),
  Family("gaussian_noise", "noise", None, False, None),
)
GROUPS = ("photometric", "geometric", "blur", "noise")

# Derived views (every other list of families derives from `REGISTRY`).
VARIATIONS = tuple(f.name for f in REGISTRY)
PHOTOMETRIC = tuple(f.name for f in REGISTRY if f.group == "photometric")
GEOMETRIC = tuple(f.name for f in REGISTRY if f.group == "geometric")
CC_CERT_RANGES = {
  f.name: f.cc_cert_range for f in REGISTRY if f.cc_cert_range is not None
}
CERTIFIABLE = tuple(f.name for f in REGISTRY if f.certifiable)
SEED_OFFSETS = {f.name: f.seed_offset for f in REGISTRY if f.certifiable}


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


def _from_number(name: str, value: float) -> tuple[float, float]:
  """The CC-Cert reading of a one-number range (see `parameter_range`)."""
  if name in ("brightness", "rotation"):
    if value < 0:
      raise ValueError(f"range of {name!r} must be >= 0, got {value}")
    return -value, value
  if name == "contrast":
    return 1.0 - abs(1.0 - value), 1.0 + abs(1.0 - value)
  if name == "gamma":
    if value <= 0:
      raise ValueError(f"range of 'gamma' must be > 0, got {value}")
    return min(value, 1.0 / value), max(value, 1.0 / value)
  if name == "scale":
    return 1.0 - value, 1.0 + value
  if name == "gaussian_blur":
    return 0.0, value
  return value, value  # gaussian_noise: a fixed sigma, as CC-Cert's awgn.


def _scalar_range(name: str, spec: Any) -> tuple[float, float]:
  """(lo, hi) of a one-number family; see `parameter_range`."""
  pair = _as_pair(name, spec)
  if pair is None:
    pair = _from_number(name, float(spec))
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
    ValueError: as `parameter_range`, eagerly.
    TypeError: as `parameter_range`, eagerly.

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
