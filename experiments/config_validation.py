"""Eager validation of the whole experiment config, before any compute.

Each error names the config field and its valid values.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

import csam_jax
from experiments import input_pipeline, models
from experiments.robustness import samplers
from experiments.training import methods, optimizers, parallel

SCOPES = ("global", "layer")
RADII = ("global", "layerwise")
SEARCH_INITS = ("percentile", "hydra", "magnitude")
FORWARD_MODES = ("soft", "ste")
HINGE_BN = ("running", "batch")
PERTURBATIONS = ("scores", "hard_swap")
EVALUATION_SPLITS = ("eval", "validation")
DIRECTIONS = ("gradient", "random")


def _choice(field: str, value: Any, valid: tuple) -> None:
  if value not in valid:
    raise ValueError(
      f"config.{field}={value!r} is invalid; valid values: {valid}."
    )


def _at_least(field: str, value: Any, minimum: float) -> None:
  if value is None or value < minimum:
    raise ValueError(f"config.{field}={value!r} must be >= {minimum}.")


def normalize_methods(value: Any) -> tuple[str, ...]:
  """Accepts a tuple/list of names or comma-joined names ("dense,csam").

  Example:
    >>> normalize_methods(("dense,csam",))
    ('dense', 'csam')
  """
  if isinstance(value, str):
    value = (value,)
  names = tuple(
    n.strip() for item in value for n in str(item).split(",") if n.strip()
  )
  if not names:
    raise ValueError(
      f"config.methods is empty; valid values: {methods.ALL_METHODS}."
    )
  for n in names:
    _choice("methods", n, methods.ALL_METHODS)
  if len(set(names)) != len(names):
    raise ValueError(f"config.methods has duplicates: {names}.")
  return names


def _check_pruning(config: ml_collections.ConfigDict) -> None:
  s = config.sparsity
  if not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
    raise ValueError(f"config.sparsity={s!r} must be in [0, 1).")
  _choice("scope", config.scope, SCOPES)
  try:  # The structure grammar and N:M / sparsity agreement live in csam_jax.
    csam_jax.topk_masks(
      {"w": jnp.ones((4, 8))}, s, scope=config.scope, structure=config.structure
    )
  except ValueError as e:
    raise ValueError(
      f"config.structure={config.structure!r} with config.sparsity={s}: {e} "
      'Valid: "unstructured", "channel" or "N:M" with sparsity 1 - N/M.'
    ) from e
  if "gmp" in config.methods and ":" in str(config.structure):
    raise ValueError(
      f"config.structure={config.structure!r} cannot be used with the gmp "
      "method: an N:M pattern has the fixed sparsity 1 - N/M, so it cannot "
      "be reached gradually. Remove gmp from config.methods or use "
      '"unstructured" / "channel".'
    )
  g = config.gmp
  if not 0.0 <= g.initial_sparsity <= s:
    raise ValueError(
      f"config.gmp.initial_sparsity={g.initial_sparsity} must be in "
      f"[0, config.sparsity={s}]."
    )
  if not 0.0 <= g.begin_fraction <= g.end_fraction <= 1.0:
    raise ValueError(
      "config.gmp needs 0 <= begin_fraction <= end_fraction <= 1, got "
      f"{g.begin_fraction}, {g.end_fraction}."
    )
  _at_least("gmp.update_every", g.update_every, 1)


def _check_perturbation(config: ml_collections.ConfigDict) -> None:
  c = config.search.csam
  _choice("search.csam.perturbation", c.perturbation, PERTURBATIONS)
  _choice("search.csam.direction", c.direction, DIRECTIONS)
  target = c.flip_target
  if isinstance(target, bool) or not 0.0 <= target < 1.0:
    raise ValueError(
      f"config.search.csam.flip_target={target!r} must be a fraction in [0, 1)."
    )
  if c.perturbation == "hard_swap":
    if target == 0.0:
      raise ValueError(
        "config.search.csam.perturbation='hard_swap' needs flip_target > 0 "
        "(the swapped fraction of kept entries)."
      )
    if config.structure != "unstructured":
      raise ValueError(
        "config.search.csam.perturbation='hard_swap' swaps single entries: "
        f"it needs config.structure='unstructured', got {config.structure!r}."
      )
  elif target > 0.0 and c.radius != "global":
    raise ValueError(
      "config.search.csam.flip_target > 0 chooses one global radius each "
      f"step: it needs search.csam.radius='global', got {c.radius!r}."
    )


def _check_search(config: ml_collections.ConfigDict) -> None:
  _at_least("sam.rho", config.sam.rho, 0.0)
  _choice("sam.radius", config.sam.radius, RADII)
  c = config.search.csam
  _at_least("search.csam.rho", c.rho, 0.0)
  _choice("search.csam.radius", c.radius, RADII)
  _choice("search.csam.init", c.init, SEARCH_INITS)
  _choice("search.csam.forward", c.forward, FORWARD_MODES)
  _choice("search.csam.hinge_bn", c.hinge_bn, HINGE_BN)
  _check_perturbation(config)
  for field in ("update_weights", "train_batchnorm"):
    if not isinstance(config.search[field], bool):
      raise ValueError(
        f"config.search.{field} must be True or False, got "
        f"{config.search[field]!r}."
      )
  augment = config.finetune.augment_variations
  if not isinstance(augment, bool):
    raise ValueError(
      f"config.finetune.augment_variations must be True or False, got "
      f"{augment!r}."
    )
  samplers.check_distribution("config.search.csam.distribution", c.distribution)
  if augment and c.distribution == "none":
    raise ValueError(
      "config.finetune.augment_variations=True needs input variations: set "
      "config.search.csam.distribution to 'semantic', a family or "
      "'corruptions'."
    )
  _choice("search.hydra.init", config.search.hydra.init, SEARCH_INITS)
  _choice("search.hydra.forward", config.search.hydra.forward, FORWARD_MODES)
  if not isinstance(config.search.hydra.rank_by_abs, bool):
    raise ValueError(
      "config.search.hydra.rank_by_abs must be True or False, got "
      f"{config.search.hydra.rank_by_abs!r}."
    )
  if c.tau is not None and not 0.0 <= c.tau <= 100.0:
    raise ValueError(
      f"config.search.csam.tau={c.tau} must be in [0, 100] or None."
    )
  for field in ("lam_cert", "lam_cons", "kappa"):
    _at_least(f"search.csam.{field}", c[field], 0.0)
  samplers.make_sampler(c.distribution, c.variations)


def _check_budget(config: ml_collections.ConfigDict) -> None:
  for section in ("pretrain", "search", "finetune"):
    _at_least(f"{section}.epochs", config[section].epochs, 0.0)
    _at_least(f"{section}.num_steps", config[section].num_steps, 0)
  for section in ("pretrain", "search", "gmp", "finetune"):
    try:
      optimizers.make_optimizer(config[section].optimizer, 1, 1)
    except ValueError as e:
      raise ValueError(f"config.{section}.optimizer: {e}") from e
  try:
    optimizers.make_optimizer(config.search.weight_optimizer, 1, 1)
  except ValueError as e:
    raise ValueError(f"config.search.weight_optimizer: {e}") from e
  _at_least("checkpoint.every_steps", config.checkpoint.every_steps, 0)
  _at_least("checkpoint.max_to_keep", config.checkpoint.max_to_keep, 1)
  _at_least("logging.log_every_steps", config.logging.log_every_steps, 1)


def _check_compression(config: ml_collections.ConfigDict) -> None:
  """The CrAM and SAFE sections (checked whatever the methods)."""
  c = config.cram
  _at_least("cram.rho", c.rho, 0.0)
  sparsities = tuple(c.sparsities)
  if not sparsities or not all(
    isinstance(s, (int, float)) and 0.0 <= s < 1.0 for s in sparsities
  ):
    raise ValueError(
      f"config.cram.sparsities={c.sparsities!r} must be a non-empty list of "
      "fractions in [0, 1)."
    )
  if "cram_plus" in config.methods and not any(
    math.isclose(s, config.sparsity) for s in sparsities
  ):
    raise ValueError(
      f"cram_plus trains at config.cram.sparsities={sparsities!r} but is "
      f"pruned to config.sparsity={config.sparsity!r}, which is not among "
      "them; add it (the reference's high-sparsity run trains at "
      "(0.5, 0.7, 0.8, 0.9, 0.95))."
    )
  s = config.safe
  _at_least("safe.lam", s.lam, 0.0)
  _at_least("safe.rho", s.rho, 0.0)
  _at_least("safe.dual_every", s.dual_every, 1)
  try:
    csam_jax.penalty_schedule(s.lam, s.schedule, 1)
  except ValueError as e:
    raise ValueError(f"config.safe.schedule: {e}") from e
  for name in ("cram", "safe"):
    _at_least(f"{name}.retune_batches", config[name].retune_batches, 0)
    _at_least(f"{name}.retune_variance", config[name].retune_variance, 0.0)
    try:
      optimizers.make_optimizer(config[name].optimizer, 1, 1)
    except ValueError as e:
      raise ValueError(f"config.{name}.optimizer: {e}") from e


def _check_robustness(config: ml_collections.ConfigDict) -> None:
  # Imported here: the robustness modules are only needed when enabled.
  if config.certify.enabled:
    from experiments.robustness import certification

    certification.validate_certify_config(config.certify)
  flat = config.get("flatness")
  if flat is not None and flat.enabled:
    from experiments.robustness import certification, flatness

    flatness.validate(flat)
    certification.validate_certify_config(config.certify)
  if config.corruptions.enabled:
    from experiments.robustness import corruption_eval

    corruption_eval.validate_corruptions_config(config.corruptions)
    if config.data.channels != 3:
      raise ValueError(
        "config.corruptions.enabled=True needs RGB images (CIFAR-10-C "
        f"corruptions), but config.data.channels={config.data.channels}; "
        "set config.data.channels=3 or config.corruptions.enabled=False."
      )


def _check_model_masks(config, info) -> None:
  """Builds the model abstractly (no compute) and checks that its kernels
  admit the configured sparsity structure."""
  module = models.from_config(config.model, info.num_classes)
  x = jax.ShapeDtypeStruct((1, *info.image_shape), jnp.float32)
  variables = jax.eval_shape(
    lambda x: module.init(jax.random.PRNGKey(0), x, train=False), x
  )

  def hard(params):
    keep = csam_jax.prunable(params)
    scores = jax.tree.map(lambda w, k: w if k else None, params, keep)
    return csam_jax.topk_masks(
      scores, config.sparsity, scope=config.scope, structure=config.structure
    )

  try:
    jax.eval_shape(hard, variables["params"])
  except ValueError as e:
    raise ValueError(
      f"config.structure={config.structure!r} does not fit "
      f"{config.model.name}: {e}"
    ) from e


def _check_data(
  config: ml_collections.ConfigDict,
) -> input_pipeline.DatasetInfo:
  input_pipeline.validate_data_config(config.data)
  parallel.check_batch_size(config.batch_size, "batch_size")
  parallel.check_batch_size(
    config.evaluation.batch_size, "evaluation.batch_size"
  )
  try:
    info = input_pipeline.get_info(config.data)
  except ValueError as e:
    raise ValueError(
      f"config.data (num_classes={config.data.num_classes}): {e}"
    ) from e
  if config.data.num_classes and config.data.num_classes != info.num_classes:
    raise ValueError(
      f"config.data.num_classes={config.data.num_classes} but the dataset has "
      f"{info.num_classes} classes."
    )
  _check_evaluation_split(config, info)
  if config.batch_size > info.num_examples["train"]:
    raise ValueError(
      f"config.batch_size={config.batch_size} exceeds the "
      f"{info.num_examples['train']} training examples."
    )
  return info


def _check_evaluation_split(config, info) -> None:
  ev = config.evaluation
  _choice("evaluation.split", ev.get("split", "eval"), EVALUATION_SPLITS)
  seed = ev.get("image_seed")
  if seed is not None and (isinstance(seed, bool) or not seed >= 0):
    raise ValueError(
      f"config.evaluation.image_seed={seed!r} must be an int >= 0 or None."
    )
  if ev.get("split") == "validation" and "validation" not in info.num_examples:
    raise ValueError(
      "config.evaluation.split='validation' needs a validation split: set "
      "config.data.validation_fraction > 0."
    )


def validate_config(
  config: ml_collections.ConfigDict,
) -> input_pipeline.DatasetInfo:
  """Checks every field; normalises ``config.methods`` to a tuple.

  Args:
    config: the experiment config (modified in place: methods normalised).

  Returns:
    The dataset's DatasetInfo (computed while checking num_classes).

  Raises:
    ValueError: the first invalid field, named with its valid values.
  """
  config.methods = normalize_methods(config.methods)
  _choice("model.name", config.model.name, models.MODELS)
  _choice("model.stem", config.model.stem, models.STEMS)
  _choice("model.dtype", config.model.dtype, models.DTYPES)
  if not config.model.width > 0:
    raise ValueError(f"config.model.width={config.model.width} must be > 0.")
  _check_pruning(config)
  _check_search(config)
  _check_budget(config)
  _check_compression(config)
  _check_robustness(config)
  info = _check_data(config)
  _check_model_masks(config, info)
  return info


def upgrade_config_dict(config_dict: dict[str, Any]) -> dict[str, Any]:
  """A stored config (config.json) in today's shape: renamed fields moved.

  Work directories, exports and study cells written before the sampler
  sections were unified hold ``certify.semantic``,
  ``certify.corruptions.{names,severities}`` and
  ``search.csam.variations.kind``; they become ``certify.variations``
  (with ``corruption_names`` / ``corruption_severities``) and
  ``search.csam.distribution`` (the training corruption kind drew every
  corruption and severity), values kept. Those written before the one
  vocabulary hold ``search.csam.variation_kind``: it becomes
  ``search.csam.distribution``. Fields of today's shape are left as they
  are.

  Example:
    >>> old = {"certify": {"semantic": {"ranges": {"brightness": 0.1}},
    ...   "corruptions": {"names": [], "severities": [1, 2]}},
    ...   "search": {"csam": {"variations": {"kind": "none"}}}}
    >>> new = upgrade_config_dict(old)
    >>> new["certify"]["variations"]["corruption_severities"]
    [1, 2]
    >>> new["search"]["csam"]["distribution"]
    'none'
    >>> upgrade_config_dict({"search": {"csam": {"variation_kind": "gamma"}}})
    {'search': {'csam': {'distribution': 'gamma'}}}
  """
  out = copy.deepcopy(config_dict)
  certify = out.get("certify") or {}
  if "semantic" in certify:
    variations = certify.pop("semantic")
    corruptions = certify.pop("corruptions", None) or {}
    variations["corruption_names"] = list(corruptions.get("names") or [])
    variations["corruption_severities"] = list(
      corruptions.get("severities") or [1, 2, 3, 4, 5]
    )
    certify["variations"] = variations
  csam = (out.get("search") or {}).get("csam") or {}
  variations = csam.get("variations") or {}
  if "kind" in variations:
    csam["distribution"] = variations.pop("kind")
    variations.setdefault("corruption_names", [])
    variations.setdefault("corruption_severities", [1, 2, 3, 4, 5])
  if "variation_kind" in csam:
    csam["distribution"] = csam.pop("variation_kind")
  return out


def stored_config(config_dict: dict[str, Any]) -> dict[str, Any]:
  """A stored config (the config.json of a run, an export or a study cell)
  in today's full shape, the one upgrade path for older runs: renamed
  fields moved (`upgrade_config_dict`), then every field it predates set to
  today's default (the run behaved as that default). Free-form mappings
  (variation ranges) stay as stored: a key missing there means something.

  Example:
    >>> from experiments.configs import default
    >>> old = json.loads(default.get_config().to_json())
    >>> del old["search"]["hydra"]["rank_by_abs"]
    >>> stored_config(old)["search"]["hydra"]["rank_by_abs"]
    False
  """
  # Imported here: the configs import modules that import this one.
  from experiments.configs import default

  defaults = json.loads(default.get_config().to_json())
  return _with_defaults(upgrade_config_dict(config_dict), defaults)


def _with_defaults(stored: dict, defaults: dict) -> dict:
  out = dict(stored)
  for key, value in defaults.items():
    if key not in out:
      out[key] = copy.deepcopy(value)
    elif key != "ranges" and isinstance(value, dict):
      if isinstance(out[key], dict):
        out[key] = _with_defaults(out[key], value)
  return out
