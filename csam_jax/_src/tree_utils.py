"""Pytree helpers shared by the mask and perturbation modules.

Masks are pytrees with the structure of params in which unpruned leaves are
``None``. JAX treats ``None`` as an empty subtree, so ``jax.tree.map`` over a
masks pytree visits only the mask leaves; mapping a masks pytree together with
params uses ``is_leaf=is_none`` so that both trees line up.

Leaves are chosen by a ``chosen`` pytree (``resolve_where``): a bool for every
leaf of params and ``None`` where params hold ``None``. ``map_chosen`` is the
one map over chosen leaves.
"""

from collections.abc import Callable
from typing import Any

import jax

PyTree = Any
Where = PyTree | Callable[[PyTree], PyTree] | None


def is_none(x: Any) -> bool:
  return x is None


def _keep_first(x: Any, *rest: Any) -> Any:
  del rest
  return x


def drop(*leaves: Any) -> None:
  """``otherwise=`` of ``map_chosen`` that leaves ``None`` (a masks pytree)."""
  del leaves


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


def map_chosen(
  fn: Callable[..., Any],
  chosen: PyTree,
  tree: PyTree,
  *rest: PyTree,
  otherwise: Callable[..., Any] = _keep_first,
) -> PyTree:
  """``fn(x, *r)`` on the chosen leaves, ``otherwise(x, *r)`` on the others.

  Args:
    fn: applied to the leaves ``x`` of ``tree`` (and ``r`` of ``rest``) that
      ``chosen`` picks.
    chosen: bool pytree with the structure of ``tree``, as ``resolve_where``
      returns; its ``None`` leaves (where ``tree`` holds ``None``) stay
      ``None`` in the result.
    tree: the pytree mapped over.
    *rest: pytrees with the structure of ``tree``; at unchosen leaves they
      may hold ``None`` (e.g. a masks pytree).
    otherwise: applied to the unchosen leaves; by default the leaf of
      ``tree`` passes through (as in ``optax.masked``). ``drop`` leaves
      ``None`` there, which makes a masks pytree.

  Returns:
    A pytree with the structure of ``chosen``.

  Example:
    >>> import jax.numpy as jnp
    >>> tree = {"w": jnp.array(2.0), "b": jnp.array(3.0)}
    >>> chosen = {"w": True, "b": False}
    >>> out = map_chosen(lambda x: 10 * x, chosen, tree)
    >>> float(out["w"]), float(out["b"])
    (20.0, 3.0)
    >>> map_chosen(lambda x: 10 * x, chosen, tree, otherwise=drop)["b"]
  """
  return jax.tree.map(
    lambda c, x, *r: None if c is None else (fn if c else otherwise)(x, *r),
    chosen,
    tree,
    *rest,
    is_leaf=is_none,
  )
