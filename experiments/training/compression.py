"""CrAM and SAFE in the harness: their optimizers, masks and BN re-tuning.

Both train dense weights towards a compressible point and prune once at the
end (docs/method.md, "CrAM and SAFE"):

  =========  ==========================================================
  algo       the update (``csam_jax``)
  =========  ==========================================================
  cram       ``cram_transform``: ``M * grad L(M * (w + rho g0))``, ``M``
             global magnitude masks (ties pruned) at ``config.sparsity``
             (CrAM-k of the paper, k the pruning target)
  cram_plus  ``g0 + M * grad L(M * (w + rho g0))``, ``M`` at a sparsity
             drawn uniformly from ``config.cram.sparsities`` at every step
             (CrAM+ Multi, the reference's CIFAR run)
  safe       ``safe_transform``: ``grad L(w + rho g0 / ||g0||) +
             lambda_t (w - z + u)``, ``z = Pi(w + u)`` every
             ``dual_every`` steps, ``Pi`` global magnitude masking at
             ``config.sparsity`` with ties kept
  =========  ==========================================================

then SGD (``config.<section>.optimizer``). The last stage prunes ``|w|`` once
at ``config.sparsity`` with the reference's tie rule and re-tunes the
BatchNorm running statistics: reset to (mean 0, variance
``retune_variance``), then ``retune_batches`` forward passes in train mode
whose exponential averages (the models' momentum 0.1, PyTorch's convention)
are kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

import csam_jax
from experiments.training import losses, methods, optimizers
from experiments.training import state as state_lib

# Tie rule of each algorithm's magnitude masks (csam_jax.threshold_masks).
TIES = {"cram": "prune", "cram_plus": "prune", "safe": "keep"}


def section(config: ml_collections.ConfigDict, algo: str):
  """The config section of ``algo`` (``config.cram`` for both CrAMs)."""
  return config[methods.config_section(algo)]


def magnitude_scores(params):
  """|w| on prunable kernels (ndim >= 2), None elsewhere."""
  return jax.tree.map(
    lambda w, k: jnp.abs(w).astype(jnp.float32) if k else None,
    params,
    csam_jax.prunable(params),
  )


def random_sparsity_masks(sparsities: tuple[float, ...]):
  """CrAM's compression: global magnitude masks (ties pruned) at a sparsity
  drawn uniformly from ``sparsities`` with the given key.

  Example:
    >>> fn = random_sparsity_masks((0.5,))
    >>> w = {"k": jnp.array([[1.0, -3.0], [2.0, 2.0]]), "b": jnp.ones(2)}
    >>> m = fn(w, jax.random.key(0))
    >>> m["k"].tolist(), m["b"]
    ([[0.0, 1.0], [0.0, 0.0]], None)
  """
  sparsities = tuple(float(s) for s in sparsities)

  def compress(point, key):
    scores = magnitude_scores(point)
    n = sum(x.size for x in jax.tree.leaves(scores))
    ranks = jnp.array(
      [csam_jax.threshold_rank(n, s, "prune") for s in sparsities], jnp.int32
    )
    rank = ranks[jax.random.randint(key, (), 0, len(sparsities))]
    return csam_jax.threshold_masks_at(scores, rank, ties="prune")

  return compress


def bias_leaves(params):
  """True on the leaves named ``bias`` (BatchNorm shifts, dense biases).

  Example:
    >>> bias_leaves({"bn": {"scale": 1, "bias": 0}, "Dense": {"kernel": 1}})
    {'Dense': {'kernel': False}, 'bn': {'bias': True, 'scale': False}}
  """
  return jax.tree_util.tree_map_with_path(
    lambda path, _: getattr(path[-1], "key", None) == "bias", params
  )


def safe_projection(sparsity: float):
  """SAFE's Pi: global magnitude masking of the prunable leaves (ties
  kept); other leaves of the tree (BN scales, reference mode) unchanged."""

  def project(tree):
    scores = jax.tree.map(
      lambda x: jnp.abs(x).astype(jnp.float32) if x.ndim >= 2 else None, tree
    )
    masks = csam_jax.threshold_masks(scores, sparsity, ties="keep")
    return jax.tree.map(
      lambda x, m: x if m is None else x * m.astype(x.dtype),
      tree,
      masks,
      is_leaf=lambda x: x is None,
    )

  return project


def _safe_tx(config, num_steps: int, base) -> optax.GradientTransformation:
  c = config.safe
  pin = bool(c.hold_biases_at_zero)
  update = csam_jax.safe_transform(
    float(c.lam),
    float(c.rho),
    safe_projection(float(config.sparsity)),
    total_steps=max(num_steps, 1),
    dual_every=int(c.dual_every),
    schedule=c.schedule,
    # The reference (aliasing, docs/method.md) penalises every non-bias
    # leaf, BN scales included; the intended ADMM the prunable kernels.
    where=(lambda p: jax.tree.map(lambda b: not b, bias_leaves(p)))
    if pin
    else csam_jax.prunable,
  )
  if not pin:
    return optax.chain(update, base)
  return optax.chain(
    update, base, optax.masked(optax.set_to_zero(), bias_leaves)
  )


def begin_params(params, config: ml_collections.ConfigDict, algo: str):
  """The weights a compression stage starts from: SAFE's reference mode
  (``safe.hold_biases_at_zero``) zeroes the biases, as its aliasing does."""
  if algo == "safe" and config.safe.hold_biases_at_zero:
    return jax.tree.map(
      lambda x, b: jnp.zeros_like(x) if b else x, params, bias_leaves(params)
    )
  return params


def make_tx(
  config: ml_collections.ConfigDict,
  algo: str,
  num_steps: int,
  steps_per_epoch: int,
  key: jax.Array | None = None,
) -> optax.GradientTransformationExtraArgs:
  """The optimizer of a compression-aware stage: the update, then SGD.

  Args:
    config: the experiment config.
    algo: one of ``methods.COMPRESSION_ALGOS``.
    num_steps: steps of the stage (the learning-rate schedule).
    steps_per_epoch: steps per epoch (warm-up).
    key: the compression's key (set by the stage's ``begin``; any key
      builds a transformation with the same update).

  Returns:
    ``chain(cram_transform(...) or safe_transform(...), optimizer)``
    (SAFE's reference mode then zeroes the bias updates); ``update`` needs
    ``grad_fn``.
  """
  c = section(config, algo)
  base = optimizers.make_optimizer(c.optimizer, num_steps, steps_per_epoch)
  if algo == "safe":
    return _safe_tx(config, num_steps, base)
  multi = algo == "cram_plus"
  sparsities = tuple(c.sparsities) if multi else (float(config.sparsity),)
  update = csam_jax.cram_transform(
    float(c.rho),
    random_sparsity_masks(sparsities),
    plus=multi or bool(c.plus),
    normalize=bool(c.normalize),
    sparse_grad=bool(c.sparse_grad),
    key=key,
  )
  return optax.chain(update, base)


def final_masks(params, config: ml_collections.ConfigDict, algo: str):
  """One-shot global magnitude masks of ``params`` at ``config.sparsity``
  with ``algo``'s tie rule."""
  return csam_jax.threshold_masks(
    magnitude_scores(params), float(config.sparsity), ties=TIES[algo]
  )


def reset_batch_stats(batch_stats, variance: float):
  """Running means 0 and variances ``variance`` (BN re-tuning's start)."""

  def reset(path, x):
    name = getattr(path[-1], "key", None)
    return jnp.full_like(x, variance if name == "var" else 0.0)

  return jax.tree_util.tree_map_with_path(reset, batch_stats)


def _all_finite(tree) -> jax.Array:
  return jnp.all(
    jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)])
  )


def make_retune_step(model: state_lib.Model):
  """A BN re-tuning step: a train-mode forward pass of the masked model.

  Returns:
    ``step(state, batch) -> (state, {"loss", "accuracy", "finite"})``; only
    ``batch_stats`` (the running averages) and ``step`` change.
  """

  def step(state, batch):
    loss, (logits, new_stats) = losses.weight_loss(
      state.params, model, state.masks, state.batch_stats, batch
    )
    metrics = {
      "loss": loss,
      "accuracy": losses.accuracy(logits, batch["label"]),
      "finite": _all_finite(new_stats),
    }
    return state.replace(batch_stats=new_stats, step=state.step + 1), metrics

  return step
