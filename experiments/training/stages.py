"""Stages: what a declared stage (experiments/training/methods.py) does, built.

`build` turns a `methods.StageSpec` into a `Stage`: ``begin`` (new masks /
optimizer state), ``step`` (one training step), ``finalize`` (hard masks)
and an optional per-step ``hook`` (GMP's mask schedule), each jitted and
pure; the loop that drives them (experiments/training/train.py) knows no method.

  ===========  ==============================================  ============
  spec.kind    step                                            hook
  ===========  ==============================================  ============
  pretrain     `make_weight_step` (SAM when ``spec.sam``)      none
  prune        none (one-shot magnitude masks in ``begin``)    none
  gmp          `make_weight_step`                              `GmpSchedule`
  search       `make_search_step` (HYDRA or C-SAM objective)   none
  finetune     `make_weight_step` (SAM / variation
               augmentation when configured)                   none
  compression  `make_weight_step` with CrAM's / SAFE's update
               (experiments/training/compression.py; variation
               augmentation when configured)                   none
  retune       BN re-tuning forward pass (masks and reset
               statistics in ``begin``)                        none
  ===========  ==============================================  ============

BatchNorm under SAM and C-SAM: the running statistics written into
``TrainState.batch_stats`` come from the clean forward pass at the
unperturbed point only. The gradient at the perturbed point (``grad_fn`` of
``csam_jax.csam_transform``) and the pass on transformed inputs discard their
statistics updates. Under ``jax.jit`` with a data-sharded batch the mean
losses are already global, so ``csam_transform`` needs no
``batch_axis_name``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import csam_jax
from experiments import keys
from experiments.robustness.samplers import Sampler
from experiments.training import compression, losses, methods, optimizers
from experiments.training import state as state_lib
from experiments.training.methods import StageSpec

PyTree = Any
StepFn = Callable[
  [state_lib.TrainState, dict], tuple[state_lib.TrainState, dict]
]
BeginFn = Callable[[state_lib.TrainState, jax.Array], state_lib.TrainState]
HookFn = Callable[[state_lib.TrainState, int], state_lib.TrainState]


class Stage(NamedTuple):
  """A built stage: its jitted functions and its length.

  Attributes:
    spec: the declaration it was built from.
    num_steps: training steps of the stage (0 for one-shot pruning).
    begin: ``(state, key) -> state`` sets masks, optimizer state, step 0 and
      the stage key.
    step: ``(state, batch) -> (state, metrics)`` one training step (None for
      one-shot pruning).
    finalize: ``state -> state`` at the end of the stage (hard masks).
    hook: ``(state, t) -> state`` run before step ``t`` (host code calling
      jitted functions), or None.
  """

  spec: StageSpec
  num_steps: int
  begin: BeginFn
  step: StepFn | None
  finalize: Callable[[state_lib.TrainState], state_lib.TrainState]
  hook: HookFn | None = None


def all_finite(tree: PyTree) -> jax.Array:
  """True when every entry of every leaf is finite (NaN/Inf check).

  One reduction over the floating leaves concatenated (integer leaves are
  always finite): a reduction per leaf compiles to a fusion per leaf, about
  a quarter of a GoogLeNet training step's XLA compilation on the CPU.

  >>> import numpy as np
  >>> bool(all_finite({"w": jnp.ones(3), "n": jnp.arange(2), "z": None}))
  True
  >>> bool(all_finite([jnp.ones(2), jnp.array([1.0, np.inf], jnp.bfloat16)]))
  False
  """
  leaves = [
    jnp.ravel(x)
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  if not leaves:
    return jnp.array(True)
  return jnp.all(jnp.isfinite(jnp.concatenate(leaves)))


def _magnitude_scores(params: PyTree, masks: PyTree) -> PyTree:
  """|w * m| on prunable kernels (|w| when masks is None), None elsewhere."""
  keep = csam_jax.prunable(params)
  scores = jax.tree.map(
    lambda w, k: jnp.abs(w).astype(jnp.float32) if k else None, params, keep
  )
  if masks is not None:
    scores = jax.tree.map(
      lambda s, m: None if m is None else s * m,
      scores,
      masks,
      is_leaf=lambda x: x is None,
    )
  return scores


def magnitude_masks(
  params: PyTree, masks: PyTree, config: ml_collections.ConfigDict, sparsity
) -> PyTree:
  """Hard masks keeping the largest |w * m| (|w| when masks is None)."""
  return csam_jax.topk_masks(
    _magnitude_scores(params, masks),
    sparsity,
    scope=config.scope,
    structure=config.structure,
  )


def gmp_num_pruned(
  params: PyTree, sparsity: float, config: ml_collections.ConfigDict
) -> np.ndarray:
  """The pruned counts of ``magnitude_masks`` at ``sparsity`` (host ints).

  Only the shapes of ``params`` are read. Passed to ``GmpSchedule.update``
  as an argument, they give the masks of ``magnitude_masks(..., sparsity)``
  bit for bit with one compilation for the whole schedule.
  """
  return csam_jax.topk_counts(
    jax.eval_shape(lambda p: _magnitude_scores(p, None), params),
    sparsity,
    scope=config.scope,
    structure=config.structure,
  )


def magnitude_masks_from_counts(
  params: PyTree, masks: PyTree, config: ml_collections.ConfigDict, num_pruned
) -> PyTree:
  """``magnitude_masks`` with a (traced) count from ``gmp_num_pruned``."""
  return csam_jax.topk_masks_from_counts(
    _magnitude_scores(params, masks),
    num_pruned,
    scope=config.scope,
    structure=config.structure,
  )


def hard_masks(masks: PyTree, config: ml_collections.ConfigDict) -> PyTree:
  """Top-k hard masks of (soft) masks at the configured sparsity."""
  if masks is None:
    return None
  return csam_jax.topk_masks(
    masks, config.sparsity, scope=config.scope, structure=config.structure
  )


def gmp_sparsity(
  step: int, num_steps: int, config: ml_collections.ConfigDict
) -> float | None:
  """Zhu & Gupta (2017) cubic schedule, or None when masks stay unchanged.

  ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3`` at the update steps
  ``t = t0, t0 + dt, ..., t0 + n dt`` where ``t0 = begin_fraction * T`` and
  ``n = ceil((end_fraction * T - t0) / dt)`` for a stage of ``T`` steps.

  Example:
    >>> from experiments.configs import default
    >>> cfg = default.get_config()
    >>> cfg.sparsity, cfg.gmp.update_every = 0.8, 2
    >>> cfg.gmp.begin_fraction, cfg.gmp.end_fraction = 0.0, 0.5
    >>> [None if s is None else round(s, 6)
    ...  for s in (gmp_sparsity(t, 8, cfg) for t in range(6))]
    [0.0, None, 0.7, None, 0.8, None]
  """
  g = config.gmp
  t0 = int(round(g.begin_fraction * num_steps))
  t_end = max(int(round(g.end_fraction * num_steps)), t0)
  dt = int(g.update_every)
  n = max(-(-(t_end - t0) // dt), 1)
  if step < t0 or (step - t0) % dt or step > t0 + n * dt:
    return None
  frac = 1.0 - (step - t0) / (n * dt)
  s_f, s_i = float(config.sparsity), float(g.initial_sparsity)
  return s_f + (s_i - s_f) * frac**3


def passes_per_step(config: ml_collections.ConfigDict, spec: StageSpec) -> int:
  """Forward (and backward) passes of the model in one step of ``spec``.

  A weight step is one pass, two under SAM (rho > 0: the gradient again at
  the perturbed weights) and under CrAM (at the compressed ascent point);
  a BN re-tuning step is one forward pass. A mask-search step evaluates its
  objective once, twice under C-SAM with rho > 0; C-SAM's objective is one
  clean pass plus, with the hinge (lam_cert > 0 and a variation kind), one
  pass on the varied inputs and, under ``hinge_bn="running"``, one more
  clean pass with the running statistics. One-shot pruning takes no step.

  Example:
    >>> from experiments.configs import default
    >>> cfg = default.get_config()
    >>> [passes_per_step(cfg, s) for s in methods.get_recipe("csam")]
    [1, 4, 1]
  """
  if spec.kind not in methods.STAGE_KINDS:
    raise ValueError(
      f"stage {spec.name!r}: unknown kind {spec.kind!r}; valid: "
      f"{methods.STAGE_KINDS}"
    )
  if spec.kind == "prune":
    return 0
  if spec.kind == "compression":
    return 2
  if spec.kind == "retune":
    return 1
  if spec.kind != "search":
    return 2 if spec.sam and config.sam.rho > 0 else 1
  if spec.algo == "hydra":
    return 1
  c = config.search.csam
  hinge = c.lam_cert > 0 and c.distribution != "none"
  objective = 1 + (hinge * (1 + (c.hinge_bn == "running")))
  return objective * (2 if perturbs(c) else 1)


def perturbs(csam: ml_collections.ConfigDict) -> bool:
  """Whether C-SAM's search perturbs the masks (a second objective pass).

  Example:
    >>> from experiments.configs import default
    >>> c = default.get_config().search.csam
    >>> perturbs(c), perturbs(ml_collections.ConfigDict(dict(c, rho=0.0)))
    (True, False)
  """
  return (
    csam.rho > 0
    or csam.get("flip_target", 0.0) > 0
    or csam.get("perturbation", "scores") == "hard_swap"
  )


def _weight_tx(config, spec: StageSpec, num_steps: int, steps_per_epoch: int):
  base = optimizers.make_optimizer(
    config[spec.optimizer].optimizer, num_steps, steps_per_epoch
  )
  if not spec.sam:
    return optax.with_extra_args_support(base)
  sam = csam_jax.csam_transform(config.sam.rho, radius=config.sam.radius)
  return optax.chain(sam, base)


def make_weight_step(model: state_lib.Model, tx) -> StepFn:
  """A training step of the weights (pretrain, gmp, finetune; SAM or not).

  With SAM (``tx`` containing ``csam_jax.csam_transform``) the gradient is
  taken at the perturbed weights; the batch_stats kept are those of the
  clean pass.

  Args:
    model: the model.
    tx: optax transformation accepting ``grad_fn`` (extra args).

  Returns:
    ``step(state, batch) -> (state, {"loss", "accuracy", "finite"})``;
    "finite" is False when the updated weights hold a NaN/Inf.
  """

  def step(state, batch):
    def loss_fn(params):
      return losses.weight_loss(
        params, model, state.masks, state.batch_stats, batch
      )

    (loss, (logits, new_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True
    )(state.params)

    def grad_fn(params, _):
      # Perturbed pass: its batch-norm statistics are discarded.
      return jax.grad(lambda p: loss_fn(p)[0])(params)

    updates, opt_state = tx.update(
      grads, state.opt_state, state.params, grad_fn=grad_fn
    )
    new_state = state.replace(
      params=optax.apply_updates(state.params, updates),
      batch_stats=new_stats,
      opt_state=opt_state,
      step=state.step + 1,
    )
    metrics = {
      "loss": loss,
      "accuracy": losses.accuracy(logits, batch["label"]),
      "finite": all_finite((new_state.params, new_state.masks)),
    }
    return new_state, metrics

  return step


def _search_settings(
  config, algo: str, sampler: Sampler | None
) -> losses.MaskObjective:
  cfg = config.search[algo]
  common = dict(
    forward=cfg.forward,
    sparsity=float(config.sparsity),
    scope=config.scope,
    structure=config.structure,
  )
  if algo == "hydra":
    return losses.MaskObjective(**common, rank_by_abs=cfg.rank_by_abs)
  return losses.MaskObjective(
    **common,
    lam_cert=float(cfg.lam_cert),
    lam_cons=float(cfg.lam_cons),
    kappa=float(cfg.kappa),
    sampler=sampler,
    hinge_bn=cfg.hinge_bn,
  )


def make_search_step(
  model: state_lib.Model,
  settings: losses.MaskObjective,
  mask_tx,
  weight_tx=None,
  *,
  log_flips: bool = False,
) -> StepFn:
  """A mask-search step (HYDRA or C-SAM); weights frozen unless weight_tx.

  C-SAM: ``mask_tx`` chains ``csam_jax.csam_transform`` (mask-space SAM) so
  the mask gradient is taken at the perturbed masks (same batch and input
  variations); the weights (joint mode) get their plain gradient at
  the unperturbed point. BatchNorm statistics come from the clean pass.

  Args:
    model: the model.
    settings: the objective's settings.
    mask_tx: optimizer of the masks (accepts ``grad_fn``).
    weight_tx: optimizer of the weights (joint mode) or None (frozen).
    log_flips: also return `flip_fractions` of the mask perturbation.

  Returns:
    ``step(state, batch) -> (state, {"loss", "accuracy", "cross_entropy",
    "finite"[, "flip_fraction", "flip/<leaf>"...]})``;
    in joint mode ``opt_state`` is ``(mask_state, weight_state)``.
  """

  def step(state, batch):
    key = jax.random.fold_in(state.key, state.step)

    def objective(masks, params):
      return losses.mask_objective(
        masks, params, model, state.batch_stats, batch, key, settings
      )

    (loss, (logits, new_stats, ce)), (g_masks, g_params) = jax.value_and_grad(
      objective, argnums=(0, 1), has_aux=True
    )(state.masks, state.params)

    perturbed = []  # the ascent point and its loss, when the tx asks

    def grad_fn(masks, _):
      value, grads = jax.value_and_grad(
        lambda m: objective(m, state.params)[0]
      )(masks)
      perturbed.append((masks, value, grads))
      return grads

    mask_state = state.opt_state if weight_tx is None else state.opt_state[0]
    updates, mask_state = mask_tx.update(
      g_masks, mask_state, state.masks, grad_fn=grad_fn
    )
    masks = optax.apply_updates(state.masks, updates)
    params, opt_state = state.params, mask_state
    if weight_tx is not None:
      w_updates, w_state = weight_tx.update(
        g_params, state.opt_state[1], state.params
      )
      params = optax.apply_updates(state.params, w_updates)
      opt_state = (mask_state, w_state)
    new_state = state.replace(
      params=params,
      masks=masks,
      batch_stats=new_stats,
      opt_state=opt_state,
      step=state.step + 1,
    )
    metrics = {
      "loss": loss,
      "cross_entropy": ce,
      "accuracy": losses.accuracy(logits, batch["label"]),
      "finite": all_finite((new_state.params, new_state.masks)),
    }
    if log_flips:
      point = perturbed[0][0] if perturbed else state.masks
      metrics.update(flip_fractions(state.masks, point, settings))
      if perturbed:
        metrics.update(
          perturbation_metrics(state.masks, loss, g_masks, *perturbed[0])
        )
    return new_state, metrics

  return step


def perturbation_metrics(masks, loss, grads, point, point_loss, point_grads):
  """What the ascent step did to the objective, per step.

  Returns:
    ``{"perturbation_radius": ||C' - C||, "loss_increase": L(C') - L(C),
    "grad_cosine": cos(g(C'), g(C))}`` for the ascent point ``C'``.
  """
  diff = jax.tree.map(jnp.subtract, point, masks)
  dot = sum(
    jnp.sum(a * b)
    for a, b in zip(
      jax.tree.leaves(grads), jax.tree.leaves(point_grads), strict=True
    )
  )
  norms = optax.tree.norm(grads) * optax.tree.norm(point_grads)
  return {
    "perturbation_radius": optax.tree.norm(diff),
    "loss_increase": point_loss - loss,
    "grad_cosine": dot / jnp.maximum(norms, 1e-30),
  }


def flip_fractions(masks, perturbed, settings: losses.MaskObjective):
  """Fraction of the kept entries of TopK(C) that TopK(C + e) drops.

  Under the STE forward the perturbation changes the loss only through the
  hard mask, so where ``TopK(C + e) == TopK(C)`` the perturbed gradient is
  the plain one: this measures whether C-SAM's perturbation does anything.

  Returns:
    ``{"flip_fraction": global, "flip/<leaf path>": per masked leaf}``
    (0 where ``rho = 0``: no perturbation).
  """
  topk = functools.partial(
    csam_jax.topk_masks,
    sparsity=settings.sparsity,
    scope=settings.scope,
    structure=settings.structure,
  )
  kept, kept_e = topk(masks), topk(perturbed)
  out, flipped_total, kept_total = {}, 0.0, 0.0
  for (path, k), k_e in zip(
    jax.tree_util.tree_leaves_with_path(kept),
    jax.tree.leaves(kept_e),
    strict=True,
  ):
    flipped = jnp.sum(k * (1.0 - k_e))
    count = jnp.sum(k)
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    out["flip/" + name] = flipped / jnp.maximum(count, 1.0)
    flipped_total, kept_total = flipped_total + flipped, kept_total + count
  out["flip_fraction"] = flipped_total / jnp.maximum(kept_total, 1.0)
  return out


def csam_mask_tx(
  config: ml_collections.ConfigDict, base, direction_key=None
) -> optax.GradientTransformationExtraArgs:
  """C-SAM's mask optimizer: the perturbation, ``base``, the projection.

  ``search.csam.perturbation``, ``flip_target`` and ``direction`` choose
  the perturbation (docs/method.md, "Structural perturbations"):

  ===========  ===========  =============================================
  perturbation flip_target  ascent point
  ===========  ===========  =============================================
  scores       0            C + rho g/||g|| (or the layerwise radius)
  scores       f > 0        C + rho_t g/||g||, rho_t such that TopK drops
                            f of the kept entries (flip_targeted_radius)
  hard_swap    f > 0        TopK(C) with f of each layer's kept entries
                            swapped along g (swap_transform)
  ===========  ===========  =============================================

  ``direction="random"`` puts `csam_jax.random_direction` first: a Gaussian
  direction in place of g, same radius or flip count (the noise control).
  Its key lives in the optimizer state (``direction_key``, set by the
  stage's ``begin``; any key builds a transformation with the same update).
  """
  c = config.search.csam
  topk = functools.partial(
    csam_jax.topk_masks,
    sparsity=float(config.sparsity),
    scope=config.scope,
    structure=config.structure,
  )
  if c.perturbation == "hard_swap":
    ascent = csam_jax.swap_transform(float(c.flip_target), topk)
  elif c.flip_target > 0:
    radius = csam_jax.flip_targeted_radius(float(c.flip_target), topk)
    ascent = csam_jax.csam_transform(radius)
  else:
    ascent = csam_jax.csam_transform(c.rho, radius=c.radius)
  parts = [ascent, base, csam_jax.project_unit_interval()]
  if c.direction == "random":
    key = jax.random.key(0) if direction_key is None else direction_key
    parts.insert(0, csam_jax.random_direction(key))
  return optax.chain(*parts)


def _search_stage(config, spec, model, num_steps, steps_per_epoch, sampler):
  """HYDRA or C-SAM: the masks trained, the weights frozen (or joint)."""
  cfg = config.search[spec.algo]
  base = optimizers.make_optimizer(
    config.search.optimizer, num_steps, steps_per_epoch
  )
  if spec.algo == "csam":
    mask_tx = csam_mask_tx(config, base)
  else:
    # HYDRA: plain optimizer on unconstrained scores (Sehwag et al. 2020).
    mask_tx = optax.with_extra_args_support(base)
  weight_tx = None
  if config.search.update_weights:
    weight_tx = optimizers.make_optimizer(
      config.search.weight_optimizer, num_steps, steps_per_epoch
    )
  elif config.search.train_batchnorm:
    # HYDRA's reference freezes weights and biases but not BatchNorm's
    # scale and bias, trained by the scores' optimizer.
    weight_tx = optax.multi_transform(
      {
        "batchnorm": optimizers.make_optimizer(
          config.search.optimizer, num_steps, steps_per_epoch
        ),
        "frozen": optax.set_to_zero(),
      },
      batchnorm_labels,
    )

  def begin(state, key):
    masks = csam_jax.init_masks(
      state.params,
      sparsity=config.sparsity,
      method=cfg.init,
      scope=config.scope,
      tau=cfg.get("tau"),
    )
    opt_state = mask_tx.init(masks)
    if spec.algo == "csam" and cfg.direction == "random":
      # The random direction's own stream: a named tag of the stage key.
      direction_key = jax.random.fold_in(key, keys.RANDOM_DIRECTION_PURPOSE)
      opt_state = csam_mask_tx(config, base, direction_key).init(masks)
    if weight_tx is not None:
      opt_state = (opt_state, weight_tx.init(state.params))
    return state.replace(
      masks=masks, opt_state=opt_state, step=jnp.zeros((), jnp.int32), key=key
    )

  settings = _search_settings(config, spec.algo, sampler)
  step = make_search_step(
    model, settings, mask_tx, weight_tx, log_flips=spec.algo == "csam"
  )
  rank_by_abs = spec.algo == "hydra" and cfg.rank_by_abs

  def finalize(state):
    ranked = jax.tree.map(jnp.abs, state.masks) if rank_by_abs else state.masks
    return state.replace(masks=hard_masks(ranked, config))

  return Stage(spec, num_steps, begin, step, finalize)


def _prune_stage(config, spec) -> Stage:
  """One-shot magnitude pruning: masks in ``begin``, no step."""

  def begin(state, key):
    masks = magnitude_masks(state.params, None, config, config.sparsity)
    return state.replace(
      masks=masks, opt_state=None, step=jnp.zeros((), jnp.int32), key=key
    )

  return Stage(spec, 0, begin, None, lambda s: s)


class GmpSchedule(NamedTuple):
  """GMP's per-step hook: magnitude masks at the cubic schedule's steps.

  Attributes:
    config: the experiment config.
    num_steps: steps of the stage.
    update: jitted ``(state, num_pruned) -> state`` recomputing magnitude
      masks that prune ``num_pruned`` weights (an int32 array from
      `gmp_num_pruned`, an argument, so one compilation serves every
      sparsity of the schedule).
  """

  config: ml_collections.ConfigDict
  num_steps: int
  update: Callable[[state_lib.TrainState, Any], state_lib.TrainState]

  def __call__(self, state: state_lib.TrainState, t: int):
    sparsity = gmp_sparsity(t, self.num_steps, self.config)
    if sparsity is None:
      return state
    return self.update(
      state, gmp_num_pruned(state.params, sparsity, self.config)
    )


def _weight_stage(config, spec, model, num_steps, steps_per_epoch, sampler):
  """pretrain, gmp and finetune: weight training (with SAM when asked)."""
  tx = _weight_tx(config, spec, num_steps, steps_per_epoch)

  def begin(state, key):
    if spec.kind == "pretrain":
      masks = None
    elif spec.kind == "gmp":
      masks = csam_jax.init_masks(
        state.params, sparsity=config.sparsity, method="ones"
      )
    else:
      masks = hard_masks(state.masks, config)
    return state.replace(
      masks=masks,
      opt_state=tx.init(state.params),
      step=jnp.zeros((), jnp.int32),
      key=key,
    )

  step = make_weight_step(model, tx)
  if spec.kind == "finetune":
    step = _augment(config, step, sampler)
  if spec.kind != "gmp":
    return Stage(spec, num_steps, begin, step, lambda s: s)

  def update(state, num_pruned):
    return state.replace(
      masks=magnitude_masks_from_counts(
        state.params, state.masks, config, num_pruned
      )
    )

  def finalize(state):
    return state.replace(
      masks=magnitude_masks(
        state.params, state.masks, config, float(config.sparsity)
      )
    )

  return Stage(
    spec,
    num_steps,
    begin,
    step,
    finalize,
    GmpSchedule(config, num_steps, update),
  )


def _augment(config, step: StepFn, sampler: Sampler | None) -> StepFn:
  """``step`` on varied inputs when ``finetune.augment_variations``."""
  if not config.finetune.augment_variations:
    return step
  if sampler is None:
    raise ValueError(
      "config.finetune.augment_variations needs the input-variation "
      "sampler of config.search.csam.distribution ('none' builds none)"
    )
  return augmented_step(step, sampler)


def _compression_stage(
  config, spec, model, num_steps, steps_per_epoch, sampler
):
  """CrAM / CrAM+ / SAFE: dense weights, the compression-aware update.

  The compression's key (CrAM's sparsity draw) is the stage key's
  ``keys.SPARSITY_PURPOSE`` stream, kept in the optimizer state.
  Its variation augmentation (``finetune.augment_variations``) is that of
  the dense continuation it replaces.
  """

  def make_tx(key=None):
    return compression.make_tx(
      config, spec.algo, num_steps, steps_per_epoch, key
    )

  def begin(state, key):
    sparsity_key = jax.random.fold_in(key, keys.SPARSITY_PURPOSE)
    params = compression.begin_params(state.params, config, spec.algo)
    return state.replace(
      params=params,
      masks=None,
      opt_state=make_tx(sparsity_key).init(params),
      step=jnp.zeros((), jnp.int32),
      key=key,
    )

  step = _augment(config, make_weight_step(model, make_tx()), sampler)
  return Stage(spec, num_steps, begin, step, lambda s: s)


def _retune_stage(config, spec, model, num_steps, sampler):
  """One-shot pruning with the algorithm's tie rule, then BN re-tuning."""
  c = compression.section(config, spec.algo)

  def begin(state, key):
    return state.replace(
      masks=compression.final_masks(state.params, config, spec.algo),
      batch_stats=compression.reset_batch_stats(
        state.batch_stats, float(c.retune_variance)
      ),
      opt_state=None,
      step=jnp.zeros((), jnp.int32),
      key=key,
    )

  step = _augment(config, compression.make_retune_step(model), sampler)
  return Stage(spec, num_steps, begin, step, lambda s: s)


def _jit(stage: Stage, out_sharding) -> Stage:
  """The stage with its functions jitted (outputs on ``out_sharding``)."""

  def jit(fn, shardings):
    if fn is None:
      return None
    if out_sharding is None:
      return jax.jit(fn)
    return jax.jit(fn, out_shardings=shardings)

  hook = stage.hook
  if hook is not None:
    hook = hook._replace(update=jit(hook.update, out_sharding))
  return stage._replace(
    begin=jit(stage.begin, out_sharding),
    step=jit(stage.step, (out_sharding, out_sharding)),
    finalize=jit(stage.finalize, out_sharding),
    hook=hook,
  )


def build(
  config: ml_collections.ConfigDict,
  spec: StageSpec,
  model: state_lib.Model,
  steps_per_epoch: int,
  sampler: Sampler | None = None,
  out_sharding: Any = None,
) -> Stage:
  """Builds the stage ``spec`` declares, its functions jitted.

  Args:
    config: the experiment config.
    spec: the stage's declaration (experiments/training/methods.py).
    model: the model.
    steps_per_epoch: steps per epoch (stage length and warm-up lengths).
    sampler: input-variation sampler of the C-SAM objective (and of the
      fine-tuning augmentation, ``finetune.augment_variations``).
    out_sharding: sharding of every output state (the replicated sharding
      of the run's mesh), or None to let jit choose.

  Returns:
    The built Stage.

  Raises:
    ValueError: fine-tuning with ``augment_variations`` but no sampler.

  Example:
    >>> from experiments import models
    >>> from experiments.configs import smoke
    >>> cfg = smoke.get_config()
    >>> model = state_lib.Model(models.get_model("tiny_cnn", num_classes=3),
    ...                         (0.5,), (0.25,))
    >>> stage = build(cfg, methods.get_recipe("gmp")[1], model, 10)
    >>> stage.num_steps == methods.stage_steps(cfg, stage.spec, 10)
    True
    >>> type(stage.hook).__name__
    'GmpSchedule'
  """
  if spec.kind not in BUILDERS:
    raise ValueError(
      f"stage {spec.name!r}: unknown kind {spec.kind!r}; the kinds with a "
      f"builder are {tuple(BUILDERS)}"
    )
  num_steps = methods.stage_steps(config, spec, steps_per_epoch)
  stage = BUILDERS[spec.kind](
    config, spec, model, num_steps, steps_per_epoch, sampler
  )
  return _jit(stage, out_sharding)


# What builds a stage of each kind (`methods.STAGE_KINDS`), all called as
# ``(config, spec, model, num_steps, steps_per_epoch, sampler)``.
BUILDERS = {
  "pretrain": _weight_stage,
  "prune": lambda config, spec, *_: _prune_stage(config, spec),
  "search": _search_stage,
  "gmp": _weight_stage,
  "finetune": _weight_stage,
  "compression": _compression_stage,
  "retune": lambda config, spec, model, num_steps, _, sampler: _retune_stage(
    config, spec, model, num_steps, sampler
  ),
}


def batchnorm_labels(params: PyTree) -> PyTree:
  """ "batchnorm" for the scale and bias of BatchNorm layers (a module whose
  parameters are exactly ``scale`` and ``bias``), "frozen" elsewhere.

  Example:
    >>> batchnorm_labels({"conv": {"kernel": 0}, "Dense": {"kernel": 0,
    ...   "bias": 0}, "bn": {"scale": 0, "bias": 0}})
    {'conv': {'kernel': 'frozen'}, 'Dense': {'kernel': 'frozen', 'bias': 'frozen'}, 'bn': {'scale': 'batchnorm', 'bias': 'batchnorm'}}
  """  # noqa: E501 - a doctest output line.

  def label(node):
    if isinstance(node, Mapping) and set(node) == {"scale", "bias"}:
      return {k: "batchnorm" for k in node}
    if isinstance(node, Mapping):
      return {k: label(v) for k, v in node.items()}
    return "frozen"

  return label(params)


def augmented_step(step: StepFn, sampler: Sampler) -> StepFn:
  """``step`` on a batch whose images are transformed by ``sampler``.

  Image i of step t is ``sampler(split(fold_in(fold_in(state.key, t),
  keys.AUGMENT_PURPOSE), B)[i], image_i)``: the input variations C-SAM's hinge
  trains on, used as data augmentation (the augmentation-fair baselines).
  """

  def augmented(state, batch):
    key = jax.random.fold_in(
      jax.random.fold_in(state.key, state.step), keys.AUGMENT_PURPOSE
    )
    draw_keys = jax.random.split(key, batch["image"].shape[0])
    images = csam_jax.variations.sample_batch(
      sampler, draw_keys, batch["image"]
    )
    return step(state, dict(batch, image=images))

  return augmented
