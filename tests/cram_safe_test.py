"""Exact tests of CrAM / CrAM+ and SAFE (csam_jax.cram_transform,
csam_jax.safe_transform, experiments/training/compression.py): the references'
masks and ties, the updates, BatchNorm handling and re-tuning."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import csam_jax
from experiments import config_validation, keys, models
from experiments.configs import default, smoke
from experiments.study import variants
from experiments.training import compression, losses, methods, stages
from experiments.training import state as state_lib

NUM_CLASSES = 3


def _setup(seed: int = 0):
  module = models.get_model("tiny_cnn", num_classes=NUM_CLASSES)
  model = state_lib.Model(module, (0.5,), (0.25,))
  state = state_lib.init_train_state(model, jax.random.PRNGKey(seed), (8, 8, 1))
  batches = []
  for i in range(3):
    kx, ky = jax.random.split(jax.random.PRNGKey(seed + 1 + i))
    batches.append(
      {
        "image": jax.random.uniform(kx, (8, 8, 8, 1)),
        "label": jax.random.randint(ky, (8,), 0, NUM_CLASSES),
      }
    )
  return model, state, batches


def _build(config, method, index, model, num_steps):
  spec = methods.get_recipe(method)[index]
  for i, section in enumerate(spec.epochs):
    config[section].num_steps = num_steps if i == 0 else 0
    config[section].epochs = 0.0
  return stages.build(config, spec, model, steps_per_epoch=num_steps)


def _reference_masks(point, sparsity, ties="prune"):
  """CrAM's rule in NumPy: keep |v| > the ceil(N (1 - s))-th largest;
  SAFE's (ties="keep"): keep |v| >= sorted(|v|)[floor(s N)]."""
  keep = csam_jax.prunable(point)
  leaves = [
    np.abs(np.asarray(v))
    for v, k in zip(jax.tree.leaves(point), jax.tree.leaves(keep), strict=True)
    if k
  ]
  flat = np.concatenate([x.ravel() for x in leaves])
  if ties == "keep":
    threshold = np.sort(flat)[int(sparsity * flat.size)]
    masks = iter([(x >= threshold).astype(np.float32) for x in leaves])
  else:
    k = math.ceil(flat.size * (1 - sparsity))
    threshold = np.sort(flat)[::-1][k - 1]
    masks = iter([(x > threshold).astype(np.float32) for x in leaves])
  return jax.tree.map(lambda v, k: next(masks) if k else None, point, keep)


def _assert_close(a, b, rtol=1e-5, atol=1e-6):
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b
  )


# --- masks ------------------------------------------------------------------


@pytest.mark.parametrize(
  "scores, sparsity, ties, expected",
  [
    # N = 4, s = 0.5: k = 2 kept by count; the 2nd largest (3) is tied, so
    # CrAM keeps only |x| > 3 (one entry) and SAFE keeps sorted[2] = 3 and
    # above (three entries).
    ([5.0, 3.0, 3.0, 0.0], 0.5, "prune", [1, 0, 0, 0]),
    ([5.0, 3.0, 3.0, 0.0], 0.5, "keep", [1, 1, 1, 0]),
    # No ties: CrAM keeps k - 1 = 1 of N = 3 at s = 0.5 (k = ceil(1.5) = 2);
    # SAFE prunes floor(1.5) = 1.
    ([1.0, 2.0, 4.0], 0.5, "prune", [0, 0, 1]),
    ([1.0, 2.0, 4.0], 0.5, "keep", [0, 1, 1]),
    # s = 0 keeps everything, also the tied minimum.
    ([1.0, 1.0, 4.0], 0.0, "prune", [1, 1, 1]),
    ([1.0, 1.0, 4.0], 0.0, "keep", [1, 1, 1]),
    # s = 0.1 of N = 3: CrAM k = ceil(2.7) = 3, the threshold is the minimum
    # and the two tied minima are pruned.
    ([1.0, 1.0, 4.0], 0.1, "prune", [0, 0, 1]),
    ([1.0, 1.0, 4.0], 0.1, "keep", [1, 1, 1]),
  ],
)
def test_threshold_masks_tie_rules(scores, sparsity, ties, expected):
  masks = csam_jax.threshold_masks(
    {"w": jnp.array(scores), "none": None}, sparsity, ties=ties
  )
  assert masks["w"].tolist() == expected
  assert masks["none"] is None


