"""Unit tests of the stages and methods: exact updates, BatchNorm, budgets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tiny_model

import csam_jax
from csam_jax import objectives
from experiments import keys, models
from experiments.configs import default, smoke
from experiments.robustness import samplers
from experiments.training import losses, methods, stages
from experiments.training import state as state_lib

NUM_CLASSES = tiny_model.NUM_CLASSES
_setup = tiny_model.setup


def _plain_sgd(config, section, lr):
  config[section].optimizer.update(
    dict(
      learning_rate=lr,
      momentum=0.0,
      weight_decay=0.0,
      schedule="constant",
      warmup_epochs=0.0,
    )
  )


def _config():
  config = smoke.get_config()
  config.sparsity = 0.75
  return config


def _build(config, method, index, model, num_steps, steps_per_epoch, **kw):
  """Builds stage ``index`` of ``method`` with exactly ``num_steps`` steps
  (its first budget section gives them all, the others none)."""
  spec = methods.get_recipe(method)[index]
  for i, section in enumerate(spec.epochs):
    config[section].num_steps = num_steps if i == 0 else 0
    config[section].epochs = 0.0 if i else config[section].epochs
  stage = stages.build(config, spec, model, steps_per_epoch, **kw)
  assert stage.num_steps == (num_steps if spec.epochs else 0)
  return stage


def _sampler(config):
  csam = config.search.csam
  return samplers.make_sampler(csam.distribution, csam.variations)


@pytest.mark.parametrize(
  "tree, expected",
  [
    ({"w": jnp.ones((2, 3)), "none": None, "n": jnp.arange(3)}, True),
    ({"w": jnp.ones(2), "b": jnp.array([0.0, jnp.nan])}, False),
    ([jnp.ones(2), jnp.array([1.0, -jnp.inf], jnp.bfloat16)], False),
    ([jnp.ones(2), jnp.array([65504.0], jnp.float16)], True),
    ({"n": jnp.arange(2)}, True),
    ({}, True),
  ],
)
def test_all_finite_over_leaves_of_mixed_dtypes(tree, expected):
  assert bool(stages.all_finite(tree)) is expected
  assert bool(jax.jit(stages.all_finite)(tree)) is expected


def test_every_method_has_the_same_budget():
  config = default.get_config()
  totals = {m: methods.method_steps(config, m, 100) for m in methods.METHODS}
  expected = 100 * (
    config.pretrain.epochs + config.search.epochs + config.finetune.epochs
  )
  assert totals == {m: expected for m in methods.METHODS}
  with pytest.raises(ValueError, match="method must be one of"):
    methods.get_recipe("sam")


def test_gmp_schedule_is_cubic_and_ends_at_target():
  config = _config()
  config.sparsity = 0.9
  config.gmp.update(
    dict(initial_sparsity=0.1, begin_fraction=0.1, end_fraction=0.7)
  )
  config.gmp.update_every = 3
  n = 100  # t0 = 10, end = 70, dt = 3, 20 updates.
  got = {t: stages.gmp_sparsity(t, n, config) for t in range(n)}
  updates = {t: s for t, s in got.items() if s is not None}
  assert sorted(updates) == list(range(10, 71, 3))
  for t, s in updates.items():
    expected = 0.9 + (0.1 - 0.9) * (1 - (t - 10) / 60) ** 3
    assert s == pytest.approx(expected, abs=1e-12)
  assert updates[10] == pytest.approx(0.1) and updates[70] == pytest.approx(0.9)
  values = list(updates.values())
  assert all(a <= b for a, b in zip(values, values[1:], strict=False))


def test_one_shot_prune_keeps_largest_magnitudes():
  model, state, _ = _setup()
  config = _config()
  fns = _build(config, "prune_sam", 1, model, 0, 1)
  pruned = fns.begin(state, jax.random.PRNGKey(0))
  keep = csam_jax.prunable(state.params)
  weights = np.concatenate(
    [
      np.abs(np.asarray(w)).ravel()
      for w, k in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(keep), strict=True
      )
      if k
    ]
  )
  masks = np.concatenate(
    [np.asarray(m).ravel() for m in jax.tree.leaves(pruned.masks)]
  )
  n_pruned = round(0.75 * weights.size)
  assert int((masks == 0).sum()) == n_pruned
  threshold = np.sort(weights)[n_pruned]
  assert weights[masks == 1].min() >= threshold
  assert weights[masks == 0].max() <= threshold


def test_sam_step_is_exact_and_keeps_clean_batch_stats():
  model, state, batch = _setup()
  config = _config()
  config.sam.rho = 0.1
  _plain_sgd(config, "finetune", 0.05)
  fns = _build(config, "dense_sam", 1, model, 5, 5)
  start = fns.begin(state, jax.random.PRNGKey(0))
  new, metrics = jax.jit(fns.step)(start, batch)

  def loss(p):
    return losses.weight_loss(p, model, None, state.batch_stats, batch)[0]

  g = jax.grad(loss)(state.params)
  norm = optax.tree.norm(g)
  perturbed = jax.tree.map(lambda w, d: w + 0.1 * d / norm, state.params, g)
  g_sam = jax.grad(loss)(perturbed)
  expected = jax.tree.map(lambda w, d: w - 0.05 * d, state.params, g_sam)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    new.params,
    expected,
  )
  # BatchNorm statistics are those of the clean pass at the unperturbed
  # point, and differ from the perturbed pass's (so the check can fail).
  _, clean = state_lib.apply_model(
    model, state.params, state.batch_stats, batch["image"], train=True
  )
  _, at_perturbed = state_lib.apply_model(
    model, perturbed, state.batch_stats, batch["image"], train=True
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    new.batch_stats,
    clean,
  )
  diffs = jax.tree.leaves(
    jax.tree.map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))), clean, at_perturbed
    )
  )
  assert max(diffs) > 1e-6
  assert float(metrics["loss"]) == pytest.approx(
    float(loss(state.params)), rel=1e-6
  )


def _csam_config(joint: bool = False):
  config = _config()
  _plain_sgd(config, "search", 0.5)
  _plain_sgd(config, "search" if not joint else "search", 0.5)
  config.search.weight_optimizer.update(
    dict(
      learning_rate=0.01, momentum=0.0, weight_decay=0.0, schedule="constant"
    )
  )
  config.search.update_weights = joint
  config.search.csam.update(
    dict(
      init="magnitude",
      forward="soft",
      rho=0.2,
      radius="global",
      lam_cert=0.5,
      lam_cons=0.3,
      kappa=0.05,
    )
  )
  config.search.csam.variations.ranges = dict(brightness=0.3)
  return config


@pytest.mark.parametrize("joint", [False, True])
def test_csam_search_step_is_exact(joint):
  model, state, batch = _setup()
  config = _csam_config(joint)
  sample_fn = _sampler(config)
  fns = _build(config, "csam", 1, model, 5, 5, sampler=sample_fn)
  start = fns.begin(state, jax.random.PRNGKey(7))
  new, _ = jax.jit(fns.step)(start, batch)

  settings = stages._search_settings(config, "csam", sample_fn)
  key = jax.random.fold_in(start.key, 0)

  def objective(m, p):
    return losses.mask_objective(
      m, p, model, state.batch_stats, batch, key, settings
    )[0]

  masks0 = start.masks
  g = jax.grad(objective)(masks0, state.params)
  norm = optax.tree.norm(g)
  perturbed = jax.tree.map(lambda m, d: m + 0.2 * d / norm, masks0, g)
  g_sam = jax.grad(objective)(perturbed, state.params)
  expected = jax.tree.map(
    lambda m, d: jnp.clip(m - 0.5 * d, 0.0, 1.0), masks0, g_sam
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    new.masks,
    expected,
  )
  leaves = jax.tree.leaves(new.masks)
  assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in leaves)
  assert any(
    float(jnp.max(jnp.abs(a - b))) > 1e-4
    for a, b in zip(leaves, jax.tree.leaves(masks0), strict=True)
  )
  if joint:
    g_w = jax.grad(objective, argnums=1)(masks0, state.params)
    expected_w = jax.tree.map(lambda w, d: w - 0.01 * d, state.params, g_w)
  else:
    expected_w = state.params
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    new.params,
    expected_w,
  )
  # Batch statistics: clean inputs at the unperturbed (soft) masks only.
  masked = csam_jax.apply_masks(state.params, masks0, mode="soft")
  _, clean = state_lib.apply_model(
    model, masked, state.batch_stats, batch["image"], train=True
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
    new.batch_stats,
    clean,
  )


def test_csam_objective_adds_hinge_and_consistency():
  model, state, batch = _setup()
  config = _csam_config()
  sample_fn = _sampler(config)
  settings = stages._search_settings(config, "csam", sample_fn)
  masks = csam_jax.init_masks(state.params, sparsity=0.75, method="magnitude")
  key = jax.random.PRNGKey(3)
  loss, (logits, _, ce) = losses.mask_objective(
    masks, state.params, model, state.batch_stats, batch, key, settings
  )
  masked = csam_jax.apply_masks(state.params, masks, mode="soft")
  xt = jax.vmap(sample_fn)(jax.random.split(key, 8), batch["image"])
  logits_t, _ = state_lib.apply_model(
    model, masked, state.batch_stats, xt, train=True
  )
  hinge = objectives.certification_hinge(
    jax.nn.softmax(logits), jax.nn.softmax(logits_t), kappa=0.05
  ).mean()
  cons = objectives.mask_consistency(masks, 0.75)
  assert float(hinge) > 0 and float(cons) > 0
  assert float(loss) == pytest.approx(
    float(ce + 0.5 * hinge + 0.3 * cons), rel=1e-6
  )


def test_csam_hinge_under_running_batchnorm_statistics():
  model, state, batch = _setup()
  config = _csam_config()
  config.search.csam.hinge_bn = "running"
  sample_fn = _sampler(config)
  settings = stages._search_settings(config, "csam", sample_fn)
  assert settings.hinge_bn == "running"
  masks = csam_jax.init_masks(state.params, sparsity=0.75, method="magnitude")
  key = jax.random.PRNGKey(3)
  loss, (logits, new_stats, ce) = losses.mask_objective(
    masks, state.params, model, state.batch_stats, batch, key, settings
  )
  masked = csam_jax.apply_masks(state.params, masks, mode="soft")
  xt = jax.vmap(sample_fn)(jax.random.split(key, 8), batch["image"])

  def probs(x):
    out, _ = state_lib.apply_model(
      model, masked, state.batch_stats, x, train=False
    )
    return jax.nn.softmax(out)

  hinge = objectives.certification_hinge(
    probs(batch["image"]), probs(xt), kappa=0.05
  ).mean()
  cons = objectives.mask_consistency(masks, 0.75)
  assert float(loss) == pytest.approx(
    float(ce + 0.5 * hinge + 0.3 * cons), rel=1e-6
  )
  # The cross-entropy and the statistics update still come from the clean
  # pass in training mode.
  train_logits, stats = state_lib.apply_model(
    model, masked, state.batch_stats, batch["image"], train=True
  )
  np.testing.assert_allclose(logits, train_logits, rtol=1e-6)
  jax.tree.map(np.testing.assert_allclose, new_stats, stats)
  batch_settings = settings._replace(hinge_bn="batch")
  other, _ = losses.mask_objective(
    masks, state.params, model, state.batch_stats, batch, key, batch_settings
  )
  assert float(other) != pytest.approx(float(loss), rel=1e-6)


def test_flip_fractions_hand_computed():
  settings = losses.MaskObjective(
    forward="ste", sparsity=0.5, scope="global", structure="unstructured"
  )
  masks = {
    "a": {"kernel": jnp.array([[0.9, 0.8], [0.1, 0.2]])},
    "b": {"kernel": jnp.array([[0.7, 0.3], [0.6, 0.05]]), "bias": None},
  }
  # Global top 4 of 8: a 0.9 0.8, b 0.7 0.6. The perturbation lifts a's
  # 0.2 to 0.75 and drops b's 0.6 to 0.0: b's 0.6 leaves the kept set.
  perturbed = {
    "a": {"kernel": jnp.array([[0.9, 0.8], [0.1, 0.75]])},
    "b": {"kernel": jnp.array([[0.7, 0.3], [0.0, 0.05]]), "bias": None},
  }
  out = stages.flip_fractions(masks, perturbed, settings)
  assert float(out["flip_fraction"]) == pytest.approx(1 / 4)
  assert float(out["flip/a/kernel"]) == 0.0
  assert float(out["flip/b/kernel"]) == pytest.approx(1 / 2)
  same = stages.flip_fractions(masks, masks, settings)
  assert float(same["flip_fraction"]) == 0.0


def test_finetune_augmented_with_the_input_variations():
  model, state, batch = _setup()
  state = state.replace(key=jax.random.PRNGKey(5), step=jnp.int32(3))
  shift = lambda key, im: jnp.clip(im + jax.random.uniform(key), 0, 1)
  seen = stages.augmented_step(lambda st, b: (st, b["image"]), shift)
  _, images = seen(state, batch)
  key = jax.random.fold_in(
    jax.random.fold_in(state.key, 3), keys.AUGMENT_PURPOSE
  )
  expected = jax.vmap(shift)(jax.random.split(key, 8), batch["image"])
  np.testing.assert_array_equal(images, expected)
  assert not np.allclose(images, batch["image"])
  # The finetune stage of an augmented config uses it; without a sampler
  # the config is refused.
  config = _config()
  config.finetune.augment_variations = True
  with pytest.raises(ValueError, match="augment_variations needs"):
    _build(config, "hydra", -1, model, 2, 2, sampler=None)
  fns = _build(config, "hydra", -1, model, 2, 2, sampler=shift)
  assert fns.step.__name__ == "augmented"


def test_hydra_search_with_trainable_batchnorm_as_its_reference():
  model, state, batch = _setup()
  config = _config()
  config.search.train_batchnorm = True
  fns = _build(config, "hydra", 1, model, 2, 2)
  begun = fns.begin(state, jax.random.PRNGKey(0))
  after, _ = fns.step(begun, batch)
  labels = stages.batchnorm_labels(state.params)
  changed = jax.tree.map(
    lambda a, b: bool(jnp.any(a != b)), begun.params, after.params
  )
  flat_labels = jax.tree.leaves(labels)
  flat_changed = jax.tree.leaves(changed)
  assert "batchnorm" in flat_labels and "frozen" in flat_labels
  for label, moved in zip(flat_labels, flat_changed, strict=True):
    assert moved == (label == "batchnorm"), label


def test_hydra_search_freezes_weights_and_finalizes_hard_masks():
  model, state, batch = _setup()
  config = _config()
  _plain_sgd(config, "search", 0.5)
  fns = _build(config, "hydra", 1, model, 3, 3)
  s = fns.begin(state, jax.random.PRNGKey(0))
  # begin is jitted (as in a run): the same computation compiled.
  expected_init = jax.jit(
    lambda p: csam_jax.init_masks(p, sparsity=0.75, method="hydra")
  )(state.params)
  jax.tree.map(np.testing.assert_array_equal, s.masks, expected_init)
  step = jax.jit(fns.step)
  for _ in range(2):
    s, _ = step(s, batch)
  jax.tree.map(np.testing.assert_array_equal, s.params, state.params)
  final = fns.finalize(s)
  values = np.concatenate(
    [np.asarray(m).ravel() for m in jax.tree.leaves(final.masks)]
  )
  assert set(np.unique(values)) == {0.0, 1.0}
  assert (values == 0).sum() == round(0.75 * values.size)


def test_finetune_keeps_pruned_weights_inactive():
  model, state, batch = _setup()
  config = _config()
  prune = _build(config, "sam_prune", 1, model, 0, 1)
  s = prune.begin(state, jax.random.PRNGKey(0))
  fine = _build(config, "sam_prune", 2, model, 3, 3)
  s = fine.begin(s, jax.random.PRNGKey(1))
  masks = s.masks
  step = jax.jit(fine.step)
  for _ in range(3):
    s, _ = step(s, batch)
  jax.tree.map(np.testing.assert_array_equal, s.masks, masks)
  # Gradients of pruned weights are zero: with weight decay they only
  # shrink, never grow, and the deployed weights stay pruned.
  from experiments.robustness import evaluation

  assert evaluation.sparsity_reached(s, config) == pytest.approx(0.75, abs=1e-3)


def test_gmp_update_is_monotone():
  model, state, _ = _setup()
  config = _config()
  fns = _build(config, "gmp", 1, model, 10, 10)
  s = fns.begin(state, jax.random.PRNGKey(0))
  previous = None
  for sparsity in (0.0, 0.3, 0.6, 0.75):
    num_pruned = stages.gmp_num_pruned(s.params, sparsity, config)
    s = fns.hook.update(s, num_pruned)
    flat = np.concatenate(
      [np.asarray(m).ravel() for m in jax.tree.leaves(s.masks)]
    )
    assert (flat == 0).sum() == round(sparsity * flat.size)
    if previous is not None:
      assert np.all(flat[previous == 0] == 0)
    previous = flat


def test_evaluation_subset_is_seeded_uniform_and_not_the_first_rows():
  from experiments import input_pipeline
  from experiments.robustness import evaluation

  config = smoke.get_config()
  images, labels = evaluation.evaluation_subset(config, 40, seed=3)
  again, again_labels = evaluation.evaluation_subset(config, 40, seed=3)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(labels, again_labels)
  batches = list(
    input_pipeline.eval_batches(config.data, batch_size=400, normalize=False)
  )
  all_images = np.concatenate([b["image"][b["mask"]] for b in batches])
  all_labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  index = np.sort(
    np.random.default_rng(3).choice(len(all_labels), 40, replace=False)
  )
  np.testing.assert_array_equal(images, all_images[index])
  np.testing.assert_array_equal(labels, all_labels[index])
  assert not np.array_equal(index, np.arange(40))


def test_hydra_ranks_absolute_scores_as_its_reference():
  model, state, batch = _setup()
  config = _config()
  config.search.hydra.rank_by_abs = True
  fns = _build(config, "hydra", 1, model, 2, 2)
  begun = fns.begin(state, jax.random.PRNGKey(0))
  # Flip the sign of every other score: the reference ranks |score|, so the
  # hard mask is that of the unsigned scores.
  signs = jax.tree.map(
    lambda m: jnp.where(jnp.arange(m.size).reshape(m.shape) % 2, -1.0, 1.0),
    begun.masks,
  )
  signed = jax.tree.map(lambda m, s: m * s, begun.masks, signs)
  final = fns.finalize(begun.replace(masks=signed))
  expected = stages.hard_masks(begun.masks, config)
  jax.tree.map(np.testing.assert_array_equal, final.masks, expected)
  # The objective sees |score|; its gradient is the unsigned one times the
  # sign (autodiff through abs, as the reference's GetSubnet(scores.abs())).
  settings = stages._search_settings(config, "hydra", None)
  key = jax.random.PRNGKey(1)

  def objective(m, rank_by_abs):
    return losses.mask_objective(
      m,
      state.params,
      model,
      state.batch_stats,
      batch,
      key,
      settings._replace(rank_by_abs=rank_by_abs),
    )[0]

  assert float(objective(signed, True)) == float(objective(begun.masks, False))
  g_signed = jax.grad(objective)(signed, True)
  g_plain = jax.grad(objective)(begun.masks, False)
  jax.tree.map(
    lambda a, b, s: np.testing.assert_array_equal(a, b * s),
    g_signed,
    g_plain,
    signs,
  )
  assert not settings._replace(rank_by_abs=False).rank_by_abs


@pytest.mark.parametrize(
  "method, index, changes",
  [
    ("dense", 1, {}),
    ("dense_sam", 1, {}),
    ("csam", 1, {}),
    ("csam", 1, {"rho": 0.0}),
    ("csam", 1, {"lam_cert": 0.0}),
    ("csam", 1, {"hinge_bn": "running"}),
    ("csam", 1, {"rho": 0.0, "flip_target": 0.1}),
    ("csam", 1, {"perturbation": "hard_swap", "flip_target": 0.1}),
    ("csam", 1, {"flip_target": 0.1, "direction": "random"}),
    ("hydra", 1, {}),
    ("gmp", 1, {}),
  ],
)
def test_passes_per_step_counts_the_model_calls_of_the_traced_step(
  monkeypatch, method, index, changes
):
  model, state, batch = _setup()
  config = _config()
  config.search.csam.update(changes)
  stage = _build(config, method, index, model, 2, 2, sampler=_sampler(config))
  begun = stage.begin(state, jax.random.PRNGKey(0))
  calls = []
  original = state_lib.apply_model

  def counting(*args, **kwargs):
    calls.append(kwargs.get("train"))
    return original(*args, **kwargs)

  monkeypatch.setattr(state_lib, "apply_model", counting)
  jax.make_jaxpr(stage.step)(begun, batch)
  assert len(calls) == stages.passes_per_step(config, stage.spec) > 0


def test_every_stage_kind_has_a_builder_and_an_unknown_one_fails():
  assert tuple(stages.BUILDERS) == methods.STAGE_KINDS
  cfg = smoke.get_config()
  bad = methods.StageSpec(name="odd", role="from_search", kind="warmup")
  with pytest.raises(ValueError, match="unknown kind 'warmup'"):
    stages.passes_per_step(cfg, bad)
  model = state_lib.Model(
    models.get_model("tiny_cnn", num_classes=3), (0.5,), (0.25,)
  )
  with pytest.raises(ValueError, match=r"stage 'odd': unknown kind 'warmup'"):
    stages.build(cfg, bad, model, 10)
