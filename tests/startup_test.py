"""Start-up: GMP compiles its mask update once; the first stage's step,
compiled ahead from shapes, is the program ``stage.step`` runs; the
persistent compilation cache gives bitwise-identical reruns; the timing
fields of results.json; the initialisation PRNG."""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import pytest

from experiments import config_validation, entry, input_pipeline
from experiments.configs import smoke
from experiments.training import methods, parallel, stages, train
from experiments.training import state as state_lib

TIMING = (
  "wall_time_s",
  "time_to_first_step_s",
  "compile_time_s",
  "steps_per_second",
  "time",
)


def test_gmp_mask_update_compiles_once(tmp_path):
  config = smoke.get_config()
  config.methods = ("gmp",)
  config.search.num_steps = 8  # the gmp stage: 8 steps, updates at 0..6
  config.gmp.end_fraction = 0.75
  config.checkpoint.enabled = False
  config.evaluation.every_stage = False
  info = config_validation.validate_config(config)
  ctx = train.make_context(config, str(tmp_path), info)
  state = train.run_method(ctx, "gmp").state
  spec = methods.get_recipe("gmp")[1]
  assert spec.kind == "gmp"
  params = state.params
  counts = {
    int(stages.gmp_num_pruned(params, s, config))
    for s in (stages.gmp_sparsity(t, 8, config) for t in range(8))
    if s is not None
  }
  assert len(counts) == 7  # seven different sparsities ...
  hook = ctx.stages[spec].hook
  assert hook.update._cache_size() == 1  # ... one program
  # The finalized (static-count) mask holds exactly round(0.8 * n) zeros.
  flat = np.concatenate([np.ravel(m) for m in jax.tree.leaves(state.masks)])
  assert (flat == 0).sum() == round(0.8 * flat.size)


@pytest.mark.parametrize("method", ["csam", "gmp"])
def test_step_compiled_ahead_matches_the_jitted_step(tmp_path, method):
  config = smoke.get_config()
  config.methods = (method,)
  info = config_validation.validate_config(config)
  ctx = train.make_context(config, str(tmp_path), info)
  recipe = methods.get_recipe(method)
  templates = train._templates(ctx, recipe)
  assert len(templates) == len(recipe) + 1
  # The first begin, compiled from the initial state's template.
  key0 = ctx.keys.stages[recipe[0].role]
  begin = train._compile_in_thread(
    ctx.stages[recipe[0]].begin, templates[0], key0
  ).result()
  init = train.init_state(ctx)
  want = ctx.stages[recipe[0]].begin(init, key0)
  got = begin(init, key0)  # raises on any shape/sharding mismatch
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The last stage too: its template is the state after all earlier begins.
  for i in (0, len(recipe) - 1):
    spec = recipe[i]
    compiled = train._compile_ahead(ctx, spec, templates[i + 1]).result()
    state = train.init_state(ctx)
    for earlier in recipe[: i + 1]:
      state = ctx.stages[earlier].begin(state, ctx.keys.stages[earlier.role])
    local = next(
      input_pipeline.train_batches(
        config.data, batch_size=config.batch_size, seed=0, normalize=False
      )
    )
    shapes = input_pipeline.train_batch_shapes(info, config.batch_size)
    assert {k: (v.shape, v.dtype) for k, v in local.items()} == shapes
    batch = parallel.global_batch(local, ctx.mesh)
    want = ctx.stages[spec].step(state, batch)
    got = compiled(state, batch)  # raises on any shape/sharding mismatch
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _run(run_main, workdir, cache_dir, *args):
  proc = run_main(
    "--config=experiments/configs/smoke.py",
    f"--workdir={workdir}",
    f"--config.compilation_cache_dir={cache_dir}",
    "--config.methods=dense,gmp",
    "--config.search.num_steps=3",
    *args,
    timeout=400,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    metrics = [json.loads(line) for line in f]
  return proc.stderr, results, metrics


def _without_timing(tree):
  if isinstance(tree, dict):
    return {k: _without_timing(v) for k, v in tree.items() if k not in TIMING}
  if isinstance(tree, list):
    return [_without_timing(v) for v in tree]
  return tree


def _cache_line(stderr):
  match = re.search(
    r"Done in .*\((\d+) programs, (\d+) from the persistent cache\)", stderr
  )
  assert match, stderr[-2000:]
  return int(match.group(1)), int(match.group(2))


def test_cached_rerun_is_bitwise_identical_and_reports_timing(
  tmp_path, run_main
):
  cache = tmp_path / "jax_cache"
  err1, res1, met1 = _run(run_main, tmp_path / "cold", cache)
  assert os.listdir(cache)  # the first run filled the cache
  err2, res2, met2 = _run(run_main, tmp_path / "warm", cache)
  programs, hits = _cache_line(err2)
  assert hits > 0 and hits >= programs // 2, (programs, hits)
  # Every logged loss and accuracy, clean accuracy, sparsity: bit for bit.
  assert _without_timing(met2) == _without_timing(met1)
  assert _without_timing(res2["runs"]) == _without_timing(res1["runs"])
  assert "compilation_cache_dir" in res1["config"]
  for run in res1["runs"] + res2["runs"]:
    assert run["time_to_first_step_s"] > 0 and run["compile_time_s"] > 0
    for record in run["stages"]:
      assert record["compile_time_s"] >= 0
      if record["steps"]:
        assert record["time_to_first_step_s"] > 0
      else:
        assert record["time_to_first_step_s"] is None
  assert "[gmp/gmp] first training step started" in err1
  # Another cache directory resumes the same work directory (the field is
  # not part of the config comparison); no cache at all too.
  err3, res3, _ = _run(run_main, tmp_path / "warm", "")
  assert "Persistent compilation cache: off" in err3
  assert "dense: finished earlier" in err3
  assert _without_timing(res3["runs"]) == _without_timing(res2["runs"])


def test_default_cache_dir_and_bad_values(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert entry.default_cache_dir() == os.path.join(
    str(tmp_path), "csam_jax", "jax_cache"
  )
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert entry.default_cache_dir() == os.path.join(
    os.path.expanduser("~"), ".cache", "csam_jax", "jax_cache"
  )
  assert entry.setup_compilation_cache("") is None
  with pytest.raises(ValueError, match="config.compilation_cache_dir"):
    entry.setup_compilation_cache(3)
  assert smoke.get_config().compilation_cache_dir is None  # the default


def test_init_key_is_derived_from_the_run_key():
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(state_lib.init_key(key, "threefry"), key)
  a, b = state_lib.init_key(key, "rbg"), state_lib.init_key(key, "rbg")
  np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
  other = state_lib.init_key(jax.random.PRNGKey(8), "rbg")
  assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(other))
  np.testing.assert_array_equal(
    jax.random.key_data(a), jax.random.bits(key, (4,), np.uint32)
  )
  assert str(jax.random.key_impl(state_lib.init_key(key, "unsafe_rbg"))) == (
    "unsafe_rbg"
  )
  with pytest.raises(ValueError, match="config.model.init_prng"):
    state_lib.init_key(key, "philox")
  assert smoke.get_config().model.init_prng == "rbg"