def test_threshold_masks_are_global_over_leaves():
  scores = {"a": jnp.array([[0.2, 0.9], [0.4, 0.4]]), "b": jnp.array([0.4])}
  # N = 5, s = 0.4: k = 3; sorted descending 0.9, 0.4, 0.4, 0.4, 0.2.
  masks = csam_jax.threshold_masks(scores, 0.4, ties="prune")
  assert masks["a"].tolist() == [[0, 1], [0, 0]] and masks["b"].tolist() == [0]
  masks = csam_jax.threshold_masks(scores, 0.4, ties="keep")
  assert masks["a"].tolist() == [[0, 1], [1, 1]] and masks["b"].tolist() == [1]


def test_threshold_rank_is_computed_in_float64_as_the_references():
  # k = ceil(N (1 - s)) kept by count (rank N - k); floor(s N) (SAFE).
  assert csam_jax.threshold_rank(10, 0.3, "prune") == 3
  assert csam_jax.threshold_rank(270_896, 0.9, "prune") == 270_896 - 27_090
  assert csam_jax.threshold_rank(1_081_440, 0.95, "keep") == 1_027_368
  with pytest.raises(ValueError):
    csam_jax.threshold_rank(10, 1.0, "keep")
  with pytest.raises(ValueError):
    csam_jax.threshold_rank(10, 0.5, "sometimes")


def test_traced_rank_gives_the_host_masks():
  scores = {"w": jax.random.uniform(jax.random.PRNGKey(0), (7, 5))}
  for s in (0.0, 0.3, 0.9):
    rank = csam_jax.threshold_rank(35, s, "prune")
    traced = jax.jit(
      lambda sc, r: csam_jax.threshold_masks_at(sc, r, ties="prune")
    )(scores, rank)
    _assert_close(traced, csam_jax.threshold_masks(scores, s, ties="prune"))


# --- the transformation -----------------------------------------------------


def _quadratic(p):
  return 0.5 * sum(jnp.sum((x - 1.0) ** 2) for x in jax.tree.leaves(p))


def _compress_half(point, key):
  del key
  scores = {"k": jnp.abs(point["k"]), "b": None}
  return csam_jax.threshold_masks(scores, 0.5, ties="prune")


# w_k = [[3, 2], [2, 0.5]], w_b = [2]: g0 = w - 1 = [[2, 1], [1, -0.5]], [1].
# rho = 1: v = w + g0 = [[5, 3], [3, 0]], [3]; N = 4, s = 0.5, k = 2: the
# 2nd largest is the tied 3, so M = [[1, 0], [0, 0]] (ties pruned). The
# gradient at M * v = [[5, 0], [0, 0]], [3] is [[4, -1], [-1, -1]], [2].
_W = {"k": jnp.array([[3.0, 2.0], [2.0, 0.5]]), "b": jnp.array([2.0])}
_CASES = {
  "cram": (dict(), {"k": [[4, 0], [0, 0]], "b": [2]}),
  "cram_dense_grad": (
    dict(sparse_grad=False),
    {"k": [[4, -1], [-1, -1]], "b": [2]},
  ),
  "cram_plus": (dict(plus=True), {"k": [[6, 1], [1, -0.5]], "b": [3]}),
}


@pytest.mark.parametrize("case", sorted(_CASES))
@pytest.mark.parametrize("normalize", [False, True])
def test_cram_transform_hand_computed(case, normalize):
  kwargs, expected = _CASES[case]
  # ||g0|| = sqrt(7.25): the normalised step with rho = ||g0|| is the same.
  rho = math.sqrt(7.25) if normalize else 1.0
  tx = csam_jax.cram_transform(
    rho, _compress_half, normalize=normalize, **kwargs
  )
  g0 = jax.grad(_quadratic)(_W)
  calls = []

  def grad_fn(p, i):
    calls.append((p, i))
    return jax.grad(_quadratic)(p)

  out, state = tx.update(g0, tx.init(_W), _W, grad_fn=grad_fn)
  _assert_close(
    out, {k: jnp.array(v, jnp.float32) for k, v in expected.items()}
  )
  ((point, index),) = calls
  _assert_close(
    point, {"k": jnp.array([[5.0, 0], [0, 0]]), "b": jnp.array([3.0])}
  )
  assert index == 0 and int(state.count) == 1


