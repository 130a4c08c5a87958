"""The structure study's harness: perturbations that flip structure, the
flatness diagnostic, the fixed image set, the validation split, provenance."""

from __future__ import annotations

import functools
import json
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tiny_model

import csam_jax
from experiments import (
  config_validation,
  input_pipeline,
  models,
  provenance,
  storage,
)
from experiments.configs import smoke, study_structure_sweep
from experiments.robustness import evaluation, flatness, samplers
from experiments.study import runner as study
from experiments.training import losses, methods, stages
from experiments.training import state as state_lib

NUM_CLASSES = tiny_model.NUM_CLASSES
_setup = tiny_model.setup


def _config(**csam):
  config = smoke.get_config()
  config.sparsity = 0.75
  config.search.optimizer.update(
    dict(
      learning_rate=0.5,
      momentum=0.0,
      weight_decay=0.0,
      schedule="constant",
      warmup_epochs=0.0,
    )
  )
  config.search.num_steps = 4
  config.search.csam.update(dict(init="magnitude", lam_cert=0.5, **csam))
  config.search.csam.variations.ranges = dict(brightness=0.3)
  return config


def _stage(config, model):
  csam = config.search.csam
  sampler = samplers.make_sampler(csam.distribution, csam.variations)
  spec = methods.get_recipe("csam")[1]
  stage = stages.build(config, spec, model, 4, sampler=sampler)
  settings = stages._search_settings(config, "csam", sampler)
  return stage, settings


def _objective(model, state, batch, key, settings):
  def objective(m):
    return losses.mask_objective(
      m, state.params, model, state.batch_stats, batch, key, settings
    )[0]

  return objective


def _topk(config):
  return functools.partial(
    csam_jax.topk_masks, sparsity=config.sparsity, scope=config.scope
  )


def _assert_close(a, b):
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b
  )


def test_flip_targeted_search_step_is_exact():
  model, state, batch = _setup()
  config = _config(rho=0.0, flip_target=0.2)
  stage, settings = _stage(config, model)
  start = stage.begin(state, jax.random.PRNGKey(7))
  new, metrics = jax.jit(stage.step)(start, batch)
  objective = _objective(
    model, start, batch, jax.random.fold_in(start.key, 0), settings
  )
  c = start.masks
  loss, g = jax.value_and_grad(objective)(c)
  norm = optax.tree.norm(g)
  rho = csam_jax.flip_targeted_radius(0.2, _topk(config))(c, g)
  point = jax.tree.map(lambda m, d: m + rho * d / norm, c, g)
  point_loss, g_point = jax.value_and_grad(objective)(point)
  _assert_close(
    new.masks,
    jax.tree.map(lambda m, d: jnp.clip(m - 0.5 * d, 0, 1), c, g_point),
  )
  topk = _topk(config)
  assert float(metrics["flip_fraction"]) == pytest.approx(
    float(csam_jax.flip_fraction(topk(c), topk(point)))
  )
  assert float(metrics["flip_fraction"]) >= 0.2
  assert float(metrics["perturbation_radius"]) == pytest.approx(
    float(rho), rel=1e-4
  )
  assert float(metrics["loss_increase"]) == pytest.approx(
    float(point_loss - loss), rel=1e-4, abs=1e-6
  )
  dot = sum(
    float(jnp.sum(a * b))
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_point), strict=True)
  )
  cosine = dot / float(norm * optax.tree.norm(g_point))
  assert float(metrics["grad_cosine"]) == pytest.approx(cosine, rel=1e-4)


def test_hard_swap_search_step_is_exact():
  model, state, batch = _setup(1)
  config = _config(perturbation="hard_swap", flip_target=0.25)
  stage, settings = _stage(config, model)
  start = stage.begin(state, jax.random.PRNGKey(3))
  new, metrics = jax.jit(stage.step)(start, batch)
  objective = _objective(
    model, start, batch, jax.random.fold_in(start.key, 0), settings
  )
  c = start.masks
  g = jax.grad(objective)(c)
  hard = _topk(config)(c)
  swapped = csam_jax.swap_masks(hard, 0.25, direction=g)
  g_point = jax.grad(objective)(swapped)
  _assert_close(
    new.masks,
    jax.tree.map(lambda m, d: jnp.clip(m - 0.5 * d, 0, 1), c, g_point),
  )
  kept = [int(m.sum()) for m in jax.tree.leaves(hard)]
  expected = sum(round(0.25 * n) for n in kept) / sum(kept)
  assert float(metrics["flip_fraction"]) == pytest.approx(expected)


