"""Structural perturbations: swaps, flip fractions, flip-targeted radius."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import csam_jax


def _masks(seed: int, sparsity: float = 0.8):
  """Two leaves of hard masks (global top-k of random scores) and a None."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  scores = {
    "a": jax.random.normal(k1, (20, 30)),
    "b": jax.random.normal(k2, (3, 3, 8, 16)),
    "bias": None,
  }
  return scores, csam_jax.topk_masks(scores, sparsity)


def test_flip_fraction_hand_case():
  a = {"x": jnp.array([1.0, 1.0, 0.0, 1.0]), "y": jnp.array([1.0, 0.0])}
  b = {"x": jnp.array([0.0, 1.0, 1.0, 1.0]), "y": jnp.array([0.0, 1.0])}
  # Kept: 3 + 1; dropped by b: x[0] and y[0].
  assert float(csam_jax.flip_fraction(a, b)) == 0.5
  assert float(csam_jax.flip_fraction(a, a)) == 0.0


@pytest.mark.parametrize("fraction", [0.005, 0.01, 0.02, 0.05, 0.1, 0.5])
def test_random_swap_keeps_counts_and_swaps_exact_number(fraction):
  _, masks = _masks(0)
  swapped = csam_jax.swap_masks(masks, fraction, key=jax.random.key(3))
  assert swapped["bias"] is None
  for name in ("a", "b"):
    old = np.asarray(masks[name]) > 0
    new = np.asarray(swapped[name]) > 0
    assert set(np.unique(np.asarray(swapped[name]))) <= {0.0, 1.0}
    assert new.sum() == old.sum()  # sparsity kept exactly, per leaf
    expected = min(round(fraction * old.sum()), old.size - old.sum())
    assert (old & ~new).sum() == expected  # kept entries dropped
    assert (~old & new).sum() == expected  # pruned entries added


def test_random_swap_depends_on_key_only():
  _, masks = _masks(1)
  one = csam_jax.swap_masks(masks, 0.1, key=jax.random.key(0))
  same = csam_jax.swap_masks(masks, 0.1, key=jax.random.key(0))
  other = csam_jax.swap_masks(masks, 0.1, key=jax.random.key(1))
  assert np.array_equal(one["a"], same["a"])
  assert not np.array_equal(one["a"], other["a"])


def test_directed_swap_hand_case():
  m = {"w": jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])}
  d = {"w": jnp.array([0.3, -0.2, -0.5, 0.1, 0.4, -0.9, 0.7, 0.0])}
  # fraction 0.5 of 4 kept = 2: drop the two lowest kept (-0.5, -0.2),
  # add the two highest pruned (0.7, 0.4).
  out = csam_jax.swap_masks(m, 0.5, direction=d)["w"].tolist()
  assert out == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def test_directed_swap_ties_by_index_and_cap():
  m = {"w": jnp.array([1.0, 1.0, 1.0, 0.0])}
  d = {"w": jnp.zeros(4)}
  # round(2/3 * 3) = 2 kept to drop, capped at the one pruned entry; the
  # tie is broken by index: entry 0 is dropped.
  out = csam_jax.swap_masks(m, 2 / 3, direction=d)["w"].tolist()
  assert out == [0.0, 1.0, 1.0, 1.0]


def test_zero_fraction_is_identity_and_bad_arguments_raise():
  _, masks = _masks(2)
  same = csam_jax.swap_masks(masks, 0.0, key=jax.random.key(0))
  assert np.array_equal(same["b"], masks["b"])
  with pytest.raises(ValueError, match="exactly one"):
    csam_jax.swap_masks(masks, 0.1)
  with pytest.raises(ValueError, match="fraction"):
    csam_jax.swap_masks(masks, 1.5, key=jax.random.key(0))


def test_directed_swap_is_the_first_order_worst_case():
  """Among all swaps of the same size, the directed one maximises the
  first-order change sum(d * (m' - m)) (checked against random swaps)."""
  _, masks = _masks(4)
  d = jax.tree.map(
    lambda m: jax.random.normal(jax.random.key(9), m.shape), masks
  )

  def gain(new):
    return sum(float(jnp.sum(d[k] * (new[k] - masks[k]))) for k in ("a", "b"))

  best = gain(csam_jax.swap_masks(masks, 0.05, direction=d))
  for seed in range(5):
    rand = csam_jax.swap_masks(masks, 0.05, key=jax.random.key(seed))
    assert gain(rand) < best