def test_cram_transform_under_jit_keys_by_count():
  seen = []

  def compress(point, key):
    seen.append(key)
    return {"k": jnp.ones_like(point["k"]), "b": None}

  key = jax.random.PRNGKey(7)
  tx = csam_jax.cram_transform(0.1, compress, key=key)
  state = tx.init(_W)
  update = jax.jit(
    lambda g, s: tx.update(
      g, s, _W, grad_fn=lambda p, _: jax.grad(_quadratic)(p)
    )
  )
  g0 = jax.grad(_quadratic)(_W)
  _, state = update(g0, state)
  assert int(state.count) == 1
  np.testing.assert_array_equal(state.key, key)
  with pytest.raises(ValueError, match="grad_fn"):
    tx.update(g0, state, _W)
  with pytest.raises(ValueError):
    csam_jax.cram_transform(-0.1, compress)


def test_random_sparsity_masks_draw_uniformly_from_the_list():
  sparsities = (0.3, 0.5, 0.9)
  compress = compression.random_sparsity_masks(sparsities)
  point = {"k": jax.random.normal(jax.random.PRNGKey(0), (10, 10)), "b": None}
  drawn = []
  for i in range(12):
    key = jax.random.fold_in(jax.random.PRNGKey(1), i)
    index = int(jax.random.randint(key, (), 0, len(sparsities)))
    drawn.append(index)
    masks = jax.jit(compress)(point, key)
    _assert_close(masks, _reference_masks(point, sparsities[index]))
  # Keep |x| > the k-th largest: k - 1 of N = 100 kept without ties.
  assert set(drawn) == {0, 1, 2}


# --- the harness stages -----------------------------------------------------


def _cram_config(lr=0.05, momentum=0.9, wd=5e-4):
  config = smoke.get_config()
  config.sparsity = 0.75
  config.cram.rho = 0.2
  config.cram.sparsities = (0.3, 0.5, 0.7, 0.9)
  config.cram.optimizer.update(
    dict(
      learning_rate=lr,
      momentum=momentum,
      weight_decay=wd,
      schedule="constant",
      warmup_epochs=0.0,
    )
  )
  return config


def _masked_tree(tree, masks):
  return jax.tree.map(
    lambda x, m: x if m is None else x * m,
    tree,
    masks,
    is_leaf=lambda x: x is None,
  )


@pytest.mark.parametrize("method", ["cram", "cram_plus", "cram_plus_k"])
def test_compression_step_is_exact_and_keeps_clean_batch_stats(method):
  model, state, batches = _setup()
  config = _cram_config()
  # CrAM+-k: the method cram with config.cram.plus (variant cram_plus_k).
  config.cram.plus = method == "cram_plus_k"
  algo = "cram" if method == "cram_plus_k" else method
  stage = _build(config, algo, 1, model, 5)
  stage_key = jax.random.PRNGKey(3)
  current = stage.begin(state, stage_key)
  sparsity_key = jax.random.fold_in(stage_key, keys.SPARSITY_PURPOSE)
  w, stats = state.params, state.batch_stats
  buf = jax.tree.map(jnp.zeros_like, w)
  step = jax.jit(stage.step)
  for t, batch in enumerate(batches[:2]):  # two steps: the momentum too
    current, metrics = step(current, batch)

    def loss(p, batch=batch, stats=stats):
      return losses.weight_loss(p, model, None, stats, batch)[0]

    g0 = jax.grad(loss)(w)
    point = jax.tree.map(lambda x, g: x + 0.2 * g, w, g0)  # not normalised
    if method == "cram_plus":
      key = jax.random.fold_in(sparsity_key, t)
      sparsity = config.cram.sparsities[int(jax.random.randint(key, (), 0, 4))]
    else:
      sparsity = config.sparsity
    masks = _reference_masks(point, sparsity)
    compressed = _masked_tree(point, masks)
    g1 = _masked_tree(jax.grad(loss)(compressed), masks)
    g = jax.tree.map(jnp.add, g0, g1) if method != "cram" else g1
    # torch SGD: d = g + wd w, buf = mu buf + d, w -= lr buf.
    d = jax.tree.map(lambda gi, wi: gi + 5e-4 * wi, g, w)
    buf = jax.tree.map(lambda b, di: 0.9 * b + di, buf, d)
    new_w = jax.tree.map(lambda wi, b: wi - 0.05 * b, w, buf)
    _assert_close(current.params, new_w)
    assert float(metrics["loss"]) == pytest.approx(float(loss(w)), rel=1e-5)
    # Running statistics from the clean pass only, not the compressed one's
    # (which differ, so the check can fail).
    _, clean = state_lib.apply_model(
      model, w, stats, batch["image"], train=True
    )
    _, at_compressed = state_lib.apply_model(
      model, compressed, stats, batch["image"], train=True
    )
    _assert_close(current.batch_stats, clean, rtol=1e-6, atol=1e-7)
    gaps = jax.tree.map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))), clean, at_compressed
    )
    assert max(jax.tree.leaves(gaps)) > 1e-4
    w, stats = new_w, clean
  assert current.masks is None and int(current.step) == 2


