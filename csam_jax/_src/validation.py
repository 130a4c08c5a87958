"""Eager checks of the options of csam_jax's functions.

One function per check, all called as ``check_x(name, value, ...)``: ``name``
is the argument (or field) checked, and every message names it together with
its valid values. Each check returns the value (converted where it says so),
so a call reads ``sparsity = check_fraction("sparsity", sparsity)``.

Options are static Python values: they pick code at trace time, so they are
checked before anything is traced. The checks of arrays that may be traced
(``check_positive``, ``check_nonnegative``) check concrete values only.

Checks of one domain's inputs stay beside it: the image layout of the
variations (``variations.base.check_image``), the certifiers' batches and
labels (``certify.inputs``), the corruption table's names and images
(``corruptions.registry``) and the top-k ``structure`` strings
(``topk.parse_structure``).
"""

from collections.abc import Collection
from typing import Any, TypeVar

import jax
import numpy as np

T = TypeVar("T")


def check_choice(name: str, value: T, valid: Collection[Any]) -> T:
  """Returns ``value``; raises unless it is one of ``valid``.

  Example:
    >>> check_choice("scope", "layer", ("global", "layer"))
    'layer'
    >>> check_choice("scope", "net", ("global", "layer"))
    Traceback (most recent call last):
    ...
    ValueError: Unknown scope 'net'; valid values: ('global', 'layer').
  """
  if value not in valid:
    raise ValueError(f"Unknown {name} {value!r}; valid values: {tuple(valid)}.")
  return value


def check_float(name: str, value: Any) -> float:
  """Returns ``value`` as a float; raises unless it is a real scalar number.

  Python and numpy ints and floats pass; bools, arrays and strings do not.
  """
  if isinstance(value, bool) or not isinstance(
    value, int | float | np.integer | np.floating
  ):
    raise TypeError(f"{name} must be a Python float, got {value!r}.")
  return float(value)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
  """Returns ``value`` as an int; raises unless it is an int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, int | np.integer):
    raise TypeError(f"{name} must be an int, got {value!r}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}.")
  return int(value)


def check_in_range(
  name: str,
  value: Any,
  low: float,
  high: float,
  *,
  low_open: bool = False,
  high_open: bool = False,
) -> float:
  """Returns ``value`` as a float; raises unless it lies in the interval.

  The interval is ``[low, high]``, each end open when ``low_open`` /
  ``high_open``; NaN is never in it.

  Example:
    >>> check_in_range("alpha", 0.5, 0, 1, low_open=True, high_open=True)
    0.5
    >>> check_in_range("alpha", 1, 0, 1, low_open=True, high_open=True)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be in (0, 1), got 1.
  """
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise TypeError(f"{name} must be a number, got {value!r}.") from None
  above = x > low if low_open else x >= low
  below = x < high if high_open else x <= high
  if not (above and below):
    interval = (
      f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    )
    raise ValueError(f"{name} must be in {interval}, got {value!r}.")
  return x


def check_open_unit(name: str, value: Any) -> float:
  """Returns ``value`` as a float; raises unless it is in (0, 1)."""
  return check_in_range(name, value, 0, 1, low_open=True, high_open=True)


def check_fraction(name: str, value: Any) -> float:
  """Returns ``value`` as a float; raises unless it is a number in [0, 1).

  The check of ``sparsity``: bools, arrays and strings raise a TypeError.
  """
  return check_in_range(name, check_float(name, value), 0, 1, high_open=True)


def _concrete(value: Any) -> np.ndarray | None:
  """``value`` as numpy, or None for a traced value (not checkable).

  numpy, not jnp: under ``jit`` jnp would turn a concrete value into a
  tracer.
  """
  if isinstance(value, jax.core.Tracer):
    return None
  return np.asarray(value)


def check_nonnegative(name: str, value: T) -> T:
  """Returns ``value``; raises unless every entry is >= 0 (NaN fails).

  Traced values are returned unchecked.
  """
  x = _concrete(value)
  if x is not None and not np.all(x >= 0):
    raise ValueError(f"{name} must be >= 0, got {value}.")
  return value


def check_positive(name: str, value: T) -> T:
  """Returns ``value``; raises unless every entry is > 0 (NaN fails).

  Traced values are returned unchecked.
  """
  x = _concrete(value)
  if x is not None and not np.all(x > 0):
    raise ValueError(f"{name} must be > 0, got {value}.")
  return value
