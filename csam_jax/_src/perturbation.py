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

from csam_jax._src import tree_utils, validation
from csam_jax._src.tree_utils import PyTree, Where, drop, map_chosen

RADII = ("global", "layerwise")
GradFn = Callable[[PyTree, int], PyTree]
# A radius computed at every step from the params and the unit ascent
# direction (e.g. csam_jax.flip_targeted_radius).
RadiusFn = Callable[[PyTree, PyTree], jax.Array]


class CSAMState(NamedTuple):
  """State of ``csam_transform``.

  Attributes:
    count: number of updates taken (int32).
    grad_norm: global norm of the ascent gradients on the perturbed leaves at
      the last update (float32); handy for logging.
  """

  count: jax.Array
  grad_norm: jax.Array


def ascent_perturbation(
  grads: PyTree,
  params: PyTree,
  chosen: PyTree,
  *,
  rho: float | RadiusFn,
  radius: str,
  eps: float,
) -> tuple[PyTree, jax.Array]:
  """The SAM ascent step ``e`` (zeros on unchosen leaves) and ``||g||``.

  ``radius="global"``: ``e = rho * g / max(||g||, eps)`` with the norm over
  all chosen leaves. ``radius="layerwise"``: ``e_l = rho * ||p_l|| * g_l /
  max(||g_l||, eps)`` per chosen leaf. A callable ``rho`` (global radius
  only) is evaluated as ``rho(chosen params, g / max(||g||, eps))``.
  """
  chosen_grads = map_chosen(
    lambda g: g.astype(jnp.float32), chosen, grads, otherwise=drop
  )
  grad_norm = optax.tree.norm(chosen_grads).astype(jnp.float32)
  if callable(rho):
    unit = jax.tree.map(lambda g: g / jnp.maximum(grad_norm, eps), chosen_grads)
    rho = rho(map_chosen(lambda p: p, chosen, params, otherwise=drop), unit)

  def leaf(g, p):
    if radius == "global":
      scale = rho / jnp.maximum(grad_norm, eps)
    else:
      p_norm = optax.tree.norm(p.astype(jnp.float32))
      scale = rho * p_norm / jnp.maximum(optax.tree.norm(g), eps)
    return (scale * g).astype(p.dtype)

  e = map_chosen(
    leaf,
    chosen,
    chosen_grads,
    params,
    otherwise=lambda _, p: jnp.zeros_like(p),
  )
  return e, grad_norm


def csam_transform(
  rho: float | RadiusFn = 0.05,
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
      (and does not call ``grad_fn``). Or a function ``(params, u) ->
      radius`` evaluated at every step on the chosen leaves and the unit
      ascent direction ``u = g / ||g||`` (``radius="global"`` only), such
      as `csam_jax.flip_targeted_radius`.
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
    ValueError: negative rho, unknown radius, a callable rho with the
      layerwise radius, non-positive eps; at update:
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
  validation.check_choice("radius", radius, RADII)
  if callable(rho):
    if radius != "global":
      raise ValueError(
        f"a callable rho needs radius='global', got radius={radius!r}."
      )
  else:
    rho = validation.check_float("rho", rho)
    rho = validation.check_in_range("rho", rho, 0, math.inf, high_open=True)
  validation.check_positive("eps", eps)

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
    if not callable(rho) and rho == 0.0:
      return updates, CSAMState(count=count, grad_norm=state.grad_norm)
    chosen = tree_utils.resolve_where(where, params)
    e, grad_norm = ascent_perturbation(
      updates, params, chosen, rho=rho, radius=radius, eps=eps
    )
    perturbed = optax.tree.add(params, e)
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

  def init_fn(params: PyTree) -> optax.EmptyState:
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("project_unit_interval.update needs `params`.")
    chosen = tree_utils.resolve_where(where, params)

    def leaf(u, p):
      target = jnp.clip(p + u.astype(p.dtype), 0, 1)
      return (target - p).astype(u.dtype)

    return map_chosen(leaf, chosen, updates, params), state

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
  validation.check_in_range("momentum", momentum, 0, 1, high_open=True)
  validation.check_nonnegative("weight_decay", weight_decay)
  parts = [csam_transform(rho, where=where, radius=radius)]
  if weight_decay > 0.0:
    parts.append(optax.add_decayed_weights(weight_decay, mask=where))
  parts.append(
    optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)
  )
  parts.append(project_unit_interval(where))
  return optax.chain(*parts)