def test_cram_plus_draws_the_listed_sparsities():
  model, state, _ = _setup()
  config = _cram_config()
  stage = _build(config, "cram_plus", 1, model, 5)
  begun = stage.begin(state, jax.random.PRNGKey(3))
  key = jax.random.fold_in(jax.random.PRNGKey(3), keys.SPARSITY_PURPOSE)
  np.testing.assert_array_equal(begun.opt_state[0].key, key)
  draws = [
    int(jax.random.randint(jax.random.fold_in(key, t), (), 0, 4))
    for t in range(40)
  ]
  assert set(draws) == {0, 1, 2, 3}


def test_retune_prunes_with_ties_and_matches_a_fresh_pass():
  model, state, batches = _setup()
  config = _cram_config()
  config.cram.retune_batches = 3
  stage = _build(config, "cram_plus", 2, model, 0)
  assert stage.num_steps == 3 and stage.spec.kind == "retune"
  # A tie at the threshold: the largest kernel entry appears twice more.
  params = jax.tree.map(lambda x: x, state.params)
  top = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(params))
  kernel = params["conv1"]["kernel"]
  params["conv1"]["kernel"] = (
    kernel.at[0, 0, 0, 0].set(top).at[0, 0, 0, 1].set(-top)
  )
  state = state.replace(params=params)
  current = stage.begin(state, jax.random.PRNGKey(0))
  _assert_close(current.masks, _reference_masks(params, 0.75), rtol=0, atol=0)
  for batch in batches:
    current, metrics = jax.jit(stage.step)(current, batch)
  # A fresh pass, independently: the model's initial statistics (mean 0,
  # variance 1, PyTorch's reset_running_stats) updated by the same
  # train-mode forward passes of the masked model.
  fresh = model.module.init(
    jax.random.PRNGKey(9), jnp.zeros((1, 8, 8, 1)), train=False
  )["batch_stats"]
  masked = _masked_tree(params, current.masks)
  for batch in batches:
    _, fresh = state_lib.apply_model(
      model, masked, fresh, batch["image"], train=True
    )
  _assert_close(current.batch_stats, fresh, rtol=1e-6, atol=1e-7)
  _assert_close(current.params, params, rtol=0, atol=0)
  assert np.isfinite(float(metrics["loss"]))


def test_retune_first_batch_norm_is_the_momentum_average():
  model, state, batches = _setup()
  config = _cram_config()
  config.cram.retune_batches = 2
  stage = _build(config, "cram", 2, model, 0)
  current = stage.begin(state, jax.random.PRNGKey(0))
  masked = _masked_tree(state.params, current.masks)
  means = []
  for batch in batches[:2]:
    current, _ = jax.jit(stage.step)(current, batch)
    x = (batch["image"] - 0.5) / 0.25
    _, inter = model.module.apply(
      {"params": masked, "batch_stats": state.batch_stats},
      x,
      train=True,
      mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda m, _: m.name == "conv1",
    )
    means.append(
      np.mean(
        np.asarray(inter["intermediates"]["conv1"]["__call__"][0]),
        axis=(0, 1, 2),
      )
    )
  # reset to 0, then m <- 0.9 m + 0.1 batch mean, twice.
  expected = 0.9 * (0.1 * means[0]) + 0.1 * means[1]
  np.testing.assert_allclose(
    current.batch_stats["bn1"]["mean"], expected, rtol=1e-5, atol=1e-6
  )


