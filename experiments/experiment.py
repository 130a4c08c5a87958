"""The whole experiment: every configured method, trained and evaluated.

Work directory layout (``<workdir>``):

  config.json        the config of the run (resume is refused for another)
  checkpoints/       orbax checkpoints, one directory per stage run
  runs/<method>.json the run entry of each finished method (reused on resume)
  metrics.jsonl      training metrics, one JSON object per logged step
  tensorboard/       TensorBoard event files, one run per method
  results.json       {"config": ..., "runs": [entry, ...]}
  results.md         the results table
  *.png              plots (experiments.reports.plots, when present)

Only process 0 writes files other than checkpoints.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jax
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from experiments import config_validation, keys, run_artifacts, storage
from experiments.robustness import (
  certification,
  corruption_eval,
  evaluation,
  flatness,
)
from experiments.training import logging_utils, methods, parallel, train
from experiments.training import state as state_lib

# Fields that may change between a run and its resume (the compilation
# cache changes only how fast programs are obtained, not what they compute).
_VOLATILE = ("overwrite", "logging", "compilation_cache_dir")
_OUTPUTS = (
  "checkpoints",
  "runs",
  "tensorboard",
  "metrics.jsonl",
  "results.json",
  "results.md",
  "config.json",
)


PERTURBATION_METRICS = ("perturbation_radius", "loss_increase", "grad_cosine")


def _comparable(config_dict: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in config_dict.items() if k not in _VOLATILE}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """Dotted fields in which a stored config differs from a new one.

  The stored one is read through `config_validation.stored_config` (the
  old run behaved as the default of a field it predates; a missing key of
  a free-form mapping such as the variation ranges still differs).
  Volatile fields (`_VOLATILE`) never differ.

  Example:
    >>> from experiments.configs import default
    >>> new = json.loads(default.get_config().to_json())
    >>> old = json.loads(default.get_config().to_json())
    >>> del old["search"]["hydra"]["rank_by_abs"]
    >>> old["sparsity"] = 0.5
    >>> differing_fields(old, new)
    ['sparsity']
  """
  old = config_validation.stored_config(old)
  new_flat, old_flat = _flat(_comparable(new)), _flat(_comparable(old))
  return sorted(
    k
    for k in set(new_flat) | set(old_flat)
    if new_flat.get(k) != old_flat.get(k)
  )


def prepare_workdir(workdir: str, config_dict: dict[str, Any], overwrite: bool):
  """Resumes a run of the same config, refuses another unless overwrite.

  Args:
    workdir: the work directory.
    config_dict: the config as a JSON-able dict.
    overwrite: delete the outputs of a previous run first.

  Raises:
    FileExistsError: the directory holds outputs of another config (or of
      unknown origin) and ``overwrite`` is False.
  """
  chief = jax.process_index() == 0
  path = storage.path(workdir, "config.json")
  existing = [p for p in _OUTPUTS if storage.path(workdir, p).exists()]
  if existing and overwrite:
    logging.warning("overwrite=True: deleting %s in %s", existing, workdir)
    if chief:
      for p in existing:
        full = storage.path(workdir, p)
        full.rmtree() if full.is_dir() else full.unlink()
  elif existing:
    old = None
    if path.exists():
      # Stored before a field was renamed: compared in today's shape.
      old = storage.read_json(path)
    diff = (
      ["config.json"] if old is None else differing_fields(old, config_dict)
    )
    if diff:
      raise FileExistsError(
        f"Work directory {workdir!r} holds results of a different run "
        f"(differing fields: {diff[:10]}). Pass --config.overwrite=True to "
        "delete them, or choose another --workdir."
      )
    logging.info("Resuming the run in %s", workdir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("prepare_workdir")
  if chief:
    storage.path(workdir, "runs").mkdir(parents=True, exist_ok=True)
    storage.write_json(path, config_dict, indent=2)


def _local_state(state: state_lib.TrainState) -> state_lib.TrainState:
  """The trained state on this process's first device (multi-process)."""
  if jax.process_count() > 1:
    local = jax.local_devices()[0]
    state = jax.device_put(
      state.replace(
        params=parallel.to_host(state.params),
        masks=parallel.to_host(state.masks),
        batch_stats=parallel.to_host(state.batch_stats),
        opt_state=None,
      ),
      local,
    )
  return state