@pytest.mark.parametrize("target", [0.003, 0.1])
def test_flip_targeted_radius_reaches_target(target):
  scores, _ = _masks(5)
  scores = {k: v for k, v in scores.items() if v is not None}
  topk = functools.partial(csam_jax.topk_masks, sparsity=0.8)
  key = jax.random.key(6)
  direction = jax.tree.map(lambda s: jax.random.normal(key, s.shape), scores)
  radius = csam_jax.flip_targeted_radius(target, topk, num_iters=30)
  rho = float(jax.jit(radius)(scores, direction))
  norm = float(optax.tree.norm(direction))
  unit = jax.tree.map(lambda d: d / norm, direction)

  @jax.jit
  def flip_at(r):
    moved = jax.tree.map(lambda c, u: c + r * u, scores, unit)
    return csam_jax.flip_fraction(topk(scores), topk(moved))

  flips = lambda r: float(flip_at(r))

  kept = sum(int(m.sum()) for m in jax.tree.leaves(topk(scores)))
  # The smallest radius reaching the target, to the bracket's precision
  # (the crossing itself is a tie of two scores: compiled and eager
  # arithmetic may round it either way).
  assert flips(rho * (1 + 1e-4)) >= target
  assert flips(rho * (1 - 1e-4)) < target
  assert flips(rho * (1 + 1e-4)) * kept <= np.ceil(target * kept) + 1


def test_flip_targeted_radius_in_csam_transform_equals_that_float_rho():
  topk = functools.partial(csam_jax.topk_masks, sparsity=0.5)
  masks = {"w": jnp.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.7])}
  grads = {"w": jnp.array([1.0, -1.0, 2.0, -2.0, 0.5, 0.0])}
  radius = csam_jax.flip_targeted_radius(0.3, topk)
  rho = float(radius(masks, grads))
  seen = []

  def grad_fn(m, _):
    seen.append(m)
    return m

  tx = csam_jax.csam_transform(radius)
  tx.update(grads, tx.init(masks), masks, grad_fn=grad_fn)
  fixed = csam_jax.csam_transform(rho)
  fixed.update(grads, fixed.init(masks), masks, grad_fn=grad_fn)
  np.testing.assert_allclose(seen[0]["w"], seen[1]["w"], rtol=1e-6)
  with pytest.raises(ValueError, match="callable rho"):
    csam_jax.csam_transform(radius, radius="layerwise")


def test_random_direction_draws_fresh_noise_each_step():
  tx = csam_jax.random_direction(jax.random.key(0))
  state = tx.init(None)
  zeros = {"w": jnp.zeros((50,)), "m": None}
  u1, state = tx.update(zeros, state)
  u2, _ = tx.update(zeros, state)
  assert u1["m"] is None
  assert not np.array_equal(u1["w"], u2["w"])
  assert abs(float(jnp.std(u1["w"])) - 1.0) < 0.3


def test_swap_transform_evaluates_the_swapped_hard_mask():
  topk = functools.partial(csam_jax.topk_masks, sparsity=0.5)
  scores = {"w": jnp.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4])}
  grads = {"w": jnp.array([-1.0, 0.0, 0.5, 2.0, 0.1, -3.0, 0.2, 1.0])}
  seen = []

  def grad_fn(m, _):
    seen.append(m)
    return jax.tree.map(lambda x: 10 * x, m)

  tx = csam_jax.swap_transform(0.5, topk)
  out, state = tx.update(grads, tx.init(scores), scores, grad_fn=grad_fn)
  # Kept: 0, 2, 4, 6; drop the two of lowest gradient (0: -1.0, 4: 0.1),
  # add the two pruned of highest (3: 2.0, 7: 1.0).
  assert seen[0]["w"].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
  assert out["w"].tolist() == [0, 0, 10, 10, 0, 0, 10, 10]
  assert int(state.count) == 1
  # The swapped 0/1 mask is its own top-k: the forward sees exactly it.
  assert np.array_equal(topk(seen[0])["w"], seen[0]["w"])


def test_random_swap_transform_chain():
  topk = functools.partial(csam_jax.topk_masks, sparsity=0.8)
  scores, _ = _masks(7)
  scores = {k: v for k, v in scores.items() if v is not None}
  tx = optax.chain(
    csam_jax.random_direction(jax.random.key(1)),
    csam_jax.swap_transform(0.1, topk),
  )
  seen = []
  grads = jax.tree.map(jnp.ones_like, scores)
  tx.update(
    grads, tx.init(scores), scores, grad_fn=lambda m, _: seen.append(m) or m
  )
  hard = topk(scores)
  for k in ("a", "b"):
    assert int(seen[0][k].sum()) == int(hard[k].sum())
  flipped = float(csam_jax.flip_fraction(hard, seen[0]))
  kept = [int(hard[k].sum()) for k in ("a", "b")]
  expected = sum(round(0.1 * n) for n in kept) / sum(kept)
  assert flipped == pytest.approx(expected, abs=1e-7)