def test_random_direction_is_seeded_by_the_stage_key_and_flips_the_target():
  model, state, batch = _setup(2)
  config = _config(rho=0.0, flip_target=0.2, direction="random")
  stage, _ = _stage(config, model)
  step = jax.jit(stage.step)
  a = step(stage.begin(state, jax.random.PRNGKey(5)), batch)
  b = step(stage.begin(state, jax.random.PRNGKey(5)), batch)
  c = step(stage.begin(state, jax.random.PRNGKey(6)), batch)
  _assert_close(a[0].masks, b[0].masks)
  assert float(a[1]["flip_fraction"]) >= 0.2
  # Another stage key, another direction (and so another ascent point).
  assert float(a[1]["perturbation_radius"]) != float(
    c[1]["perturbation_radius"]
  )
  # The gradient-directed step goes elsewhere.
  gradient = _config(rho=0.0, flip_target=0.2)
  g_stage, _ = _stage(gradient, model)
  g_new, _ = jax.jit(g_stage.step)(
    g_stage.begin(state, jax.random.PRNGKey(5)), batch
  )
  diff = max(
    float(jnp.max(jnp.abs(x - y)))
    for x, y in zip(
      jax.tree.leaves(a[0].masks), jax.tree.leaves(g_new.masks), strict=True
    )
  )
  assert diff > 1e-6


@pytest.mark.parametrize(
  "changes, message",
  [
    (dict(perturbation="hard_swap"), "needs flip_target > 0"),
    (dict(flip_target=0.1, radius="layerwise"), "radius='global'"),
    (dict(direction="sideways"), "search.csam.direction"),
    (dict(perturbation="weights"), "search.csam.perturbation"),
    (dict(flip_target=1.0), "flip_target"),
  ],
)
def test_bad_perturbation_fields_are_named(changes, message):
  config = smoke.get_config()
  config.search.csam.update(changes)
  with pytest.raises(ValueError, match=message):
    config_validation.validate_config(config)


def _trained_state(config, model, state):
  """A pruned state: magnitude masks at the config's sparsity."""
  masks = csam_jax.init_masks(
    state.params, sparsity=config.sparsity, method="magnitude"
  )
  return state.replace(masks=stages.hard_masks(masks, config))


def test_flatness_diagnostic_on_a_tiny_model():
  config = _config()
  module = models.get_model("tiny_cnn", num_classes=config.data.num_classes)
  model = state_lib.Model(module, (0.5,), (0.25,))
  shape = (8, 8, config.data.channels)
  state = state_lib.init_train_state(model, jax.random.PRNGKey(3), shape)
  config.flatness.update(
    dict(
      enabled=True,
      fractions=(0.05, 0.2),
      num_draws=2,
      certify_fractions=(0.2,),
      certify_images=4,
    )
  )
  config.certify.update(dict(num_samples=4, num_bounds=2, batch_size=64))
  config.certify.binomial.enabled = True
  pruned = _trained_state(config, model, state)
  images, labels = evaluation.evaluation_subset(config, 12, seed=0)
  out = flatness.structural_flatness(
    config,
    model,
    pruned,
    images,
    labels,
    jax.random.PRNGKey(1),
    jax.random.PRNGKey(2),
  )
  hard = evaluation.deployed_masks(pruned, config)
  logits = evaluation.make_logits_fn(model, pruned, config)(images)
  assert out["base"]["accuracy"] == pytest.approx(
    float(np.mean(np.argmax(logits, -1) == labels))
  )
  assert out["base"]["cross_entropy"] == pytest.approx(
    float(losses.cross_entropy(logits, jnp.asarray(labels))), rel=1e-5
  )
  kept = [int(m.sum()) for m in jax.tree.leaves(hard)]
  for f in (0.05, 0.2):
    name = flatness.fraction_key(f)
    expected = sum(round(f * n) for n in kept) / sum(kept)
    assert out["swapped"][name] == pytest.approx(expected)
    assert len(out["random"][name]["draws"]) == 2
    # The directed swap is the one of dL/dm on these images.
    _, _, grads = flatness.evaluate_mask(
      model, pruned.params, hard, pruned.batch_stats, images, labels, 128
    )
    directed = csam_jax.swap_masks(hard, f, direction=grads)
    acc, ce, _ = flatness.evaluate_mask(
      model, pruned.params, directed, pruned.batch_stats, images, labels, 128
    )
    assert out["directed"][name]["accuracy"] == acc
    assert out["directed"][name]["cross_entropy"] == pytest.approx(ce)
  assert out["random"]["0.05"]["certified"] is None
  assert out["random"]["0.2"]["certified"] is not None
  assert out["certify_images"] == 4
  json.dumps(out)  # a record field


