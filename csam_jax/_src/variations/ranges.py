"""Parameter ranges and samplers of the semantic variations."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from csam_jax._src.variations import base, registry

Array = base.Array


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


def _scalar_range(name: str, spec: Any) -> tuple[float, float]:
  """(lo, hi) of a one-number family: its `Family.from_number` reading of
  a number, a pair as given; checked against its `Family.lower`."""
  family = registry.BY_NAME[name]
  pair = _as_pair(name, spec)
  if pair is None:
    pair = family.from_number(float(spec))
  lo, hi = min(pair), max(pair)
  if family.lower is not None:
    bound, strict = family.lower
    if lo < bound or (strict and lo == bound):
      sign = ">" if strict else ">="
      raise ValueError(
        f"range of {name!r} must be {sign} {bound:g}, got {spec}"
      )
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
  if name not in registry.VARIATIONS:
    raise ValueError(
      f"unknown variation {name!r}; valid: {registry.VARIATIONS}"
    )
  if registry.BY_NAME[name].from_number is not None:
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
