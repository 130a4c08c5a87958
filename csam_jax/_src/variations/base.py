"""Shared helpers of the semantic variations: types, the image check, clip.

Their options are checked by `csam_jax._src.validation`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

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
