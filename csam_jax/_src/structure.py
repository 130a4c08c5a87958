"""Structural perturbations of pruning masks.

C-SAM's claim is about flatness "with respect to model structure": the loss
of a pruned model under discrete changes of which entries are kept. Three
tools make that measurable and controllable:

* `flip_fraction`: the fraction of kept entries of one hard mask that
  another drops (what a perturbation of the scores changes in structure).
* `swap_masks`: a hard mask with a fraction of its kept entries swapped
  for pruned ones in every leaf (sparsity kept exactly), at random or
  along a direction (gradient-directed: the first-order worst case).
* `flip_targeted_radius`: a SAM radius chosen at every step so that the
  hard mask of the perturbed scores flips a target fraction of the kept
  entries (a radius in units of structure rather than of score norm), for
  ``csam_transform(rho=...)``.

With `swap_transform` (SAM whose ascent point is the swapped hard mask)
and `random_direction` (the control that replaces the ascent direction by
Gaussian noise), these are Optax-composable.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from csam_jax._src import validation
from csam_jax._src.tree_utils import PyTree

TopkFn = Callable[[PyTree], PyTree]


def flip_fraction(kept: PyTree, kept_perturbed: PyTree) -> jax.Array:
  """Fraction of the kept entries of ``kept`` that ``kept_perturbed`` drops.

  Both are hard 0/1 masks pytrees of one structure (``None`` leaves
  ignored); the fraction is over all kept entries of all leaves.

  Example:
    >>> import jax.numpy as jnp
    >>> a = {"w": jnp.array([1.0, 1.0, 0.0, 1.0]), "b": None}
    >>> b = {"w": jnp.array([1.0, 0.0, 1.0, 1.0]), "b": None}
    >>> round(float(flip_fraction(a, b)), 4)
    0.3333
  """
  pairs = zip(
    jax.tree.leaves(kept), jax.tree.leaves(kept_perturbed), strict=True
  )
  flipped = sum(jnp.sum(k * (1.0 - p)) for k, p in pairs)
  total = sum(jnp.sum(k) for k in jax.tree.leaves(kept))
  return flipped / jnp.maximum(total, 1.0)


def _ranks(values: jax.Array) -> jax.Array:
  """Rank of every entry in ascending order (0 = smallest; ties by index)."""
  order = jnp.argsort(values, stable=True)
  return (
    jnp.zeros(values.shape, jnp.int32)
    .at[order]
    .set(jnp.arange(values.size, dtype=jnp.int32))
  )


def num_swapped(kept: jax.Array, fraction: float) -> jax.Array:
  """Entries swapped in a leaf with ``kept`` entries: ``round(fraction *
  kept)`` (half to even), at most the number of pruned entries."""
  n_kept = jnp.sum(kept > 0, dtype=jnp.int32)
  n_pruned = kept.size - n_kept
  k = jnp.round(fraction * n_kept.astype(jnp.float32)).astype(jnp.int32)
  return jnp.minimum(k, n_pruned)


def _swap_leaf(mask: jax.Array, direction: jax.Array, fraction: float):
  """One leaf: drop the ``k`` kept entries of lowest direction, add the
  ``k`` pruned entries of highest direction."""
  flat_mask = mask.ravel() > 0
  d = direction.ravel().astype(jnp.float32)
  k = num_swapped(flat_mask, fraction)
  drop_rank = _ranks(jnp.where(flat_mask, d, jnp.inf))
  add_rank = _ranks(jnp.where(flat_mask, jnp.inf, -d))
  dropped = flat_mask & (drop_rank < k)
  added = ~flat_mask & (add_rank < k)
  new = (flat_mask & ~dropped) | added
  return new.reshape(mask.shape).astype(mask.dtype)


def swap_masks(
  masks: PyTree,
  fraction: float,
  *,
  direction: PyTree | None = None,
  key: jax.Array | None = None,
) -> PyTree:
  """Swaps a fraction of each leaf's kept entries for pruned ones.

  In every leaf of the hard 0/1 ``masks``, ``k = round(fraction * kept)``
  (`num_swapped`) kept entries are pruned and ``k`` pruned entries are
  kept, so every leaf keeps exactly as many entries as before. Which ones:

  * ``direction`` (a pytree like ``masks``, e.g. the loss gradient with
    respect to the mask ``dL/dm``): the kept entries of lowest direction
    are dropped and the pruned ones of highest direction are added. For
    ``direction = dL/dm`` this is the swap of largest first-order loss
    increase (dropping entry i changes the loss by about ``-dL/dm_i``,
    adding j by ``+dL/dm_j``): the adversarial swap.
  * ``key``: uniformly at random (a uniform direction drawn per leaf).

  Ties of the direction are broken by flat index (lower first).

  Args:
    masks: hard 0/1 masks (``None`` leaves stay ``None``).
    fraction: fraction of each leaf's kept entries to swap, in [0, 1].
    direction: the direction of the swap (exclusive with ``key``).
    key: PRNG key of a random swap (exclusive with ``direction``).

  Returns:
    The swapped masks, with the dtype of ``masks``.

  Raises:
    ValueError: a fraction outside [0, 1], or not exactly one of
      ``direction`` and ``key``.

  Example:
    >>> import jax.numpy as jnp
    >>> m = {"w": jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]), "b": None}
    >>> d = {"w": jnp.array([0.3, -0.2, 0.5, 0.1, 0.4, -0.9]), "b": None}
    >>> swap_masks(m, 0.25, direction=d)["w"].tolist()
    [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
  """
  fraction = validation.check_in_range("fraction", fraction, 0.0, 1.0)
  if (direction is None) == (key is None):
    raise ValueError("swap_masks needs exactly one of `direction` and `key`.")
  if key is not None:
    direction = _uniform_like(masks, key)
  return _swap_tree(masks, direction, fraction)


# Jitted whole-tree helpers: one program per tree structure instead of a
# dozen eagerly compiled ops per leaf shape (the same integer and boolean
# arithmetic, so the same swaps; inside a caller's jit they are inlined).
@jax.jit
def _uniform_like(masks: PyTree, key: jax.Array) -> PyTree:
  """One uniform draw per leaf of ``masks``, from a key split per leaf."""
  leaves, treedef = jax.tree.flatten(masks)
  keys = jax.random.split(key, max(len(leaves), 1))
  pairs = zip(keys, leaves, strict=False)  # one key even for no leaves
  draws = [jax.random.uniform(k, x.shape) for k, x in pairs]
  return jax.tree.unflatten(treedef, draws)


@jax.jit
def _swap_tree(masks: PyTree, direction: PyTree, fraction) -> PyTree:
  return jax.tree.map(lambda m, d: _swap_leaf(m, d, fraction), masks, direction)


def _unit(tree: PyTree) -> PyTree:
  norm = optax.tree.norm(tree)
  return jax.tree.map(lambda x: x / jnp.maximum(norm, 1e-12), tree)


def flip_targeted_radius(
  target: float,
  topk_fn: TopkFn,
  *,
  rho_min: float = 1e-4,
  rho_max: float = 1e3,
  num_iters: int = 20,
) -> Callable[[PyTree, PyTree], jax.Array]:
  """A radius that makes ``TopK(C + rho u)`` flip ``target`` of the kept.

  Returns ``radius(scores, direction) -> rho``: the bisection (in log
  space, ``num_iters`` halvings of ``[rho_min, rho_max]``) for the smallest
  radius whose perturbation ``C + rho * u``, ``u = direction / ||direction||``,
  drops at least ``target`` of the entries ``TopK(C)`` keeps (`flip_fraction`).
  The flip fraction is a step function of ``rho`` and need not be monotone,
  so the result is the upper end of the final bracket: within a factor
  ``(rho_max / rho_min) ** (2 ** -num_iters)`` of a radius reaching the
  target when the fraction is monotone; ``rho_max`` when no radius in the
  range reaches it. Pass it as ``csam_transform(rho=...)``.

  Args:
    target: fraction of kept entries to flip, in (0, 1).
    topk_fn: ``scores -> hard masks`` (e.g. ``functools.partial(
      csam_jax.topk_masks, sparsity=0.9)``).
    rho_min: lower end of the search (> 0).
    rho_max: upper end of the search (> rho_min).
    num_iters: bisection steps (>= 1).

  Returns:
    A function ``(scores, direction) -> rho`` (scalar float32).

  Example:
    >>> import functools, jax.numpy as jnp, csam_jax
    >>> topk = functools.partial(csam_jax.topk_masks, sparsity=0.5)
    >>> c = {"w": jnp.array([0.1, 0.2, 0.3, 0.4])}
    >>> radius = flip_targeted_radius(0.5, topk)
    >>> rho = radius(c, {"w": jnp.array([1.0, 1.0, -1.0, -1.0])})
    >>> float(flip_fraction(topk(c), topk({"w": c["w"] + rho * jnp.array(
    ...   [0.5, 0.5, -0.5, -0.5])})))
    0.5
  """
  target = validation.check_open_unit("target", target)
  validation.check_positive("rho_min", rho_min)
  if not rho_max > rho_min:
    raise ValueError(f"rho_max={rho_max} must exceed rho_min={rho_min}")
  num_iters = validation.check_int("num_iters", num_iters)

  def radius(scores: PyTree, direction: PyTree) -> jax.Array:
    scores = jax.lax.stop_gradient(scores)
    u = _unit(jax.lax.stop_gradient(direction))
    kept = topk_fn(scores)

    def flips(log_rho):
      moved = jax.tree.map(lambda c, d: c + jnp.exp(log_rho) * d, scores, u)
      return flip_fraction(kept, topk_fn(moved))

    def body(_, bounds):
      lo, hi = bounds
      mid = (lo + hi) / 2
      enough = flips(mid) >= target
      return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    bounds = (jnp.log(jnp.float32(rho_min)), jnp.log(jnp.float32(rho_max)))
    return jnp.exp(jax.lax.fori_loop(0, num_iters, body, bounds)[1])

  return radius


class RandomDirectionState(NamedTuple):
  """State of `random_direction`: the PRNG key of the next draw."""

  key: jax.Array


def random_direction(key: jax.Array) -> optax.GradientTransformation:
  """Replaces the updates by standard Gaussian noise (a new draw each step).

  The control of a sharpness-aware perturbation: in ``chain(
  random_direction(key), csam_transform(rho), ...)`` the ascent step is a
  random direction of the same radius (or, with `flip_targeted_radius`,
  of the same flip count), which separates the effect of the loss's
  sharpness from that of injecting noise. Leaves that are ``None`` stay
  ``None``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> tx = random_direction(jax.random.key(0))
    >>> u, _ = tx.update({"w": jnp.zeros(3)}, tx.init(None))
    >>> u["w"].shape, bool(jnp.all(u["w"] != 0))
    ((3,), True)
  """

  def init_fn(params: PyTree) -> RandomDirectionState:
    del params
    return RandomDirectionState(key=key)

  def update_fn(updates, state, params=None):
    del params
    key, sub = jax.random.split(state.key)
    leaves, treedef = jax.tree.flatten(updates)
    subs = jax.random.split(sub, max(len(leaves), 1))
    noise = [
      jax.random.normal(k, x.shape, jnp.float32).astype(x.dtype)
      for k, x in zip(subs, leaves, strict=False)
    ]
    return jax.tree.unflatten(treedef, noise), RandomDirectionState(key)

  return optax.GradientTransformation(init_fn, update_fn)


def swap_transform(
  fraction: float, topk_fn: TopkFn
) -> optax.GradientTransformationExtraArgs:
  """SAM whose ascent point is a swap of the hard mask (structure itself).

  ``update(grads, state, params, *, grad_fn)``: the hard mask ``m =
  topk_fn(params)`` with ``fraction`` of every leaf's kept entries swapped
  along ``grads`` (`swap_masks`: the first-order worst case when ``grads``
  is ``dL/dm``, as under the straight-through forward), then
  ``grad_fn(m_swapped, 0)`` replaces the gradients. The scores are thus
  trained with the gradient at a model whose structure differs from theirs
  by exactly ``fraction``, rather than at ``C + e`` (whose hard mask
  changes only where ``e`` crosses the threshold). ``grad_fn`` must accept
  a 0/1 mask as scores: ``topk_fn`` of it gives it back when every leaf's
  count is kept, which the swap guarantees for per-leaf and global top-k
  of unstructured masks. After `random_direction` it is a random swap.

  Args:
    fraction: swapped fraction of each leaf's kept entries, in [0, 1].
    topk_fn: ``scores -> hard masks``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (state: the step count).

  Example:
    >>> import functools, jax, jax.numpy as jnp, optax, csam_jax
    >>> topk = functools.partial(csam_jax.topk_masks, sparsity=0.5)
    >>> tx = swap_transform(0.5, topk)
    >>> c = {"w": jnp.array([0.1, 0.2, 0.3, 0.4])}
    >>> seen = []
    >>> g, _ = tx.update({"w": jnp.array([0.0, 1.0, 0.0, -1.0])},
    ...   tx.init(c), c, grad_fn=lambda m, _: seen.append(m) or m)
    >>> seen[0]["w"].tolist()
    [0.0, 1.0, 1.0, 0.0]
  """
  fraction = validation.check_in_range("fraction", fraction, 0.0, 1.0)

  def init_fn(params: PyTree) -> optax.ScaleByScheduleState:
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra):
    del extra
    if grad_fn is None or params is None:
      raise ValueError("swap_transform.update needs `params` and `grad_fn=`.")
    count = optax.safe_increment(state.count)
    if fraction == 0.0:
      return updates, optax.ScaleByScheduleState(count)
    hard = topk_fn(jax.lax.stop_gradient(params))
    swapped = swap_masks(hard, fraction, direction=updates)
    return grad_fn(swapped, 0), optax.ScaleByScheduleState(count)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
