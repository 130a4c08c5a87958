"""Sharpness-aware perturbation as Optax gradient transformations.

``csam_transform`` is SAM's two-pass step (Foret et al., 2021) expressed as an
``optax.GradientTransformationExtraArgs``: it replaces the incoming gradients
by the gradients at the ascent point ``params + e``. Applied to soft pruning
masks it is the mask-space SAM of C-SAM (He & Chen, 2026); applied to weights
with ``radius="global"`` it is exactly weight-space SAM.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from csam_jax._src import tree_utils
from csam_jax._src.tree_utils import PyTree, Where

RADII = ("global", "layerwise")
GradFn = Callable[[PyTree, int], PyTree]


class CSAMState(NamedTuple):
  """State of ``csam_transform``.

  Attributes:
    count: number of updates taken (int32).
    grad_norm: global norm of the ascent gradients on the perturbed leaves at
      the last update (float32); handy for logging.
  """

  count: jax.Array
  grad_norm: jax.Array


def _check_rho(rho: float) -> float:
  if isinstance(rho, bool) or not isinstance(rho, int | float):
    raise TypeError(f"`rho` must be a non-negative float, got {rho!r}.")
  if not rho >= 0.0 or math.isinf(rho):
    raise ValueError(f"`rho` must be a finite float >= 0, got {rho!r}.")
  return float(rho)


def _sq_norm(x: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(x.astype(jnp.float32)))


def _chosen(where: Where, params: PyTree) -> PyTree:
  return tree_utils.resolve_where(where, params)


def ascent_perturbation(
  grads: PyTree,
  params: PyTree,
  chosen: PyTree,
  *,
  rho: float,
  radius: str,
  eps: float,
) -> tuple[PyTree, jax.Array]:
  """The SAM ascent step ``e`` (zeros on unchosen leaves) and ``||g||``.

  ``radius="global"``: ``e = rho * g / max(||g||, eps)`` with the norm over
  all chosen leaves. ``radius="layerwise"``: ``e_l = rho * ||p_l|| * g_l /
  max(||g_l||, eps)`` per chosen leaf.
  """
  sq = jax.tree.map(
    lambda g, c: _sq_norm(g) if c else jnp.zeros((), jnp.float32),
    grads,
    chosen,
  )
  grad_norm = jnp.sqrt(sum(jax.tree.leaves(sq), jnp.zeros((), jnp.float32)))

  def leaf(g, p, c):
    if not c:
      return jnp.zeros_like(p)
    g32 = g.astype(jnp.float32)
    if radius == "global":
      scale = rho / jnp.maximum(grad_norm, eps)
    else:
      p_norm = jnp.sqrt(_sq_norm(p))
      scale = rho * p_norm / jnp.maximum(jnp.sqrt(_sq_norm(g)), eps)
    return (scale * g32).astype(p.dtype)

  return jax.tree.map(leaf, grads, params, chosen), grad_norm


def csam_transform(
  rho: float = 0.05,
  *,
  where: Where = None,
  radius: str = "global",
  eps: float = 1e-12,
  batch_axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Sharpness-aware gradients: the gradient at the ascent point.

  ``update(grads, state, params, *, grad_fn)`` computes the ascent direction
  ``e`` from ``grads`` on the leaves chosen by ``where`` (others are not
  perturbed), calls ``grad_fn(params + e, 0)`` (the calling convention of
  ``optax.contrib.sam`` in opaque mode) and returns those gradients for all
  leaves. The perturbed point itself is not clipped or projected.

  With ``where`` = all leaves and ``radius="global"`` this is weight-space
  SAM: ``chain(csam_transform(rho), sgd(lr))`` equals
  ``optax.contrib.sam(sgd(lr), chain(normalize(), sgd(rho)),
  opaque_mode=True)``. Used on soft pruning masks it is the mask-space SAM of
  C-SAM (He & Chen, 2026); ``radius="layerwise"`` is the layer-relative
  radius of S2AP (Piras et al., 2025).

  Inside ``optax.masked`` / ``optax.multi_transform``, ``grad_fn`` receives
  the group's masked tree; prefer ``where=`` to choose leaves.

  Args:
    rho: perturbation radius, >= 0. ``rho == 0`` returns ``grads`` unchanged
      (and does not call ``grad_fn``).
    where: bool pytree or callable params -> bool pytree (as in
      ``optax.masked``) choosing the perturbed leaves; default all.
    radius: ``"global"`` or ``"layerwise"``.
    eps: floor of the gradient norm; zero gradients give ``e = 0``, never NaN.
    batch_axis_name: when set, the perturbed gradients are ``pmean``-ed over
      this named axis (``shard_map``/``pmap``). Not needed under ``jax.jit``
      with sharded arrays, where the loss is already global.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.

  Raises:
    ValueError: negative rho, unknown radius, non-positive eps; at update:
      missing ``params``/``grad_fn``, a ``where`` of the wrong structure.

  Example:
    >>> import jax, jax.numpy as jnp, optax, csam_jax
    >>> loss = lambda p: jnp.sum(p["w"] ** 2)
    >>> params = {"w": jnp.array([1.0, 2.0])}
    >>> tx = optax.chain(csam_jax.csam_transform(0.1), optax.sgd(0.1))
    >>> state = tx.init(params)
    >>> grads = jax.grad(loss)(params)
    >>> updates, state = tx.update(grads, state, params,
    ...                            grad_fn=lambda p, _: jax.grad(loss)(p))
    >>> new = optax.apply_updates(params, updates)["w"]
    >>> [round(float(x), 4) for x in new]
    [0.7911, 1.5821]
  """
  rho = _check_rho(rho)
  if radius not in RADII:
    raise ValueError(f"Unknown radius {radius!r}; valid values: {RADII}.")
  if not eps > 0:
    raise ValueError(f"`eps` must be > 0, got {eps!r}.")
  if where is not None and not callable(where):
    jax.tree.structure(where)  # Fails early on non-pytrees.

  def init_fn(params: PyTree) -> CSAMState:
    del params
    return CSAMState(
      count=jnp.zeros((), jnp.int32), grad_norm=jnp.zeros((), jnp.float32)
    )

  def update_fn(
    updates: PyTree,
    state: CSAMState,
    params: PyTree | None = None,
    *,
    grad_fn: GradFn | None = None,
    **extra_args: Any,
  ) -> tuple[PyTree, CSAMState]:
    del extra_args
    if grad_fn is None:
      raise ValueError(
        "csam_transform.update needs `grad_fn=` (a function (params, i) -> "
        "grads, as in optax.contrib.sam opaque mode)."
      )
    if params is None:
      raise ValueError("csam_transform.update needs `params`.")
    count = optax.safe_increment(state.count)
    if rho == 0.0:
      return updates, CSAMState(count=count, grad_norm=state.grad_norm)
    chosen = _chosen(where, params)
    e, grad_norm = ascent_perturbation(
      updates, params, chosen, rho=rho, radius=radius, eps=eps
    )
    perturbed = jax.tree.map(lambda p, d: p + d, params, e)
    new_grads = grad_fn(perturbed, 0)
    if batch_axis_name is not None:
      new_grads = jax.lax.pmean(new_grads, axis_name=batch_axis_name)
    return new_grads, CSAMState(count=count, grad_norm=grad_norm)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def project_unit_interval(where: Where = None) -> optax.GradientTransformation:
  """Rewrites updates so that ``params + updates`` stays in [0, 1].

  On the chosen leaves the update becomes ``clip(params + updates, 0, 1) -
  params``; other leaves pass through. Put it last in a chain that trains
  soft masks.

  Args:
    where: bool pytree or callable choosing the leaves; default all.

  Returns:
    An ``optax.GradientTransformation`` (stateless).

  Example:
    >>> import jax.numpy as jnp, optax, csam_jax
    >>> tx = csam_jax.project_unit_interval()
    >>> m = {"w": jnp.array([0.2, 0.9])}
    >>> u, _ = tx.update({"w": jnp.array([-0.5, 0.5])}, tx.init(m), m)
    >>> optax.apply_updates(m, u)["w"].tolist()
    [0.0, 1.0]
  """
  if where is not None and not callable(where):
    jax.tree.structure(where)

  def init_fn(params: PyTree) -> optax.EmptyState:
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("project_unit_interval.update needs `params`.")
    chosen = _chosen(where, params)

    def leaf(u, p, c):
      if not c:
        return u
      target = jnp.clip(p + u.astype(p.dtype), 0, 1)
      return (target - p).astype(u.dtype)

    return jax.tree.map(leaf, updates, params, chosen), state

  return optax.GradientTransformation(init_fn, update_fn)


