"""The certifiers' inputs: image batches, labels, and callables as pytrees.

Their options (counts, levels, sigma) are checked by `csam_jax._src.validation`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Partial = jax.tree_util.Partial


def check_images(x: Any) -> Array:
  """Returns ``x`` as a jax.Array (kept as is, e.g. sharded) batch [B, ...].

  Any rank >= 1: NHWC images, feature vectors [B, D], or whatever the
  logits function accepts; the leading axis indexes the inputs.
  """
  if not isinstance(x, jax.Array):
    x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError(
      f"x must be a batch [B, ...] with a leading batch axis, got a scalar "
      f"of shape {x.shape}"
    )
  if x.shape[0] == 0:
    raise ValueError("x must hold at least one input")
  return x


def check_labels(labels: Any, num_images: int) -> np.ndarray:
  """Returns ``labels`` as numpy; raises unless its shape is (num_images,)."""
  labels = np.asarray(labels)
  if labels.shape != (num_images,):
    raise ValueError(
      f"labels must have shape ({num_images},), got {labels.shape}"
    )
  return labels


def _is_array_leaf(leaf: Any) -> bool:
  return isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float)


def as_pytree_fn(name: str, fn: Any) -> Partial:
  """``fn`` as a `jax.tree_util.Partial`, to pass to ``jax.jit`` as an arg.

  A `Partial` is a pytree whose leaves are its bound arguments and whose
  structure holds the function: under ``jit`` its arrays (e.g. model
  parameters) are traced arguments, not constants baked into the program,
  and Partials of the same function share one compilation whatever their
  arrays. A plain callable is wrapped as ``Partial(fn)``, which has no
  leaves: the program is compiled per (hashable) callable, as for a static
  argument.

  Args:
    name: the argument name, for error messages.
    fn: a callable, or a Partial whose leaves are arrays or numbers.

  Returns:
    The Partial.

  Raises:
    TypeError: for a non-callable or unhashable ``fn``, or a Partial with a
      leaf that is not an array (bind static objects inside ``fn.func``).
  """
  if isinstance(fn, Partial):
    bad = [
      type(leaf).__name__
      for leaf in jax.tree.leaves(fn)
      if not _is_array_leaf(leaf)
    ]
    if bad:
      raise TypeError(
        f"{name}: the bound arguments of a jax.tree_util.Partial must be "
        f"arrays (they are traced), got leaves of type {bad}; bind other "
        "objects into its function (e.g. with functools.partial)"
      )
    return fn
  if not callable(fn):
    raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
  try:
    hash(fn)
  except TypeError:
    raise TypeError(
      f"{name} must be hashable (it keys the compiled program), or a "
      "jax.tree_util.Partial"
    ) from None
  return Partial(fn)