def test_registry_keeps_the_seven_default_methods():
  assert methods.METHODS == (
    "dense",
    "dense_sam",
    "sam_prune",
    "prune_sam",
    "gmp",
    "hydra",
    "csam",
  )
  assert methods.ALL_METHODS == methods.METHODS + ("cram", "cram_plus", "safe")
  assert tuple(default.get_config().methods) == methods.METHODS
  assert config_validation.normalize_methods("csam,cram_plus") == (
    "csam",
    "cram_plus",
  )
  with pytest.raises(ValueError, match="cram_plus"):
    config_validation.normalize_methods("cramm")
  config = default.get_config()
  totals = {
    m: methods.method_steps(config, m, 100) for m in methods.ALL_METHODS
  }
  assert len(set(totals.values())) == 1
  assert [s.kind for s in methods.get_recipe("cram")] == [
    "pretrain",
    "compression",
    "retune",
  ]
  assert methods.prunes("cram") and methods.prunes("cram_plus")
  assert variants.get_variant("safe_aug").method == "safe"
  assert variants.get_variant("safe_ref").overrides == {
    "safe.hold_biases_at_zero": True
  }
  assert variants.get_variant("cram_plus_k").method == "cram"
  assert variants.get_variant("cram_plus_k").overrides == {"cram.plus": True}
  assert variants.get_variant("cram_aug").method == "cram"
  assert variants.get_variant("cram_aug").overrides == {
    "finetune.augment_variations": True
  }


@pytest.mark.parametrize("study", ["default", "study_peers"])
def test_ft_variants_train_with_the_dense_continuations_optimizer(study):
  """cram_ft / cram_plus_ft / safe_ft: the compression stage's optimizer
  equals config.finetune.optimizer (what every other method's weights
  continue with), field for field; the plain variants keep the
  references' lr 0.1 after a 5-epoch warm-up."""
  import importlib

  config = importlib.import_module(f"experiments.configs.{study}").get_config()
  for algo in methods.COMPRESSION_ALGOS:
    section = methods.config_section(algo)
    ft = variants.variant_config(config, f"{algo}_ft")
    assert ft.methods == (algo,)
    assert ft[section].optimizer.to_dict() == ft.finetune.optimizer.to_dict()
    plain = variants.variant_config(config, algo)[section].optimizer
    assert (plain.learning_rate, plain.warmup_epochs) == (0.1, 5.0)


def test_config_validation_rejects_bad_cram_settings():
  config = smoke.get_config()
  config.methods = ("cram_plus",)
  config_validation.validate_config(config)
  config.cram.sparsities = (0.3, 1.0)
  with pytest.raises(ValueError, match="cram.sparsities"):
    config_validation.validate_config(config)
  config = smoke.get_config()
  config.safe.schedule = "step"
  with pytest.raises(ValueError, match="safe.schedule"):
    config_validation.validate_config(config)


def test_cram_plus_must_train_at_its_target_sparsity():
  config = smoke.get_config()
  config.methods = ("csam", "cram_plus")
  config.sparsity = 0.95
  with pytest.raises(ValueError, match="config.sparsity=0.95, which is not"):
    config_validation.validate_config(config)
  config.cram.sparsities = (0.5, 0.7, 0.8, 0.9, 0.95)
  config_validation.validate_config(config)
  config.methods = ("cram",)  # CrAM-k compresses at config.sparsity
  config.cram.sparsities = (0.5,)
  config_validation.validate_config(config)


def test_augmented_compression_stage_needs_a_sampler():
  model, _, _ = _setup()
  config = _cram_config()
  config.finetune.augment_variations = True
  with pytest.raises(ValueError, match="augment_variations"):
    _build(config, "cram", 1, model, 2)


# --- SAFE -------------------------------------------------------------------


def test_penalty_schedule_values():
  cosine = csam_jax.penalty_schedule(2.0, "cosine", 8)
  # 2 (1 - cos(pi t / 8)) / 2 at t = 0, 2, 4, 8.
  expected = [0.0, 1 - math.cos(math.pi / 4), 1.0, 2.0]
  got = [float(cosine(t)) for t in (0, 2, 4, 8)]
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  linear = csam_jax.penalty_schedule(2.0, "linear", 8)
  assert [float(linear(t)) for t in (0, 2, 8)] == [0.0, 0.5, 2.0]
  assert float(csam_jax.penalty_schedule(2.0, "constant", None)(5)) == 2.0
  with pytest.raises(TypeError):
    csam_jax.penalty_schedule(2.0, "cosine", None)


