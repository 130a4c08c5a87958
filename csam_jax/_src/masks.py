"""Pruning masks as pytrees: the prunable leaves and the initial soft masks.

A masks pytree has the structure of params: a float leaf (a soft mask with
values in [0, 1]) for every prunable leaf and ``None`` for every leaf that is
not pruned (biases, norms). Every function takes its options as static Python
values, so they pick code at trace time.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from csam_jax._src import tree_utils, validation
from csam_jax._src.tree_utils import PyTree, Where, drop, map_chosen

INIT_METHODS = ("percentile", "hydra", "magnitude", "ones", "uniform")
SCOPES = ("global", "layer")
MODES = ("soft", "hard", "ste")


def prunable(params: PyTree) -> PyTree:
  """True for conv/dense kernels (``ndim >= 2``), False otherwise.

  Example:
    >>> import jax.numpy as jnp, csam_jax
    >>> csam_jax.prunable({"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)})
    {'bias': False, 'kernel': True}
  """
  return jax.tree.map(lambda x: jnp.ndim(x) >= 2, params)


def num_pruned(n: int, sparsity: float) -> int:
  """Number of entries pruned out of ``n``: ``round(sparsity * n)``."""
  return min(int(round(sparsity * n)), n)


def _chosen_weights(params: PyTree, where: Where) -> PyTree:
  """The leaves of ``params`` chosen by ``where`` (default ``prunable``), and
  ``None`` elsewhere: mapping over it with ``jax.tree.map`` makes masks."""
  chosen = tree_utils.resolve_where(
    prunable if where is None else where, params
  )
  return map_chosen(lambda w: w, chosen, params, otherwise=drop)


def _order_statistic(values: jax.Array, rank: int) -> jax.Array:
  """The ``rank``-th smallest entry (0-based) of a flat array."""
  return jnp.sort(values)[rank]


def _percentile_masks(weights: PyTree, scope: str, tau: float) -> PyTree:
  """clip(|w| / P_tau(|w|), 0, 1) with P_tau an order statistic per scope.

  P_tau is the entry of rank round(tau/100 * n) among the n magnitudes of the
  scope (ascending, 0-based, clamped to n - 1). With tau = 100 * s this is the
  smallest entry kept by ``topk_masks(.., s)``, so exactly the kept top
  (1 - s) saturate at 1 (for distinct magnitudes).
  """

  def threshold(abs_values: jax.Array) -> jax.Array:
    n = abs_values.size
    rank = min(num_pruned(n, tau / 100.0), n - 1)
    return _order_statistic(abs_values.ravel(), rank)

  def scaled(w: jax.Array, p: jax.Array) -> jax.Array:
    a = jnp.abs(w).astype(jnp.float32)
    safe_p = jnp.where(p > 0, p, 1.0)
    return jnp.where(a >= p, 1.0, jnp.clip(a / safe_p, 0.0, 1.0))

  leaves = jax.tree.leaves(weights)
  if scope == "global" and leaves:
    flat = jnp.concatenate([jnp.abs(w).ravel() for w in leaves])
    p_global = threshold(flat.astype(jnp.float32))
    return jax.tree.map(lambda w: scaled(w, p_global), weights)
  return jax.tree.map(
    lambda w: scaled(w, threshold(jnp.abs(w).astype(jnp.float32))), weights
  )


def _fan_in(w: jax.Array) -> int:
  return int(np.prod(w.shape[:-1])) if w.ndim >= 2 else int(w.size)


def _per_leaf_max_scaled(w: jax.Array, scale: float) -> jax.Array:
  a = jnp.abs(w).astype(jnp.float32)
  m = jnp.max(a)
  return jnp.abs(scale * a / jnp.where(m > 0, m, 1.0))


def init_masks(
  params: PyTree,
  *,
  sparsity: float,
  method: str = "percentile",
  where: Where = None,
  scope: str = "global",
  key: jax.Array | None = None,
  tau: float | None = None,
) -> PyTree:
  """Initial soft masks (float32) for the prunable leaves of ``params``.

  Methods (C-SAM, He & Chen 2026, docs/method.md; HYDRA, Sehwag et al.
  2020):
    * ``"percentile"``: ``clip(|w| / P_tau(|w|), 0, 1)``, the percentile taken
      over the scope (all chosen leaves for ``"global"``, each leaf for
      ``"layer"``); ``tau`` in [0, 100] defaults to ``100 * sparsity``. P_tau
      is the order statistic of rank ``round(tau/100 * n)`` (0-based), the
      convention that makes exactly the top ``1 - sparsity`` entries start at
      1 - those that ``topk_masks`` keeps.
    * ``"hydra"``: ``|sqrt(6 / fan_in) * w / max|w||`` per leaf, fan_in being
      the product of all but the last (output) axis.
    * ``"magnitude"``: ``|w| / max|w|`` per leaf.
    * ``"ones"``: all ones.
    * ``"uniform"``: i.i.d. U[0, 1) per entry; needs ``key``.

  Args:
    params: the weights pytree.
    sparsity: target sparsity in [0, 1) (used by the percentile default tau).
    method: one of ``INIT_METHODS``.
    where: bool pytree or callable params -> bool pytree choosing the leaves
      to mask; defaults to ``prunable``.
    scope: ``"global"`` or ``"layer"`` (for ``"percentile"``).
    key: PRNG key, required by ``"uniform"``.
    tau: percentile in [0, 100] for ``"percentile"``.

  Returns:
    Masks pytree: float32 arrays on chosen leaves, ``None`` elsewhere.

  Raises:
    ValueError: for an unknown method/scope, sparsity outside [0, 1), tau
      outside [0, 100], a missing key or a ``where`` of the wrong structure.

  Example:
    >>> import jax.numpy as jnp, csam_jax
    >>> w = jnp.array([[1.0, -2.0], [3.0, 4.0]])
    >>> params = {"kernel": w, "bias": jnp.ones(2)}
    >>> m = csam_jax.init_masks(params, sparsity=0.5)
    >>> m["bias"] is None, (m["kernel"] * 3).round(4).tolist()
    (True, [[1.0, 2.0], [3.0, 3.0]])
  """
  sparsity = validation.check_fraction("sparsity", sparsity)
  validation.check_choice("init method", method, INIT_METHODS)
  validation.check_choice("scope", scope, SCOPES)
  weights = _chosen_weights(params, where)
  if method == "percentile":
    tau = 100.0 * sparsity if tau is None else tau
    tau = validation.check_in_range("tau", tau, 0, 100)
    return _percentile_masks(weights, scope, tau)
  if method == "hydra":
    return jax.tree.map(
      lambda w: _per_leaf_max_scaled(w, math.sqrt(6.0 / _fan_in(w))), weights
    )
  if method == "magnitude":
    return jax.tree.map(lambda w: _per_leaf_max_scaled(w, 1.0), weights)
  if method == "ones":
    return jax.tree.map(lambda w: jnp.ones(w.shape, jnp.float32), weights)
  if key is None:
    raise ValueError('init_masks(method="uniform") needs a PRNG `key`.')
  # One key per chosen leaf, split from `key` in tree order.
  return optax.tree.random_like(key, weights, jax.random.uniform, jnp.float32)
