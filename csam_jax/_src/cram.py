"""CrAM: compression-aware SAM, as an Optax gradient transformation.

CrAM (Peste et al., "CrAM: A Compression-Aware Minimizer", ICLR 2023) takes
the SAM ascent step, compresses the ascent point and uses the gradient
there: with ``g0 = grad L(w)``, ``e = rho g0`` (``rho g0 / (||g0|| + eps)``
when normalised) and ``M = C(w + e)`` the compression's mask,

  ``g = M * grad L(M * (w + e))``           (CrAM)
  ``g = g0 + M * grad L(M * (w + e))``      (CrAM+)

which the base optimizer then applies at ``w``. The reference
(IST-DASLab/CrAM, ``TopkCrAM``) perturbs every leaf, does not normalise the
ascent step by default and compresses by global magnitude at a sparsity
drawn uniformly from a list at every step ("CrAM+ Multi").
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from csam_jax._src import validation
from csam_jax._src.tree_utils import PyTree

GradFn = Callable[[PyTree, int], PyTree]
# (ascent point, key) -> 0/1 masks (None on uncompressed leaves).
CompressFn = Callable[[PyTree, jax.Array], PyTree]


class CrAMState(NamedTuple):
  """State of `cram_transform`.

  Attributes:
    count: number of updates taken (int32); the compression's key at an
      update is ``fold_in(key, count)``.
    key: the PRNG key of the compression (e.g. CrAM+ Multi's sparsity draw).
  """

  count: jax.Array
  key: jax.Array


def _masked(tree: PyTree, masks: PyTree) -> PyTree:
  """``tree * masks`` on the masked leaves, ``tree`` elsewhere."""
  return jax.tree.map(
    lambda x, m: x if m is None else x * m.astype(x.dtype),
    tree,
    masks,
    is_leaf=lambda x: x is None,
  )


def cram_transform(
  rho: float,
  compress_fn: CompressFn,
  *,
  plus: bool = False,
  normalize: bool = False,
  sparse_grad: bool = True,
  key: jax.Array | None = None,
  eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
  """CrAM's gradient: at the compressed ascent point, masked (plus ``g0``).

  ``update(grads, state, params, *, grad_fn)`` computes ``e = rho * grads``
  (``normalize``: ``rho * grads / (||grads|| + eps)``, one global norm) on
  every leaf, the masks ``M = compress_fn(params + e, fold_in(key,
  count))``, and calls ``grad_fn(M * (params + e), 0)`` (the convention of
  `csam_transform`). It returns ``M * g1`` (``sparse_grad``; else ``g1``),
  plus ``grads`` when ``plus`` (CrAM+; a sum, as the reference, not an
  average). Leaves where the masks are None are not compressed or masked.

  Args:
    rho: ascent radius, >= 0.
    compress_fn: ``(point, key) -> masks``: 0/1 masks of the compression at
      the ascent point (None on uncompressed leaves), e.g. global magnitude
      masks by `csam_jax.threshold_masks_at`; ``key`` is for a random
      compression and may be ignored.
    plus: CrAM+: add the clean gradient ``grads``.
    normalize: divide the ascent step by the global gradient norm (the
      reference's ``grad_norm=True``; its default is False).
    sparse_grad: mask the gradient at the compressed point (the
      reference's ``sparse_grad=True``, the default of its configs).
    key: PRNG key of the compression (kept in the state); default
      ``jax.random.key(0)``.
    eps: added to the gradient norm when ``normalize``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs
    ``params`` and ``grad_fn``.

  Raises:
    ValueError: negative rho or eps; at update, missing params/grad_fn.

  Example:
    >>> import jax, jax.numpy as jnp, optax, csam_jax
    >>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
    >>> keep_largest = lambda p, _: {"w": (jnp.abs(p["w"]) > 2.5) * 1.0}
    >>> tx = optax.chain(
    ...   csam_jax.cram_transform(0.5, keep_largest, plus=True), optax.sgd(0.1))
    >>> params = {"w": jnp.array([1.5, 2.0])}
    >>> g = jax.grad(loss)(params)  # [1, 2]: the point w + 0.5 g is [2, 3]
    >>> u, _ = tx.update(g, tx.init(params), params,
    ...                  grad_fn=lambda p, _: jax.grad(loss)(p))
    >>> # M = [0, 1], grad at M (w + e) = [0, 3] is [-2, 4]: g0 + M g1 = [1, 6]
    >>> [round(float(x), 6) for x in u["w"]]
    [-0.1, -0.6]
  """
  rho = validation.check_in_range("rho", rho, 0, math.inf, high_open=True)
  eps = validation.check_nonnegative("eps", float(eps))
  key = jax.random.key(0) if key is None else key

  def init_fn(params: PyTree) -> CrAMState:
    del params
    return CrAMState(count=jnp.zeros((), jnp.int32), key=key)

  def update_fn(
    updates: PyTree,
    state: CrAMState,
    params: PyTree | None = None,
    *,
    grad_fn: GradFn | None = None,
    **extra_args: Any,
  ) -> tuple[PyTree, CrAMState]:
    del extra_args
    if grad_fn is None or params is None:
      raise ValueError("cram_transform.update needs `params` and `grad_fn=`.")
    scale = rho
    if normalize:
      scale = rho / (optax.tree.norm(updates) + eps)
    point = jax.tree.map(
      lambda p, g: p + (scale * g).astype(p.dtype), params, updates
    )
    masks = compress_fn(point, jax.random.fold_in(state.key, state.count))
    grads = grad_fn(_masked(point, masks), 0)
    if sparse_grad:
      grads = _masked(grads, masks)
    if plus:
      grads = optax.tree.add(updates, grads)
    return grads, CrAMState(optax.safe_increment(state.count), state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