def _local_logits_fn(ctx: train.Context, state: state_lib.TrainState):
  """Logits function of the deployed model on this process's devices."""
  return evaluation.make_logits_fn(ctx.model, _local_state(state), ctx.config)


def _flatness(ctx: train.Context, state: state_lib.TrainState) -> dict:
  """The structural-flatness diagnostic on the certified image set."""
  config = ctx.config
  t0 = time.time()
  images, labels = evaluation.evaluation_subset(
    config,
    config.certify.num_images,
    evaluation.image_seed(config),
    evaluation.evaluation_split(config),
  )
  run_keys = keys.run_keys(int(config.seed))
  out = flatness.structural_flatness(
    config,
    ctx.model,
    _local_state(state),
    images,
    labels,
    run_keys.flatness,
    run_keys.certification,
  )
  out["wall_time_s"] = time.time() - t0
  logging.info("flatness diagnostic done in %.1fs", out["wall_time_s"])
  return out


def _robustness(ctx, state) -> dict[str, Any]:
  """Certification and corruption results of a trained state."""
  config = ctx.config
  if not (
    config.certify.get("enabled", False)
    or config.corruptions.get("enabled", False)
  ):
    return {}  # nothing to evaluate: no local copy of the state needed
  return evaluate_robustness(config, _local_logits_fn(ctx, state))


def evaluate_robustness(
  config: ml_collections.ConfigDict, logits_fn: Any
) -> dict[str, Any]:
  """Certification and corruption results (when enabled).

  Every method gets the same keys (common random numbers: the methods are
  compared on the same variation draws, whichever methods are run);
  certification and corruption evaluation get keys of their own. Both run
  on a seeded random subset of the evaluation split, the same for every
  method; the corruption evaluation gets its rows, so that the TFDS
  ``cifar10_corrupted`` source reads the same images. Also used by
  ``experiments.certify_model`` for models certified outside a run.

  Args:
    config: the experiment config.
    logits_fn: ``logits_fn(images01) -> logits`` of the deployed model.

  Returns:
    ``{"certification": ..., "corruptions": ...}`` (the enabled ones).
  """
  out = {}
  seed = int(config.seed)
  images_seed = evaluation.image_seed(config)
  split = evaluation.evaluation_split(config)
  if config.certify.get("enabled", False):
    t0 = time.time()
    num_images = config.certify.num_images
    images, labels = evaluation.evaluation_subset(
      config, num_images, images_seed, split
    )
    out["certification"] = certification.certify(
      config.certify,
      keys.run_keys(seed).certification,
      logits_fn,
      images,
      labels,
    )
    out["certification"]["images"] = _image_set(
      config, num_images, images_seed, split
    )
    logging.info("certification done in %.1fs", time.time() - t0)
  if config.corruptions.get("enabled", False):
    t0 = time.time()
    num_images = config.corruptions.num_images
    images, labels = evaluation.evaluation_subset(
      config, num_images, images_seed
    )
    out["corruptions"] = corruption_eval.evaluate_corruptions(
      config.corruptions,
      keys.run_keys(seed).corruptions,
      logits_fn,
      images,
      labels,
      indices=evaluation.evaluation_indices(config, num_images, images_seed),
    )
    logging.info("corruptions done in %.1fs", time.time() - t0)
  return out


def _image_set(config, num_images: int, seed: int, split: str) -> dict:
  """Which images were certified: the rule, the rows and their digest."""
  rows = evaluation.evaluation_indices(config, num_images, seed, split)
  return dict(
    split=split,
    seed=seed,
    rule="numpy.random.default_rng(seed).choice(split size, n, "
    "replace=False), sorted",
    indices=[int(i) for i in rows],
    sha256=evaluation.indices_digest(rows),
  )


