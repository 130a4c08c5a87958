"""Applying masks to params, and measuring sparsity."""

import jax
import numpy as np

from csam_jax._src import masks as masks_lib
from csam_jax._src import topk as topk_lib
from csam_jax._src import tree_utils, validation
from csam_jax._src.tree_utils import PyTree, Where, drop, map_chosen


def _check_structure(params: PyTree, masks: PyTree) -> None:
  params_def = jax.tree.structure(params)
  try:
    jax.tree.map(lambda m, p: None, masks, params, is_leaf=tree_utils.is_none)
  except ValueError as e:
    raise ValueError(
      "`masks` must have the structure of params (None for unmasked leaves);"
      f" params have structure {params_def}."
    ) from e


def apply_masks(
  params: PyTree,
  masks: PyTree,
  *,
  mode: str = "soft",
  sparsity: float | None = None,
  scope: str = "global",
  structure: str = "unstructured",
) -> PyTree:
  """Multiplies the masked leaves of ``params`` by their masks.

  Modes:
    * ``"soft"``: ``w * m`` (gradients flow to both).
    * ``"hard"``: ``w * topk_masks(m)``; no gradient to ``m``.
    * ``"ste"``: the forward pass uses the hard mask exactly; the gradient to
      ``m`` is that of the soft product (``w``), the straight-through
      estimator (HYDRA; S2AP). The gradient to ``w`` is the hard mask.

  Args:
    params: weights pytree.
    masks: masks pytree (``None`` for unmasked leaves).
    mode: ``"soft"``, ``"hard"`` or ``"ste"``.
    sparsity: needed by ``"hard"`` and ``"ste"`` (see ``topk_masks``).
    scope: top-k scope for ``"hard"``/``"ste"``.
    structure: top-k structure for ``"hard"``/``"ste"``.

  Returns:
    The masked params (unmasked leaves unchanged).

  Raises:
    ValueError: unknown mode, missing sparsity, or mismatched trees.

  Example:
    >>> import jax.numpy as jnp, csam_jax
    >>> p = {"w": jnp.array([[1., 2.], [3., 4.]]), "b": jnp.ones(2)}
    >>> m = {"w": jnp.array([[0.2, 0.9], [0.5, 0.7]]), "b": None}
    >>> csam_jax.apply_masks(p, m, mode="hard", sparsity=0.5)["w"].tolist()
    [[0.0, 2.0], [0.0, 4.0]]
  """
  validation.check_choice("mode", mode, masks_lib.MODES)
  _check_structure(params, masks)
  if mode == "soft":
    return _combine(params, masks, lambda w, m: w * m.astype(w.dtype))
  if sparsity is None:
    raise ValueError(f'apply_masks(mode="{mode}") needs `sparsity`.')
  hard = jax.lax.stop_gradient(
    topk_lib.topk_masks(masks, sparsity, scope=scope, structure=structure)
  )
  if mode == "hard":
    return _combine(params, hard, lambda w, h: w * h.astype(w.dtype))

  def ste(w, m, h):
    # Forward: w * h exactly (the second term is w * 0). Backward: d/dm = w,
    # d/dw = h.
    soft_delta = (m - jax.lax.stop_gradient(m)).astype(w.dtype)
    return w * h.astype(w.dtype) + jax.lax.stop_gradient(w) * soft_delta

  return _combine(params, masks, ste, hard)


def _combine(params: PyTree, masks: PyTree, fn, *others: PyTree) -> PyTree:
  """Maps ``fn(w, m, *others)`` over masked leaves; others pass through."""
  masked = jax.tree.map(
    lambda m: m is not None, masks, is_leaf=tree_utils.is_none
  )
  return map_chosen(fn, masked, params, masks, *others)


def sparsity(tree: PyTree, *, where: Where = None) -> dict:
  """Fraction of zeros among prunable entries.

  Args:
    tree: hard masks, or masked params.
    where: the leaves to count (bool pytree or callable, as in optax.masked);
      defaults to the non-``None`` leaves with ``ndim >= 2`` (``prunable``).

  Returns:
    ``{"global": float, "per_leaf": {"path/to/leaf": float}}``.

  Example:
    >>> import jax.numpy as jnp, csam_jax
    >>> csam_jax.sparsity({"w": jnp.array([[0., 1.], [0., 0.]]), "b": None})
    {'global': 0.75, 'per_leaf': {'w': 0.75}}
  """
  chosen = tree_utils.resolve_where(
    masks_lib.prunable if where is None else where, tree
  )
  counted = map_chosen(lambda x: x, chosen, tree, otherwise=drop)
  zeros, total, per_leaf = 0, 0, {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(counted):
    leaf_zeros = int(np.sum(np.asarray(leaf) == 0))
    key = jax.tree_util.keystr(path, simple=True, separator="/")
    per_leaf[key] = leaf_zeros / max(leaf.size, 1)
    zeros += leaf_zeros
    total += leaf.size
  return {"global": zeros / total if total else 0.0, "per_leaf": per_leaf}