def csam(
  learning_rate: optax.ScalarOrSchedule,
  rho: float,
  *,
  momentum: float = 0.9,
  nesterov: bool = False,
  weight_decay: float = 0.0,
  where: Where = None,
  radius: str = "global",
) -> optax.GradientTransformationExtraArgs:
  """The one-line C-SAM optimizer for soft masks.

  ``chain(csam_transform(rho), [add_decayed_weights(weight_decay)],
  sgd(learning_rate, momentum, nesterov), project_unit_interval())``. The
  perturbation, the weight decay and the projection act on the leaves chosen
  by ``where``; SGD updates every leaf it is given.

  Args:
    learning_rate: float or optax schedule.
    rho: mask-perturbation radius (>= 0).
    momentum: SGD momentum in [0, 1); 0 disables it.
    nesterov: Nesterov momentum.
    weight_decay: decoupled L2 on the masks (>= 0; 0 adds nothing).
    where: the leaves perturbed and projected; default all.
    radius: ``"global"`` or ``"layerwise"``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update`` needs
    ``grad_fn``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, csam_jax
    >>> masks = {"w": jnp.array([0.5, 0.9])}
    >>> loss = lambda m: -jnp.sum(m["w"] * jnp.array([1.0, -1.0]))
    >>> tx = csam_jax.csam(learning_rate=1.0, rho=0.05)
    >>> state = tx.init(masks)
    >>> g = jax.grad(loss)(masks)
    >>> u, state = tx.update(g, state, masks,
    ...                      grad_fn=lambda m, _: jax.grad(loss)(m))
    >>> optax.apply_updates(masks, u)["w"].tolist()
    [1.0, 0.0]
  """
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}.")
  if weight_decay < 0.0:
    raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay!r}.")
  parts = [csam_transform(rho, where=where, radius=radius)]
  if weight_decay > 0.0:
    parts.append(optax.add_decayed_weights(weight_decay, mask=where))
  parts.append(
    optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)
  )
  parts.append(project_unit_interval(where))
  return optax.chain(*parts)
