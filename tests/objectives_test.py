"""Tests for csam_jax.objectives on hand-made probability vectors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import csam_jax
from csam_jax import objectives


def test_prediction_discrepancy_hand_computed():
  p = jnp.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
  p_t = jnp.array([[0.4, 0.5, 0.1], [0.25, 0.35, 0.4]])
  np.testing.assert_allclose(
    objectives.prediction_discrepancy(p, p_t), [0.3, 0.1], atol=1e-7
  )


def test_top2_margin_hand_computed_and_ties():
  p = jnp.array([[0.1, 0.6, 0.3], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
  np.testing.assert_allclose(objectives.top2_margin(p), [0.15, 0.0, 0.5])
  with pytest.raises(ValueError, match="2 classes"):
    objectives.top2_margin(jnp.ones((3, 1)))


def test_certification_hinge_hand_computed():
  p = jnp.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]])
  p_t = jnp.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
  # Row 0: Z=0.1, d=0.35 -> 0 (certified); with kappa=0.3 -> 0.05.
  # Row 1: Z=0.3, d=0.15 -> 0.15.
  np.testing.assert_allclose(
    objectives.certification_hinge(p, p_t), [0.0, 0.15], atol=1e-7
  )
  np.testing.assert_allclose(
    objectives.certification_hinge(p, p_t, kappa=0.3),
    [0.05, 0.45],
    atol=1e-7,
  )


def test_hinge_gradient_flows_to_both_inputs():
  p = jnp.array([0.6, 0.3, 0.1])
  p_t = jnp.array([0.2, 0.6, 0.2])
  gp, gpt = jax.grad(
    lambda a, b: objectives.certification_hinge(a, b), argnums=(0, 1)
  )(p, p_t)
  # Z = |p0 - pt0| = 0.4 > d = (p0 - p1) / 2 = 0.15, hinge 0.25.
  np.testing.assert_allclose(gp, [1.0 - 0.5, 0.5, 0.0])
  np.testing.assert_allclose(gpt, [-1.0, 0.0, 0.0])


def test_z_below_d_keeps_argmax_property():
  key = jax.random.key(0)
  k1, k2, k3 = jax.random.split(key, 3)
  p = jax.nn.softmax(3 * jax.random.normal(k1, (20000, 5)))
  noise = jax.random.normal(k2, (20000, 5)) * jax.random.uniform(
    k3, (20000, 1), maxval=2.0
  )
  p_t = jax.nn.softmax(jnp.log(p) + noise)
  z = objectives.prediction_discrepancy(p, p_t)
  d = objectives.top2_margin(p)
  certified = z < d
  assert int(certified.sum()) > 1000 and int((~certified).sum()) > 1000
  same = jnp.argmax(p, -1) == jnp.argmax(p_t, -1)
  assert bool(jnp.all(same[certified]))
  # The hinge is zero exactly where the condition holds (kappa = 0).
  hinge = objectives.certification_hinge(p, p_t)
  np.testing.assert_array_equal(np.asarray(hinge == 0), np.asarray(z <= d))


def test_mask_consistency_hand_computed():
  masks = {
    "a": jnp.array([[0.2, 0.9], [0.4, 0.6]]),
    "b": None,
    "c": jnp.array([[1.0, 0.0]]),
  }
  # Global top-k at 0.5 of 6 entries prunes 0.0, 0.2, 0.4.
  # Squared gaps: 0.04, 0.01, 0.16, 0.16, 0, 0 -> mean 0.37 / 6.
  np.testing.assert_allclose(
    objectives.mask_consistency(masks, 0.5), 0.37 / 6, rtol=1e-6
  )
  hard = csam_jax.topk_masks(masks, 0.5)
  assert float(objectives.mask_consistency(hard, 0.5)) == 0.0


def test_mask_consistency_gradient_pulls_to_hard_mask():
  masks = {"a": jnp.array([[0.2, 0.9], [0.4, 0.6]])}
  g = jax.grad(lambda m: objectives.mask_consistency(m, 0.5))(masks)["a"]
  hard = np.array([[0.0, 1.0], [0.0, 1.0]])
  np.testing.assert_allclose(g, 2 * (masks["a"] - hard) / 4, rtol=1e-6)
