"""SAFE: ADMM sparsification with SAM, as an Optax gradient transformation.

SAFE (Lee et al., "SAFE: Finding Sparse and Flat Minima to Improve
Pruning", ICML 2025; LOG-postech/safe-jax) solves ``min f_SAM(w)`` subject
to ``w = z`` with ``z`` sparse by scaled ADMM: the descent gradient is the
SAM gradient plus the penalty's,

  ``g = grad L(w + rho g0 / (||g0|| + eps)) + lambda_t (w - z + u)``

and every ``K`` steps ``v = w + u``, ``z = Pi(v)``, ``u = v - z`` (``Pi``
the projection onto the sparse set). ``lambda_t`` rises from 0 to
``lambda`` (``lambda (1 - cos(pi t / T)) / 2`` by default).
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from csam_jax._src import tree_utils, validation
from csam_jax._src.tree_utils import PyTree, Where, drop, map_chosen

GradFn = Callable[[PyTree, int], PyTree]
SCHEDULES = ("cosine", "linear", "constant")


class SAFEState(NamedTuple):
  """State of `safe_transform`.

  Attributes:
    count: number of updates taken (int32), ``t`` of ``lambda_t``.
    z: the projected (sparse) copy of the chosen leaves (None elsewhere).
    u: the scaled dual variable of the chosen leaves (None elsewhere).
  """

  count: jax.Array
  z: PyTree
  u: PyTree


def penalty_schedule(
  lam: float, schedule: str, total_steps: int | None
) -> Callable[[jax.Array], jax.Array]:
  """``t -> lambda_t``: the reference's cosine, linear or constant ramp.

  Example:
    >>> fn = penalty_schedule(1e-3, "cosine", 100)
    >>> [round(float(fn(t)) * 1e3, 6) for t in (0, 50, 100)]
    [0.0, 0.5, 1.0]
  """
  validation.check_choice("schedule", schedule, SCHEDULES)
  if schedule == "constant":
    return lambda t: jnp.asarray(lam, jnp.float32)
  total = validation.check_int("total_steps", total_steps)
  if schedule == "linear":
    return lambda t: lam * t / total
  return lambda t: lam * 0.5 * (1 - jnp.cos(jnp.pi * t / total))


def safe_transform(
  lam: float,
  rho: float,
  project_fn: Callable[[PyTree], PyTree],
  *,
  total_steps: int | None = None,
  dual_every: int = 32,
  schedule: str = "cosine",
  where: Where = None,
  eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
  """SAFE's descent gradient: SAM's plus the ADMM penalty's.

  ``update(grads, state, params, *, grad_fn)`` first refreshes the ADMM
  variables when ``count`` is a positive multiple of ``dual_every`` (then
  ``params`` are the weights after ``dual_every`` more updates: the
  reference's refresh after its updates ``K - 1, 2K - 1, ...``, same
  values): ``v = params + u``, ``z = project_fn(v)``, ``u = v - z``. It
  then returns ``grad_fn(params + rho grads / (||grads|| + eps), 0) +
  lambda_t (params - z + u)``, the penalty on the leaves chosen by
  ``where`` (the ascent step on every leaf), for the base optimizer (weight
  decay, momentum and the learning rate apply to the sum, as in the
  reference). ``init`` sets ``z = project_fn(params)``, ``u = 0``.

  Args:
    lam: final penalty coefficient ``lambda`` (>= 0).
    rho: SAM radius (>= 0), of the normalised ascent step.
    project_fn: the projection ``Pi`` of a pytree of the chosen leaves
      (None elsewhere) onto the sparse set, e.g. global magnitude masking
      with SAFE's tie rule (`csam_jax.threshold_masks`, ``ties="keep"``).
    total_steps: ``T`` of the cosine and linear schedules.
    dual_every: ``K``, steps between the z/u updates (>= 1).
    schedule: ``"cosine"``, ``"linear"`` (``lambda t / T``) or
      ``"constant"``.
    where: the penalised (and projected) leaves; default all.
    eps: added to the gradient norm.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs
    ``params`` and ``grad_fn``.

  Raises:
    ValueError: a negative lam/rho, unknown schedule, no total_steps for a
      ramp, dual_every < 1; at update, missing params/grad_fn.

  Example:
    >>> import jax, jax.numpy as jnp, csam_jax
    >>> keep_largest = lambda t: {"w": jnp.where(abs(t["w"]) >= 2, t["w"], 0)}
    >>> tx = csam_jax.safe_transform(1.0, 0.0, keep_largest,
    ...                              schedule="constant")
    >>> w = {"w": jnp.array([1.0, 3.0])}  # z = [0, 3], u = 0
    >>> g, _ = tx.update({"w": jnp.zeros(2)}, tx.init(w), w,
    ...                  grad_fn=lambda p, _: {"w": jnp.zeros(2)})
    >>> g["w"].tolist()  # lambda (w - z + u)
    [1.0, 0.0]
  """
  lam = validation.check_in_range("lam", lam, 0, math.inf, high_open=True)
  rho = validation.check_in_range("rho", rho, 0, math.inf, high_open=True)
  dual_every = validation.check_int("dual_every", dual_every)
  lam_fn = penalty_schedule(lam, schedule, total_steps)

  def chosen_of(params):
    return tree_utils.resolve_where(where, params)

  def dual_update(params, z, u):
    chosen = chosen_of(params)
    v = map_chosen(jnp.add, chosen, params, u, otherwise=drop)
    z = project_fn(v)
    return z, jax.tree.map(jnp.subtract, v, z)

  def init_fn(params: PyTree) -> SAFEState:
    chosen = chosen_of(params)
    z = project_fn(map_chosen(lambda p: p, chosen, params, otherwise=drop))
    u = jax.tree.map(jnp.zeros_like, z)
    return SAFEState(count=jnp.zeros((), jnp.int32), z=z, u=u)

  def update_fn(
    updates: PyTree,
    state: SAFEState,
    params: PyTree | None = None,
    *,
    grad_fn: GradFn | None = None,
    **extra_args: Any,
  ) -> tuple[PyTree, SAFEState]:
    del extra_args
    if grad_fn is None or params is None:
      raise ValueError("safe_transform.update needs `params` and `grad_fn=`.")
    count = state.count
    refresh = (count % dual_every == 0) & (count > 0)
    z, u = jax.lax.cond(
      refresh,
      lambda: dual_update(params, state.z, state.u),
      lambda: (state.z, state.u),
    )
    scale = rho / (optax.tree.norm(updates) + eps)
    point = jax.tree.map(
      lambda p, g: p + (scale * g).astype(p.dtype), params, updates
    )
    grads = grad_fn(point, 0)
    lam_t = lam_fn(count)
    grads = map_chosen(
      lambda g, p, zi, ui: g + (lam_t * (p - zi + ui)).astype(g.dtype),
      chosen_of(params),
      grads,
      params,
      z,
      u,
    )
    return grads, SAFEState(optax.safe_increment(count), z, u)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