_SAFE_W = {"k": jnp.array([[3.0, 1.0], [0.5, 2.0]]), "b": jnp.array([1.0])}
_TARGET = {"k": jnp.array([[1.0, 0.0], [2.0, -1.0]]), "b": jnp.array([0.0])}


def _target_loss(p):
  return 0.5 * sum(
    jnp.sum((x - c) ** 2)
    for x, c in zip(jax.tree.leaves(p), jax.tree.leaves(_TARGET), strict=True)
  )


def _project_half(tree):
  return compression.safe_projection(0.5)(tree)


def test_safe_first_step_hand_computed():
  tx = csam_jax.safe_transform(
    1.0, 0.0, _project_half, schedule="constant", where=csam_jax.prunable
  )
  state = tx.init(_SAFE_W)
  # N = 4, floor(0.5 * 4) = 2: threshold sorted(|k|)[2] = 2, kept >= 2.
  _assert_close(state.z["k"], jnp.array([[3.0, 0.0], [0.0, 2.0]]), 0, 0)
  assert state.z["b"] is None and state.u["b"] is None
  g1 = {"k": jnp.array([[0.1, 0.2], [0.3, 0.4]]), "b": jnp.array([0.5])}
  out, state = tx.update(g1, state, _SAFE_W, grad_fn=lambda p, _: g1)
  # g1 + 1 * (w - z + 0) on the kernel, g1 on the bias.
  _assert_close(out["k"], jnp.array([[0.1, 1.2], [0.8, 0.4]]))
  _assert_close(out["b"], jnp.array([0.5]))
  assert int(state.count) == 1


def test_safe_dual_update_hand_computed():
  zero = lambda p, _: jax.tree.map(jnp.zeros_like, p)  # noqa: E731
  tx = optax.chain(
    csam_jax.safe_transform(
      1.0,
      0.0,
      _project_half,
      schedule="constant",
      dual_every=1,
      where=csam_jax.prunable,
    ),
    optax.sgd(0.5),
  )
  w = {"k": _SAFE_W["k"]}
  state = tx.init(w)
  # Step 0: z = [[3, 0], [0, 2]], u = 0, no refresh (count 0):
  # w1 = w - 0.5 (w - z) = [[3, 0.5], [0.25, 2]].
  updates, state = tx.update(zero(w, 0), state, w, grad_fn=zero)
  w = optax.apply_updates(w, updates)
  _assert_close(w["k"], jnp.array([[3.0, 0.5], [0.25, 2.0]]))
  # Step 1 refreshes first: v = w1 + 0; sorted |v| = 0.25, 0.5, 2, 3, the
  # threshold at floor(0.5 * 4) = 2 is 2: z = [[3, 0], [0, 2]] and
  # u = v - z = [[0, 0.5], [0.25, 0]]; then w2 = w1 - 0.5 (w1 - z + u).
  updates, state = tx.update(zero(w, 0), state, w, grad_fn=zero)
  w = optax.apply_updates(w, updates)
  safe_state = state[0]
  _assert_close(safe_state.z["k"], jnp.array([[3.0, 0.0], [0.0, 2.0]]))
  _assert_close(safe_state.u["k"], jnp.array([[0.0, 0.5], [0.25, 0.0]]))
  _assert_close(w["k"], jnp.array([[3.0, 0.0], [0.0, 2.0]]))
  assert int(safe_state.count) == 2


def test_safe_ties_at_the_threshold_are_kept():
  tree = {"k": jnp.array([[2.0, -2.0], [2.0, 1.0]]), "b": None}
  # N = 4, s = 0.5: sorted[2] = 2, tied three times: all three kept.
  z = _project_half(tree)
  assert z["k"].tolist() == [[2.0, -2.0], [2.0, 0.0]]