def method_entry(
  ctx: train.Context,
  method: str,
  run: train.MethodRun,
  t0: float,
  compile0: logging_utils.CompileTotals,
) -> dict[str, Any]:
  """The run entry of a trained method: accuracies, certificates, times.

  Args:
    ctx: the shared context.
    method: the method.
    run: its final state, stage records and first-step time.
    t0: wall-clock start of the method in this session.
    compile0: compilation totals at ``t0``.
  """
  config = ctx.config
  state, records, first_step = run
  entry = dict(
    method=method,
    model=config.model.name,
    dataset=(
      f"{config.data.source}:{config.data.name}"
      if config.data.name
      else config.data.source
    ),
    sparsity=float(config.sparsity) if methods.prunes(method) else 0.0,
    sparsity_reached=evaluation.sparsity_reached(state, config),
    seed=int(config.seed),
    clean_accuracy=evaluation.evaluate_accuracy(
      ctx.model,
      state,
      config,
      ctx.mesh,
      split=evaluation.evaluation_split(config),
      cache=ctx.cache,
    ),
    wall_time_s=sum(r["wall_time_s"] for r in records),
    # This session: from the method's start (model initialisation
    # included) to the start of its first training step (compiled and
    # dispatched; None when every stage was already done).
    time_to_first_step_s=None if first_step is None else first_step - t0,
    stages=records,
  )
  if methods.searches_with(method, "csam"):
    # How much of the kept mask C-SAM's perturbation flips (search stage).
    means = run_artifacts.stage_summary(records, "search").get("means", {})
    entry["flip_fraction"] = means.get("flip_fraction")
    entry["flip_fraction_per_layer"] = {
      k.removeprefix("flip/"): v
      for k, v in means.items()
      if k.startswith("flip/")
    }
    # What the ascent step did (means over the search steps; absent
    # without a perturbation): ||C' - C||, L(C') - L(C), cos(g(C'), g(C)).
    entry["perturbation"] = {
      k: means[k] for k in PERTURBATION_METRICS if k in means
    } or None
  entry.update(_robustness(ctx, state))
  if config.flatness.enabled and methods.prunes(method):
    entry["flatness"] = _flatness(ctx, state)
  entry["compile_time_s"] = (
    logging_utils.compile_totals().since(compile0).seconds
  )
  logging.info(
    "%s: clean accuracy %.4f, sparsity %.4f (%.1fs this session)",
    method,
    entry["clean_accuracy"],
    entry["sparsity_reached"],
    time.time() - t0,
  )
  return entry


def _write_results(workdir: str, config_dict: dict, runs: list) -> None:
  # Imported on first use: the report code (matplotlib, certification and
  # corruption tables) is not needed before training starts.
  from experiments.reports import run_report

  run_report.write_results(workdir, config_dict, runs)


def run(
  config: ml_collections.ConfigDict,
  workdir: str,
  shared_dir: str | None = None,
) -> dict[str, Any]:
  """Validates the config, trains and evaluates every method, reports.

  Args:
    config: the experiment config.
    workdir: the work directory (created if needed; local or a bucket).
    shared_dir: where the shared pretraining keeps its checkpoints
      (default ``<workdir>/checkpoints``; a study shares one per seed).

  Returns:
    ``{"config": ..., "runs": [entry, ...]}`` as written to results.json.

  Raises:
    ValueError: an invalid config field (before any compute).
    FileExistsError: the work directory holds another config's results.
    train.NonFiniteLossError: a NaN/Inf training loss.
  """
  t0, compile0 = time.time(), logging_utils.compile_totals()
  info = config_validation.validate_config(config)
  config_dict = json.loads(config.to_json())
  storage.path(workdir).mkdir(parents=True, exist_ok=True)
  prepare_workdir(workdir, config_dict, bool(config.overwrite))
  ctx = train.make_context(config, workdir, info, shared_dir)
  runs, first_step_logged = [], False
  for method in config.methods:
    path = storage.path(workdir, "runs", f"{method}.json")
    if path.exists():
      runs.append(storage.read_json(path))
      logging.info("%s: finished earlier, reusing %s", method, path)
      continue
    started, compile_start = time.time(), logging_utils.compile_totals()
    run = train.run_method(ctx, method)
    entry = method_entry(ctx, method, run, started, compile_start)
    if run.first_step_time is not None and not first_step_logged:
      first_step_logged = True
      logging.info(
        "First training step of this session %.1fs after the experiment start",
        run.first_step_time - t0,
      )
    runs.append(entry)
    if jax.process_index() == 0:
      storage.write_json(path, entry, indent=2)
      _write_results(workdir, config_dict, runs)
    ctx.writer.flush()
  if jax.process_index() == 0:
    _write_results(workdir, config_dict, runs)
  compiled = logging_utils.compile_totals().since(compile0)
  logging.info(
    "Done in %.1fs; compilation %.1fs (%d programs, %d from the persistent "
    "cache)",
    time.time() - t0,
    compiled.seconds,
    compiled.compilations,
    compiled.cache_hits,
  )
  return {"config": config_dict, "runs": runs}
