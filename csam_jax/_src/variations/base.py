"""Shared helpers of the semantic variations: types and input checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
SampleFn = Callable[[Array, Array], Array]


def check_image(image: Any) -> Array:
  """Returns ``image`` as an array; raises unless it is HWC (rank 3)."""
  image = jnp.asarray(image)
  if image.ndim != 3:
    raise ValueError(
      f"image must be HWC (rank 3), got shape {image.shape}; use jax.vmap "
      "for a batch"
    )
  return image


def clip(image: Array) -> Array:
  """Clips pixel values to [0, 1]."""
  return jnp.clip(image, 0.0, 1.0)


def check_nonnegative(name: str, value: Any) -> None:
  """Raises for a concrete negative value (traced values are not checked).

  numpy, not jnp: under ``jit`` jnp would turn a concrete value into a
  tracer.
  """
  if isinstance(value, jax.core.Tracer):
    return
  if np.any(np.asarray(value) < 0):
    raise ValueError(f"{name} must be >= 0, got {value}")


def check_positive(name: str, value: Any) -> None:
  """Raises for a concrete value <= 0 (traced values are not checked)."""
  if isinstance(value, jax.core.Tracer):
    return
  if np.any(np.asarray(value) <= 0):
    raise ValueError(f"{name} must be > 0, got {value}")