def test_safe_matches_the_reference_order_of_updates():
  """Five steps against the reference's order: the step, then z/u at
  count % K == K - 1 from the new weights (safe-jax, sparsify/safe.py)."""
  lam, rho, k_dual, lr, total = 0.7, 0.3, 2, 0.2, 5
  tx = _chain_sgd(
    csam_jax.safe_transform(
      lam,
      rho,
      _project_half,
      total_steps=total,
      dual_every=k_dual,
      where=csam_jax.prunable,
    ),
    lr,
  )
  state, w = tx.init(_SAFE_W), _SAFE_W
  ref_w = _SAFE_W
  z = {"k": _project_half({"k": _SAFE_W["k"]})["k"]}
  u = {"k": jnp.zeros((2, 2))}
  grad = jax.grad(_target_loss)
  for t in range(total):
    updates, state = tx.update(grad(w), state, w, grad_fn=lambda p, _: grad(p))
    w = jax.tree.map(jnp.add, w, updates)
    # The reference, written out.
    g0 = grad(ref_w)
    norm = math.sqrt(sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(g0)))
    scale = rho / (norm + 1e-12)
    point = jax.tree.map(lambda x, g, c=scale: x + c * g, ref_w, g0)
    g = grad(point)
    lam_t = lam * 0.5 * (1 - math.cos(math.pi * t / total))
    g = dict(g, k=g["k"] + lam_t * (ref_w["k"] - z["k"] + u["k"]))
    ref_w = jax.tree.map(lambda x, d: x - lr * d, ref_w, g)
    if t % k_dual == k_dual - 1:
      v = ref_w["k"] + u["k"]
      z = {"k": _project_half({"k": v})["k"]}
      u = {"k": v - z["k"]}
    _assert_close(w, ref_w)
  # Two refreshes each (after the reference's steps 1 and 3, before ours
  # 2 and 4): the same z and u.
  safe_state = state[0]
  _assert_close(safe_state.z["k"], z["k"])
  _assert_close(safe_state.u["k"], u["k"])
  assert float(jnp.max(jnp.abs(u["k"]))) > 0


def _chain_sgd(tx, lr):
  return optax.chain(tx, optax.sgd(lr))


def _safe_config(hold_biases=False):
  config = smoke.get_config()
  config.sparsity = 0.75
  config.safe.update(dict(lam=0.5, schedule="constant", rho=0.1, dual_every=32))
  config.safe.hold_biases_at_zero = hold_biases
  config.safe.optimizer.update(
    dict(
      learning_rate=0.05,
      momentum=0.9,
      weight_decay=1e-4,
      schedule="constant",
      warmup_epochs=0.0,
    )
  )
  return config


def test_safe_stage_step_is_exact_and_keeps_clean_batch_stats():
  model, state, batches = _setup()
  config = _safe_config()
  stage = _build(config, "safe", 1, model, 5)
  current = stage.begin(state, jax.random.PRNGKey(0))
  step = jax.jit(stage.step)
  w, stats = state.params, state.batch_stats
  kernels = csam_jax.prunable(w)
  z = _masked_tree(w, _reference_masks(w, 0.75, ties="keep"))
  buf = jax.tree.map(jnp.zeros_like, w)
  for batch in batches[:2]:
    current, _ = step(current, batch)

    def loss(p, batch=batch, stats=stats):
      return losses.weight_loss(p, model, None, stats, batch)[0]

    g0 = jax.grad(loss)(w)
    norm = math.sqrt(sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(g0)))
    scale = 0.1 / (norm + 1e-12)
    point = jax.tree.map(lambda x, g, c=scale: x + c * g, w, g0)
    g1 = jax.grad(loss)(point)
    g = jax.tree.map(
      lambda gi, wi, zi, k: gi + 0.5 * (wi - zi) if k else gi, g1, w, z, kernels
    )
    d = jax.tree.map(lambda gi, wi: gi + 1e-4 * wi, g, w)
    buf = jax.tree.map(lambda b, di: 0.9 * b + di, buf, d)
    new_w = jax.tree.map(lambda wi, b: wi - 0.05 * b, w, buf)
    _assert_close(current.params, new_w)
    _, clean = state_lib.apply_model(
      model, w, stats, batch["image"], train=True
    )
    _assert_close(current.batch_stats, clean, rtol=1e-6, atol=1e-7)
    w, stats = new_w, clean
  assert current.masks is None