def test_flatness_section_validation():
  config = smoke.get_config()
  config.flatness.enabled = True
  config.flatness.certify_fractions = (0.3,)
  with pytest.raises(ValueError, match="certify_fractions"):
    config_validation.validate_config(config)
  config.flatness.certify_fractions = ()
  config.flatness.fractions = (0.0,)
  with pytest.raises(ValueError, match="fractions"):
    config_validation.validate_config(config)


def _write_id_npz(path, n_train=200, n_test=40):
  """An npz whose images carry their row id in two pixels."""
  rng = np.random.default_rng(0)

  def images(n, offset):
    x = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    ids = np.arange(n) + offset
    x[:, 0, 0], x[:, 0, 1] = ids % 256, ids // 256
    return x

  np.savez(
    path,
    x_train=images(n_train, 0),
    y_train=np.arange(n_train) % 4,
    x_test=images(n_test, 1000),
    y_test=np.arange(n_test) % 4,
  )


def _ids(x):
  x = np.asarray(x)
  x = x.astype(np.int64) if x.dtype == np.uint8 else np.round(x * 255)
  x = x.astype(np.int64)
  return set((x[:, 0, 0, 0] + 256 * x[:, 0, 1, 0]).tolist())


def test_validation_split_is_disjoint_from_every_training_subset(tmp_path):
  path = os.path.join(tmp_path, "ids.npz")
  _write_id_npz(path)
  config = smoke.get_config()
  config.data.update(
    dict(
      source="npz",
      path=path,
      image_size=8,
      channels=1,
      validation_fraction=0.2,
      split_seed=3,
      num_classes=4,
    )
  )
  config.evaluation.max_examples = None
  validation = None
  for size in (0, 60, 100):
    config.data.train_examples = size
    data = input_pipeline.numpy_files.load_arrays(
      input_pipeline.spec.resolve_spec(config.data)
    )
    train_ids = _ids(data.splits["train"].images)
    val_ids = _ids(data.splits["validation"].images)
    assert len(val_ids) == 40 and not train_ids & val_ids
    assert validation is None or val_ids == validation  # one carve
    validation = val_ids
    assert len(train_ids) == (size or 160)
  config.evaluation.split = "validation"
  images, _ = evaluation.evaluation_subset(
    config, 10, seed=5, split="validation"
  )
  assert _ids(images) <= validation and len(_ids(images)) == 10
  rows = evaluation.evaluation_indices(config, 10, 5, "validation")
  assert rows.tolist() == sorted(
    np.random.default_rng(5).choice(40, 10, replace=False).tolist()
  )


def test_validation_split_needs_a_carve():
  config = smoke.get_config()
  config.evaluation.split = "validation"
  with pytest.raises(ValueError, match="validation_fraction"):
    config_validation.validate_config(config)


def test_one_image_set_for_every_cell_of_a_study():
  config = study_structure_sweep.get_config()
  config.study.seeds = (0, 1)
  seeds = set()
  for cell in study.cells(config.study):
    cfg = study.cell_config(config, cell)
    assert cfg.evaluation.image_seed == 2026
    assert cfg.evaluation.split == "validation"
    seeds.add(evaluation.image_seed(cfg))
  assert seeds == {2026}
  # Without study.image_seed each run seed draws its own (older studies).
  del config.study["image_seed"]
  cfg = study.cell_config(config, study.cells(config.study)[0])
  assert evaluation.image_seed(cfg) == cfg.seed


