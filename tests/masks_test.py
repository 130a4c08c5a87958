"""Tests for csam_jax masks: init, top-k, apply, sparsity."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import csam_jax


def _params():
  return {
    "conv": {
      "kernel": jnp.arange(1.0, 25.0).reshape(2, 3, 4) - 12.5,
      "bias": jnp.ones(4),
    },
    "dense": {"kernel": jnp.arange(1.0, 7.0).reshape(3, 2), "bias": 0.1},
  }


def _random_scores(seed, shapes=((3, 3, 4, 8), (32, 10), (7, 5))):
  rng = np.random.default_rng(seed)
  return {
    f"l{i}": jnp.asarray(rng.normal(size=s), jnp.float32)
    for i, s in enumerate(shapes)
  }


def test_prunable_marks_kernels_only():
  assert csam_jax.prunable(_params()) == {
    "conv": {"kernel": True, "bias": False},
    "dense": {"kernel": True, "bias": False},
  }


def test_init_masks_none_for_unpruned_leaves():
  masks = csam_jax.init_masks(_params(), sparsity=0.5, method="ones")
  assert masks["conv"]["bias"] is None and masks["dense"]["bias"] is None
  assert masks["conv"]["kernel"].dtype == jnp.float32
  np.testing.assert_array_equal(masks["dense"]["kernel"], np.ones((3, 2)))


def test_percentile_hand_computed_layer_scope():
  w = jnp.array([[1.0, -2.0], [4.0, 8.0]])
  masks = csam_jax.init_masks({"k": w}, sparsity=0.5, scope="layer")
  # n=4, rank round(0.5*4)=2 -> P = sorted(|w|)[2] = 4.
  np.testing.assert_allclose(masks["k"], [[0.25, 0.5], [1.0, 1.0]])


def test_percentile_global_scope_and_explicit_tau():
  params = {"a": jnp.array([[1.0, 2.0]]), "b": jnp.array([[3.0, 6.0]])}
  masks = csam_jax.init_masks(params, sparsity=0.5, tau=25.0)
  # n=4, rank round(0.25*4)=1 -> P = 2 over both leaves.
  np.testing.assert_allclose(masks["a"], [[0.5, 1.0]])
  np.testing.assert_allclose(masks["b"], [[1.0, 1.0]])


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_percentile_init_puts_exactly_top_at_one(sparsity, scope):
  params = _random_scores(0, shapes=((10, 10, 10), (50, 40)))
  masks = csam_jax.init_masks(params, sparsity=sparsity, scope=scope)
  hard = csam_jax.topk_masks(params_abs(params), sparsity, scope=scope)
  for name in params:
    np.testing.assert_array_equal(
      np.asarray(masks[name] == 1.0), np.asarray(hard[name] == 1.0)
    )
    assert float(jnp.min(masks[name])) >= 0.0


def params_abs(params):
  return jax.tree.map(jnp.abs, params)


def test_hydra_and_magnitude_init():
  w = jnp.array([[1.0, -2.0], [3.0, -4.0], [0.5, 2.0]])
  hydra = csam_jax.init_masks({"k": w}, sparsity=0.5, method="hydra")["k"]
  np.testing.assert_allclose(hydra, np.sqrt(6.0 / 3.0) * np.abs(w) / 4.0)
  mag = csam_jax.init_masks({"k": w}, sparsity=0.5, method="magnitude")["k"]
  np.testing.assert_allclose(mag, np.abs(w) / 4.0)


def test_uniform_init_needs_key_and_is_deterministic():
  with pytest.raises(ValueError, match="key"):
    csam_jax.init_masks(_params(), sparsity=0.5, method="uniform")
  a = csam_jax.init_masks(
    _params(), sparsity=0.5, method="uniform", key=jax.random.key(0)
  )
  b = csam_jax.init_masks(
    _params(), sparsity=0.5, method="uniform", key=jax.random.key(0)
  )
  chex.assert_trees_all_equal(a, b)
  assert float(jnp.min(a["conv"]["kernel"])) >= 0.0
  assert float(jnp.max(a["conv"]["kernel"])) < 1.0


def test_init_masks_custom_where():
  where = {
    "conv": {"kernel": False, "bias": True},
    "dense": {"kernel": True, "bias": False},
  }
  masks = csam_jax.init_masks(_params(), sparsity=0.5, where=where)
  assert masks["conv"]["kernel"] is None
  assert masks["conv"]["bias"].shape == (4,)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(sparsity=1.0), "sparsity"),
    (dict(sparsity=-0.1), "sparsity"),
    (dict(sparsity=0.5, method="random"), "init method"),
    (dict(sparsity=0.5, scope="model"), "scope"),
    (dict(sparsity=0.5, tau=101.0), "tau"),
    (dict(sparsity=0.5, where={"conv": True}), "where"),
  ],
)
def test_init_masks_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    csam_jax.init_masks(_params(), **kwargs)


def test_topk_hand_computed_with_ties_global():
  scores = {
    "a": jnp.array([[0.5, 0.1], [0.1, 0.3]]),
    "b": None,
    "c": jnp.array([[0.1, 0.9]]),
  }
  # Flat order a(0.5, 0.1, 0.1, 0.3), c(0.1, 0.9): three 0.1 ties pruned in
  # flat-index order; sparsity 4/6 -> round(4) pruned: the ties and 0.3.
  hard = csam_jax.topk_masks(scores, 4 / 6)
  np.testing.assert_array_equal(hard["a"], [[1.0, 0.0], [0.0, 0.0]])
  np.testing.assert_array_equal(hard["c"], [[0.0, 1.0]])
  assert hard["b"] is None
  # Only two pruned: the first two of the tied 0.1 entries (lower index).
  hard = csam_jax.topk_masks(scores, 2 / 6)
  np.testing.assert_array_equal(hard["a"], [[1.0, 0.0], [0.0, 1.0]])
  np.testing.assert_array_equal(hard["c"], [[1.0, 1.0]])


def test_topk_all_equal_scores_prunes_lowest_indices():
  hard = csam_jax.topk_masks({"w": jnp.zeros((2, 5))}, 0.3)["w"]
  np.testing.assert_array_equal(hard.ravel(), [0, 0, 0] + [1] * 7)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.999])
def test_topk_exact_counts(sparsity):
  scores = _random_scores(1)
  sizes = {k: v.size for k, v in scores.items()}
  total = sum(sizes.values())
  glob = csam_jax.topk_masks(scores, sparsity, scope="global")
  zeros = sum(int(jnp.sum(m == 0)) for m in jax.tree.leaves(glob))
  assert zeros == round(sparsity * total)
  layer = csam_jax.topk_masks(scores, sparsity, scope="layer")
  for k, m in layer.items():
    assert int(jnp.sum(m == 0)) == round(sparsity * sizes[k])
  # The global top-k keeps exactly the largest scores.
  flat = np.concatenate([np.ravel(v) for v in jax.tree.leaves(scores)])
  kept = np.concatenate([np.ravel(v) for v in jax.tree.leaves(glob)]) == 1
  if 0 < kept.sum() < flat.size:
    assert flat[kept].min() >= flat[~kept].max()


def test_topk_keeps_dtype_and_runs_under_jit():
  scores = {"w": jnp.array([[3.0, 1.0], [2.0, 4.0]], jnp.bfloat16)}
  hard = jax.jit(lambda s: csam_jax.topk_masks(s, 0.5))(scores)
  assert hard["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(hard["w"], [[1, 0], [0, 1]])


def test_topk_channel_layer_and_global():
  # Kernel (in=2, out=3); channel scores are means over the input axis.
  a = jnp.array([[1.0, 5.0, 3.0], [1.0, 5.0, 1.0]])  # means 1, 5, 2
  b = jnp.array([[0.0, 4.0], [0.0, 4.0]])  # means 0, 4
  layer = csam_jax.topk_masks(
    {"a": a, "b": b}, 0.5, scope="layer", structure="channel"
  )
  # round(1.5)=2 of 3 channels pruned in a; round(1.0)=1 of 2 in b.
  np.testing.assert_array_equal(layer["a"], [[0, 1, 0], [0, 1, 0]])
  np.testing.assert_array_equal(layer["b"], [[0, 1], [0, 1]])
  glob = csam_jax.topk_masks({"a": a, "b": b}, 0.4, structure="channel")
  # 5 channels, round(2.0)=2 pruned: means 0 (b0) and 1 (a0).
  np.testing.assert_array_equal(glob["a"], [[0, 1, 1], [0, 1, 1]])
  np.testing.assert_array_equal(glob["b"], [[0, 1], [0, 1]])


def test_topk_two_of_four_hand_computed():
  # Conv kernel (h=1, w=1, in=4, out=2): groups run along the input axis.
  k = jnp.array([[[[0.1, 4.0], [0.4, 3.0], [0.3, 2.0], [0.2, 1.0]]]])
  hard = csam_jax.topk_masks({"k": k}, 0.5, structure="2:4")["k"]
  np.testing.assert_array_equal(hard[0, 0], [[0, 1], [1, 1], [1, 0], [0, 0]])


def test_topk_two_of_four_every_group():
  scores = _random_scores(2, shapes=((3, 3, 8, 5), (16, 4)))
  hard = csam_jax.topk_masks(scores, 0.5, structure="2:4")
  for name, m in hard.items():
    moved = np.moveaxis(np.asarray(m), -2, -1)
    groups = moved.reshape(*moved.shape[:-1], -1, 4)
    np.testing.assert_array_equal(groups.sum(-1), 2)
    s = np.moveaxis(np.asarray(scores[name]), -2, -1).reshape(groups.shape)
    assert (
      np.where(groups == 1, s, np.inf).min(-1)
      >= np.where(groups == 0, s, -np.inf).max(-1)
    ).all()


@pytest.mark.parametrize(
  "sparsity, kwargs, match",
  [
    (1.0, {}, "sparsity"),
    (0.5, {"scope": "net"}, "scope"),
    (0.5, {"structure": "block"}, "structure"),
    (0.5, {"structure": "4:2"}, "N <= M"),
    (0.25, {"structure": "2:4"}, "1 - N/M"),
  ],
)
def test_topk_bad_input(sparsity, kwargs, match):
  with pytest.raises(ValueError, match=match):
    csam_jax.topk_masks(_random_scores(0), sparsity, **kwargs)


def test_topk_nm_axis_not_divisible():
  with pytest.raises(ValueError, match="divisible by M=4"):
    csam_jax.topk_masks({"k": jnp.ones((6, 3))}, 0.5, structure="2:4")


def test_apply_soft_and_hard():
  params = _params()
  masks = csam_jax.init_masks(params, sparsity=0.5, method="magnitude")
  soft = csam_jax.apply_masks(params, masks)
  np.testing.assert_allclose(
    soft["dense"]["kernel"],
    params["dense"]["kernel"] * masks["dense"]["kernel"],
  )
  np.testing.assert_array_equal(soft["conv"]["bias"], params["conv"]["bias"])
  hard = csam_jax.apply_masks(params, masks, mode="hard", sparsity=0.5)
  assert csam_jax.sparsity(hard)["global"] == 0.5


def test_ste_forward_is_hard_and_gradient_is_soft():
  params = _random_scores(3)
  masks = csam_jax.init_masks(params, sparsity=0.9, method="magnitude")
  ste = csam_jax.apply_masks(params, masks, mode="ste", sparsity=0.9)
  hard = csam_jax.apply_masks(params, masks, mode="hard", sparsity=0.9)
  chex.assert_trees_all_equal(ste, hard)

  def loss(mode):
    def fn(m):
      out = csam_jax.apply_masks(params, m, mode=mode, sparsity=0.9)
      return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(out))

    return fn

  g_ste = jax.grad(loss("ste"))(masks)
  # The straight-through gradient equals the soft gradient taken at the hard
  # forward point: d/dm sum(sin(w*h)) with h treated as m -> w * cos(w*h).
  expected = jax.tree.map(
    lambda w, h: w * jnp.cos(w * h), params, csam_jax.topk_masks(masks, 0.9)
  )
  chex.assert_trees_all_close(g_ste, expected, rtol=1e-6)
  g_hard = jax.grad(loss("hard"))(masks)
  chex.assert_trees_all_equal(g_hard, jax.tree.map(jnp.zeros_like, masks))
  # Soft-mode gradient of a linear loss is w itself, as STE's is.
  lin = lambda mode: (
    lambda m: sum(
      jnp.sum(x)
      for x in jax.tree.leaves(
        csam_jax.apply_masks(params, m, mode=mode, sparsity=0.9)
      )
    )
  )
  chex.assert_trees_all_close(
    jax.grad(lin("ste"))(masks), jax.grad(lin("soft"))(masks)
  )


def test_ste_weight_gradient_is_hard_mask():
  params = _random_scores(4)
  masks = csam_jax.init_masks(params, sparsity=0.5, method="magnitude")
  grad_w = jax.grad(
    lambda p: sum(
      jnp.sum(x)
      for x in jax.tree.leaves(
        csam_jax.apply_masks(p, masks, mode="ste", sparsity=0.5)
      )
    )
  )(params)
  chex.assert_trees_all_equal(grad_w, csam_jax.topk_masks(masks, 0.5))


def test_apply_bad_input():
  params = _params()
  masks = csam_jax.init_masks(params, sparsity=0.5)
  with pytest.raises(ValueError, match="mode"):
    csam_jax.apply_masks(params, masks, mode="fuzzy")
  with pytest.raises(ValueError, match="sparsity"):
    csam_jax.apply_masks(params, masks, mode="hard")
  with pytest.raises(ValueError, match="structure of params"):
    csam_jax.apply_masks(params, {"conv": masks["conv"]})


def test_sparsity_report():
  masks = {
    "a": {"kernel": jnp.array([[0.0, 1.0], [0.0, 0.0]]), "bias": None},
    "b": {"kernel": jnp.ones((2, 2))},
  }
  report = csam_jax.sparsity(masks)
  assert report == {
    "global": 3 / 8,
    "per_leaf": {"a/kernel": 0.75, "b/kernel": 0.0},
  }
  # Masked params: biases (ndim < 2) are not counted.
  params = {"kernel": jnp.array([[0.0, 2.0]]), "bias": jnp.zeros(3)}
  assert csam_jax.sparsity(params)["global"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.93])
def test_topk_equals_numpy_stable_argsort_reference(seed, sparsity):
  rng = np.random.default_rng(seed)
  # Few distinct values (many ties), negatives, +0.0 and -0.0, extremes.
  values = np.array(
    [-3.5, -1.0, -0.0, 0.0, 0.25, 1.0, 7.0, 3e38, -3e38], np.float32
  )
  scores = {
    "a": values[rng.integers(0, 9, (17, 6))],
    "b": values[rng.integers(0, 9, (5, 4, 3))],
  }
  hard = csam_jax.topk_masks(scores, sparsity)
  flat = np.concatenate([scores["a"].ravel(), scores["b"].ravel()])
  flat = np.where(flat == 0, 0.0, flat)  # -0.0 ties with 0.0.
  k = round(sparsity * flat.size)
  expected = np.ones(flat.size)
  expected[np.argsort(flat, kind="stable")[:k]] = 0
  got = np.concatenate([np.ravel(hard["a"]), np.ravel(hard["b"])])
  np.testing.assert_array_equal(got, expected)


def test_topk_channel_on_vector_and_scalar_leaves():
  scores = {"v": jnp.array([3.0, 1.0, 2.0]), "s": jnp.array(0.5)}
  hard = csam_jax.topk_masks(scores, 0.5, structure="channel")
  # 4 "channels" (3 vector entries + the scalar), round(2.0) = 2 pruned.
  np.testing.assert_array_equal(hard["v"], [1.0, 0.0, 1.0])
  assert hard["s"].shape == () and float(hard["s"]) == 0.0