def test_safe_reference_mode_holds_biases_at_zero():
  model, state, batches = _setup()
  config = _safe_config(hold_biases=True)
  stage = _build(config, "safe", 1, model, 5)
  biases = compression.bias_leaves(state.params)
  assert sum(jax.tree.leaves(biases)) == 4  # 3 BatchNorm shifts, the head's
  # Biases as after pretraining (nonzero), so the check below can fail.
  state = state.replace(
    params=jax.tree.map(lambda x, b: x + 0.3 if b else x, state.params, biases)
  )
  current = stage.begin(state, jax.random.PRNGKey(0))
  for batch in batches:
    current, _ = jax.jit(stage.step)(current, batch)
  for x, b in zip(
    jax.tree.leaves(current.params), jax.tree.leaves(biases), strict=True
  ):
    if b:
      assert float(jnp.max(jnp.abs(x))) == 0.0
  # The penalty covers the BatchNorm scales (z of a scale = the scale).
  safe_state = current.opt_state[0]
  _assert_close(safe_state.z["bn1"]["scale"], state.params["bn1"]["scale"])
  assert safe_state.z["bn1"]["bias"] is None
  # The intended mode trains the biases and penalises the kernels only.
  config = _safe_config(hold_biases=False)
  stage = _build(config, "safe", 1, model, 5)
  current, _ = jax.jit(stage.step)(
    stage.begin(state, jax.random.PRNGKey(0)), batches[0]
  )
  assert current.opt_state[0].z["bn1"]["scale"] is None
  assert float(jnp.max(jnp.abs(current.params["bn1"]["bias"]))) > 0


def test_safe_retune_projects_with_ties_kept_from_zero_statistics():
  model, state, batches = _setup()
  config = _safe_config()
  config.safe.retune_batches = 3
  stage = _build(config, "safe", 2, model, 0)
  assert stage.num_steps == 3
  params = jax.tree.map(lambda x: x, state.params)
  top = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(params))
  kernel = params["conv2"]["kernel"]
  params["conv2"]["kernel"] = kernel.at[0, 0, 0, 0].set(-top)
  state = state.replace(params=params)
  current = stage.begin(state, jax.random.PRNGKey(0))
  expected = _reference_masks(params, 0.75, ties="keep")
  _assert_close(current.masks, expected, rtol=0, atol=0)
  for x in jax.tree.leaves(current.batch_stats):
    assert float(jnp.max(jnp.abs(x))) == 0.0  # mean and variance reset to 0
  for batch in batches:
    current, _ = jax.jit(stage.step)(current, batch)
  fresh = jax.tree.map(jnp.zeros_like, state.batch_stats)
  masked = _masked_tree(params, expected)
  for batch in batches:
    _, fresh = state_lib.apply_model(
      model, masked, fresh, batch["image"], train=True
    )
  _assert_close(current.batch_stats, fresh, rtol=1e-6, atol=1e-7)


def _transforms():
  return {
    "cram": csam_jax.cram_transform(0.2, _compress_half, plus=True),
    "cram_normalized": csam_jax.cram_transform(
      0.2, _compress_half, normalize=True
    ),
    "safe": csam_jax.safe_transform(
      0.5, 0.1, _project_half, total_steps=4, dual_every=2
    ),
  }


@pytest.mark.parametrize("name", sorted(_transforms()))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_transform_battery(name, dtype):
  """Under jit in a chain: finite on zero gradients, dtypes kept, the state
  stable in structure, shape and dtype, one compilation for three steps."""
  tx = optax.chain(_transforms()[name], optax.sgd(0.1))
  params = jax.tree.map(lambda x: x.astype(dtype), _SAFE_W)
  state = tx.init(params)
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, state = tx.update(
      zeros,
      state,
      params,
      grad_fn=lambda p, _: jax.tree.map(jnp.zeros_like, p),
    )
    return optax.apply_updates(params, updates), state

  for _ in range(3):
    new, new_state = step(params, state)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for a, b in zip(
      jax.tree.leaves(new_state), jax.tree.leaves(state), strict=True
    ):
      assert a.shape == b.shape and a.dtype == b.dtype
    params, state = new, new_state
  assert len(traces) == 1
  for x in jax.tree.leaves(params):
    assert x.dtype == dtype and bool(jnp.all(jnp.isfinite(x)))
