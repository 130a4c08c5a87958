"""Pytree helpers shared by the mask and perturbation modules.

Masks are pytrees with the structure of params in which unpruned leaves are
``None``. JAX treats ``None`` as an empty subtree, so ``jax.tree.map`` over a
masks pytree visits only the mask leaves; mapping a masks pytree together with
params uses ``is_leaf=_is_none`` so that both trees line up.
"""

from collections.abc import Callable
from typing import Any

import jax

PyTree = Any
Where = PyTree | Callable[[PyTree], PyTree] | None


def is_none(x: Any) -> bool:
  return x is None


def path_str(path: tuple[Any, ...]) -> str:
  """Formats a pytree key path as ``"a/b/0/kernel"``."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def resolve_where(where: Where, params: PyTree, arg: str = "where") -> PyTree:
  """Returns the bool pytree chosen by ``where`` (tree or callable).

  ``None`` chooses every leaf. Raises a ValueError when the tree does not have
  the structure of ``params`` (``None`` leaves of ``params`` may be given any
  value, or ``None``, in ``where``).
  """
  if where is None:
    return jax.tree.map(lambda _: True, params)
  chosen = where(params) if callable(where) else where
  params_def = jax.tree.structure(params, is_leaf=is_none)
  chosen_def = jax.tree.structure(chosen, is_leaf=is_none)
  if params_def != chosen_def:
    raise ValueError(
      f"`{arg}` must be a bool pytree with the structure of params (or a "
      f"callable returning one); got structure {chosen_def}, expected "
      f"{params_def}."
    )
  # Align with params: positions where params hold None are dropped.
  return jax.tree.map(
    lambda p, w: None if p is None else bool(w),
    params,
    chosen,
    is_leaf=is_none,
  )
