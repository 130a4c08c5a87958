"""The optax battery for csam_transform, project_unit_interval and csam."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import csam_jax


def _params(dtype=jnp.float32):
  return {
    "w1": jnp.array([[0.5, -1.0], [2.0, 0.3]], dtype),
    "b1": jnp.array([0.1, -0.2], dtype),
    "w2": jnp.array([[1.5], [-0.7]], dtype),
  }


_X = jnp.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.4]])


def _loss(params, x=_X):
  h = jnp.tanh(x @ params["w1"].astype(jnp.float32) + params["b1"])
  return jnp.mean((h @ params["w2"].astype(jnp.float32) - 1.0) ** 2)


_grad = jax.grad(_loss)
_grad_fn = lambda p, _: _grad(p)


def _run(tx, params, steps, grad_fn=_grad_fn):
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(_loss)(params)
    updates, state = tx.update(grads, state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  return params, state


@pytest.mark.parametrize("momentum", [None, 0.9])
def test_equals_optax_contrib_sam_opaque(momentum):
  rho, lr = 0.05, 0.1
  ours = optax.chain(
    csam_jax.csam_transform(rho), optax.sgd(lr, momentum=momentum)
  )
  ref = optax.contrib.sam(
    optax.sgd(lr, momentum=momentum),
    optax.chain(optax.contrib.normalize(), optax.sgd(rho)),
    opaque_mode=True,
  )
  ours_params, _ = _run(ours, _params(), 5)
  ref_params, _ = _run(ref, _params(), 5)
  chex.assert_trees_all_close(ours_params, ref_params, atol=1e-6, rtol=1e-6)


def test_rho_zero_is_identity_and_skips_grad_fn():
  calls = []
  tx = csam_jax.csam_transform(0.0)
  grads = _grad(_params())
  out, _ = tx.update(
    grads, tx.init(_params()), _params(), grad_fn=lambda p, i: calls.append(i)
  )
  chex.assert_trees_all_equal(out, grads)
  assert not calls


def _perturbation(tx, params, grads):
  seen = {}

  def grad_fn(p, i):
    seen["p"], seen["i"] = p, i
    return grads

  tx.update(grads, tx.init(params), params, grad_fn=grad_fn)
  assert seen["i"] == 0
  return jax.tree.map(lambda a, b: a - b, seen["p"], params)


def test_global_perturbation_norm_is_rho():
  params = _params()
  grads = _grad(params)
  e = _perturbation(csam_jax.csam_transform(0.3), params, grads)
  assert float(optax.tree.norm(e)) == pytest.approx(0.3, rel=1e-5)
  g_norm = optax.tree.norm(grads)
  chex.assert_trees_all_close(
    e, jax.tree.map(lambda g: 0.3 * g / g_norm, grads), atol=1e-6
  )


def test_layerwise_perturbation_norms_are_exact():
  params = _params()
  grads = _grad(params)
  e = _perturbation(
    csam_jax.csam_transform(0.2, radius="layerwise"), params, grads
  )
  for name in params:
    expected = 0.2 * float(jnp.linalg.norm(params[name]))
    assert float(jnp.linalg.norm(e[name])) == pytest.approx(expected, 1e-5)
    cos = jnp.vdot(e[name], grads[name]) / (
      jnp.linalg.norm(e[name]) * jnp.linalg.norm(grads[name])
    )
    assert float(cos) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("as_callable", [False, True])
def test_only_where_leaves_are_perturbed(as_callable):
  params = _params()
  grads = _grad(params)
  where = {"w1": True, "b1": False, "w2": False}
  if as_callable:
    where = csam_jax.prunable  # w1 and w2 are kernels.
  e = _perturbation(csam_jax.csam_transform(0.1, where=where), params, grads)
  assert float(jnp.abs(e["b1"]).max()) == 0.0
  chosen = ["w1", "w2"] if as_callable else ["w1"]
  norm = jnp.sqrt(sum(jnp.sum(grads[k] ** 2) for k in chosen))
  for k in chosen:
    np.testing.assert_allclose(e[k], 0.1 * grads[k] / norm, atol=1e-6)
  if not as_callable:
    assert float(jnp.abs(e["w2"]).max()) == 0.0


def test_masks_pytree_with_none_leaves():
  params = _params()
  masks = csam_jax.init_masks(params, sparsity=0.5, method="magnitude")
  assert masks["b1"] is None

  def loss(m):
    return _loss(csam_jax.apply_masks(params, m))

  tx = csam_jax.csam(learning_rate=0.5, rho=0.05)
  state = tx.init(masks)
  grads = jax.grad(loss)(masks)
  updates, state = jax.jit(
    lambda g, s, m: tx.update(g, s, m, grad_fn=lambda mm, _: jax.grad(loss)(mm))
  )(grads, state, masks)
  new = optax.apply_updates(masks, updates)
  assert new["b1"] is None
  for leaf in jax.tree.leaves(new):
    assert float(leaf.min()) >= 0.0 and float(leaf.max()) <= 1.0


@pytest.mark.parametrize("radius", ["global", "layerwise"])
def test_zero_gradients_are_finite(radius):
  params = _params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = csam_jax.csam_transform(0.05, radius=radius)
  out, state = tx.update(
    zeros, tx.init(params), params, grad_fn=lambda p, _: zeros
  )
  for leaf in jax.tree.leaves((out, state)):
    assert bool(jnp.all(jnp.isfinite(leaf)))
  e = _perturbation(tx, params, zeros)
  chex.assert_trees_all_equal(e, zeros)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_preserved(dtype):
  params = _params(dtype)
  grad_fn = lambda p, _: jax.tree.map(
    lambda g, q: g.astype(q.dtype), _grad(p), p
  )
  tx = optax.chain(csam_jax.csam_transform(0.05), optax.sgd(0.1))
  new, _ = _run(tx, params, 2, grad_fn=grad_fn)
  for leaf in jax.tree.leaves(new):
    assert leaf.dtype == dtype
  e = _perturbation(csam_jax.csam_transform(0.05), params, grad_fn(params, 0))
  for leaf in jax.tree.leaves(e):
    assert leaf.dtype == dtype


def test_compiles_once_and_state_is_stable():
  tx = optax.chain(csam_jax.csam_transform(0.05), optax.sgd(0.1, 0.9))
  params = _params()
  state = tx.init(params)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, state):
    grads = _grad(params)
    updates, state = tx.update(grads, state, params, grad_fn=_grad_fn)
    return optax.apply_updates(params, updates), state

  init_shapes = jax.tree.map(lambda x: (x.shape, x.dtype), state)
  for _ in range(4):
    params, state = step(params, state)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), state) == init_shapes
  assert int(state[0].count) == 4


def test_inside_chain_with_clipping():
  params = _params()
  tx = optax.chain(
    optax.clip_by_global_norm(1e-3),
    csam_jax.csam_transform(0.05),
    optax.sgd(0.1),
  )
  new, _ = _run(tx, params, 3)
  # After clipping, the perturbation direction is unchanged (same direction
  # as the raw gradient), so the result equals the unclipped chain.
  ref, _ = _run(
    optax.chain(csam_jax.csam_transform(0.05), optax.sgd(0.1)), params, 3
  )
  chex.assert_trees_all_close(new, ref, atol=1e-6)


def test_inside_multisteps():
  params = _params()
  inner = optax.chain(csam_jax.csam_transform(0.05), optax.sgd(0.1))
  tx = optax.MultiSteps(inner, every_k_schedule=2)
  new, _ = _run(tx, params, 4)
  # With the same gradient on both micro-steps, two MultiSteps calls with
  # k=2 equal one inner step.
  ref, _ = _run(inner, params, 2)
  chex.assert_trees_all_close(new, ref, atol=1e-6)


def test_inside_multi_transform():
  params = _params()
  labels = {"w1": "sam", "b1": "frozen", "w2": "sam"}
  tx = optax.multi_transform(
    {
      "sam": optax.chain(csam_jax.csam_transform(0.05), optax.sgd(0.1)),
      "frozen": optax.set_to_zero(),
    },
    labels,
  )

  def group_grad_fn(masked_params, _):
    # The group sees its own leaves only (others are optax MaskedNode):
    # fill them from the outer params and mask the gradients back.
    full = jax.tree.map(
      lambda m, p: p if isinstance(m, optax.MaskedNode) else m,
      masked_params,
      params,
      is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )
    g = _grad(full)
    return jax.tree.map(
      lambda m, gg: m if isinstance(m, optax.MaskedNode) else gg,
      masked_params,
      g,
      is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )

  state = tx.init(params)
  updates, _ = tx.update(_grad(params), state, params, grad_fn=group_grad_fn)
  np.testing.assert_array_equal(updates["b1"], 0.0)
  ref_tx = optax.chain(
    csam_jax.csam_transform(0.05, where={"w1": True, "b1": False, "w2": True}),
    optax.sgd(0.1),
  )
  ref, _ = ref_tx.update(
    _grad(params), ref_tx.init(params), params, grad_fn=_grad_fn
  )
  chex.assert_trees_all_close(updates["w1"], ref["w1"], atol=1e-6)
  chex.assert_trees_all_close(updates["w2"], ref["w2"], atol=1e-6)


def test_batch_axis_name_pmeans_perturbed_grads():
  params = _params()
  xs = jnp.array([[[1.0, 2.0], [-1.0, 0.5]], [[0.3, -0.4], [2.0, 1.0]]])
  tx = csam_jax.csam_transform(0.05, batch_axis_name="batch")

  def per_shard(x):
    grad_fn = lambda p, _: jax.grad(_loss)(p, x)
    g = jax.lax.pmean(grad_fn(params, 0), "batch")
    out, _ = tx.update(g, tx.init(params), params, grad_fn=grad_fn)
    return out

  out = jax.vmap(per_shard, axis_name="batch")(xs)
  full = lambda p: jnp.mean(jax.vmap(lambda x: _loss(p, x))(xs))
  g = jax.grad(full)(params)
  e = jax.tree.map(lambda v: 0.05 * v / optax.tree.norm(g), g)
  perturbed = jax.tree.map(jnp.add, params, e)
  expected = jax.grad(full)(perturbed)
  for name in params:
    for shard in range(2):
      np.testing.assert_allclose(out[name][shard], expected[name], atol=1e-6)


def test_converges_on_quadratic():
  target = jnp.array([1.0, -2.0, 3.0])
  loss = lambda p: jnp.sum((p["x"] - target) ** 2)
  tx = optax.chain(csam_jax.csam_transform(0.01), optax.sgd(0.1))
  params = {"x": jnp.zeros(3)}
  state = tx.init(params)
  for _ in range(100):
    g = jax.grad(loss)(params)
    u, state = tx.update(
      g, state, params, grad_fn=lambda p, _: jax.grad(loss)(p)
    )
    params = optax.apply_updates(params, u)
  # SAM on a quadratic converges to the minimum, offset by at most rho.
  assert float(jnp.linalg.norm(params["x"] - target)) < 0.011


def test_project_unit_interval_keeps_params_in_range():
  rng = np.random.default_rng(0)
  params = {
    "m": jnp.asarray(rng.uniform(size=1000), jnp.float32),
    "other": jnp.asarray(rng.normal(size=5), jnp.float32),
  }
  updates = {
    "m": jnp.asarray(rng.normal(scale=2.0, size=1000), jnp.float32),
    "other": jnp.full(5, 10.0),
  }
  tx = csam_jax.project_unit_interval(where={"m": True, "other": False})
  u, _ = tx.update(updates, tx.init(params), params)
  new = optax.apply_updates(params, u)
  assert float(new["m"].min()) >= 0.0 and float(new["m"].max()) <= 1.0
  np.testing.assert_allclose(
    new["m"], np.clip(params["m"] + updates["m"], 0, 1), atol=1e-6
  )
  chex.assert_trees_all_equal(u["other"], updates["other"])


def test_csam_is_the_documented_chain():
  masks = {"m": jnp.array([0.2, 0.5, 0.9]), "n": jnp.array([[0.4, 0.7]])}
  loss = lambda m: jnp.sum(jnp.sin(3 * m["m"])) + jnp.sum(m["n"] ** 3)
  grad_fn = lambda m, _: jax.grad(loss)(m)
  ours = csam_jax.csam(0.3, 0.1, momentum=0.9, weight_decay=1e-2)
  ref = optax.chain(
    csam_jax.csam_transform(0.1),
    optax.add_decayed_weights(1e-2),
    optax.sgd(0.3, momentum=0.9),
    csam_jax.project_unit_interval(),
  )
  a, b = masks, masks
  sa, sb = ours.init(a), ref.init(b)
  for _ in range(3):
    ua, sa = ours.update(jax.grad(loss)(a), sa, a, grad_fn=grad_fn)
    ub, sb = ref.update(jax.grad(loss)(b), sb, b, grad_fn=grad_fn)
    a, b = optax.apply_updates(a, ua), optax.apply_updates(b, ub)
  chex.assert_trees_all_close(a, b)


@pytest.mark.parametrize(
  "factory, match",
  [
    (lambda: csam_jax.csam_transform(-0.1), "rho"),
    (lambda: csam_jax.csam_transform(0.1, radius="local"), "radius"),
    (lambda: csam_jax.csam_transform(0.1, eps=0.0), "eps"),
    (lambda: csam_jax.csam(0.1, -1.0), "rho"),
    (lambda: csam_jax.csam(0.1, 0.1, momentum=1.5), "momentum"),
  ],
)
def test_bad_hyperparameters(factory, match):
  with pytest.raises(ValueError, match=match):
    factory()


def test_update_without_grad_fn_or_with_bad_where():
  params = _params()
  tx = csam_jax.csam_transform(0.1)
  with pytest.raises(ValueError, match="grad_fn"):
    tx.update(_grad(params), tx.init(params), params)
  tx = csam_jax.csam_transform(0.1, where={"w1": True})
  with pytest.raises(ValueError, match="where"):
    tx.update(_grad(params), tx.init(params), params, grad_fn=_grad_fn)