def test_indices_digest_is_the_sha256_of_int64_rows():
  import hashlib

  rows = np.array([3, 17, 250])
  assert (
    evaluation.indices_digest(rows)
    == hashlib.sha256(rows.astype("<i8").tobytes()).hexdigest()
  )
  assert evaluation.indices_digest([3, 17, 250]) != evaluation.indices_digest(
    [3, 17, 251]
  )


def test_provenance_names_the_commit_and_libraries():
  out = provenance.provenance()
  code = out["code"]
  assert code["commit"] is None or len(code["commit"]) == 40
  assert out["libraries"]["jax"] == jax.__version__
  assert out["libraries"]["optax"] == optax.__version__
  assert out["machine"]["backend"] == jax.default_backend()
  assert out["machine"]["device_count"] == jax.device_count()


def test_the_code_version_is_dirty_for_code_not_for_results(tmp_path):
  git = lambda *a: subprocess.run(
    ("git", "-c", "user.name=t", "-c", "user.email=t@t", *a),
    cwd=tmp_path,
    check=True,
    capture_output=True,
  )
  (tmp_path / "results").mkdir()
  (tmp_path / "results" / "RESULTS.md").write_text("a")
  (tmp_path / "code.py").write_text("a")
  git("init", "-q")
  git("add", ".")
  git("commit", "-q", "-m", "c")
  assert provenance.code_version(str(tmp_path))["dirty"] is False
  (tmp_path / "results" / "RESULTS.md").unlink()  # a study's own files
  (tmp_path / "untracked.py").write_text("b")
  assert provenance.code_version(str(tmp_path))["dirty"] is False
  (tmp_path / "code.py").write_text("b")
  out = provenance.code_version(str(tmp_path))
  assert out["dirty"] is True and len(out["commit"]) == 40


def _sweep_record(variant, certified, split="validation"):
  return dict(
    cell=f"{variant}__s0.90__seed9",
    variant=variant,
    sparsity=0.9,
    seed=9,
    certification=dict(
      semantic=dict(cc_cert={"1e-02": certified}),
      images=dict(split=split, sha256="0" * 64, indices=[0]),
    ),
  )


def test_the_sweep_rule_chooses_the_five_seed_setting(tmp_path, monkeypatch):
  from experiments.configs import study_structure

  candidates = study_structure_sweep.CANDIDATES
  scores = dict(zip(candidates, (0.20, 0.26, 0.22, 0.25, 0.21), strict=True))
  # A non-candidate certifying more does not compete.
  scores["csam_rand_f10"] = 0.40
  for name, cert in list(scores.items())[:-2]:
    storage.write_json(
      str(tmp_path / "cells" / f"{name}.json"), _sweep_record(name, cert)
    )
  with pytest.raises(ValueError, match="no record of"):
    study_structure.chosen_setting(str(tmp_path))
  for name in ("csam_swap_f10", "csam_rand_f10"):
    storage.write_json(
      str(tmp_path / "cells" / f"{name}.json"),
      _sweep_record(name, scores[name]),
    )
  assert study_structure.chosen_setting(str(tmp_path)) == "csam_f3"
  monkeypatch.setenv("CSAM_STRUCTURE_SWEEP_DIR", str(tmp_path))
  config = study_structure.get_config()
  study.validate_study(config.study)
  grid = study.cells(config.study)
  # The main pair on every seed first, then each other variant in turn.
  assert [c.id for c in grid[:3]] == [
    "csam_f3__s0.90__seed0",
    "csam_rho0__s0.90__seed0",
    "csam_f3__s0.90__seed1",
  ]
  assert [c.id for c in grid[10:12]] == [
    "hydra_aug__s0.90__seed0",
    "hydra_aug__s0.90__seed1",
  ]
  assert len(grid) == 7 * 5
  cfg = study.cell_config(config, grid[0])
  assert cfg.evaluation.split == "eval" and cfg.evaluation.image_seed == 2027
  storage.write_json(
    str(tmp_path / "cells" / "csam_f1.json"),
    _sweep_record("csam_f1", 0.5, split="eval"),
  )
  with pytest.raises(ValueError, match="not 'validation'"):
    study_structure.chosen_setting(str(tmp_path))
