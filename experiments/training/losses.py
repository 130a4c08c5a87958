"""Training objectives: cross-entropy and the C-SAM mask-search objective.

C-SAM (docs/method.md, "The objective"):

  L(C) = CE(f(x; W*C), y)
       + lam_cert * certification_hinge(p(x), p(x_T), kappa)
       + lam_cons * mask_consistency(C, sparsity)

with one random variation ``x_T`` per example (an
experiments/robustness/samplers.py sampler vmapped over per-example keys).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import csam_jax
from csam_jax import objectives
from experiments.robustness.samplers import Sampler
from experiments.training import state as state_lib

PyTree = Any


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean top-1 accuracy."""
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def weight_loss(
  params: PyTree,
  model: state_lib.Model,
  masks: PyTree,
  batch_stats: PyTree,
  batch: dict[str, jax.Array],
) -> tuple[jax.Array, tuple[jax.Array, PyTree]]:
  """Cross-entropy of the (masked) model; aux = (logits, new batch_stats).

  Args:
    params: weights.
    model: the model.
    masks: 0/1 masks (None: dense).
    batch_stats: BatchNorm statistics.
    batch: dict(image=[0, 1] NHWC, label).

  Returns:
    ``(loss, (logits, new_batch_stats))``.
  """
  if masks is not None:
    params = csam_jax.apply_masks(params, masks, mode="soft")
  logits, new_stats = state_lib.apply_model(
    model, params, batch_stats, batch["image"], train=True
  )
  return cross_entropy(logits, batch["label"]), (logits, new_stats)


class MaskObjective(NamedTuple):
  """Static settings of the mask-search objective.

  Attributes:
    forward: "soft" (W*C), "ste" (hard top-k forward, straight-through
      gradient) or "hard".
    sparsity: target sparsity of the hard mask.
    scope: top-k scope.
    structure: top-k structure.
    lam_cert: weight of the certification hinge (0 disables it).
    lam_cons: weight of the soft/hard consistency term (0 disables it).
    kappa: hinge margin.
    sampler: ``sampler(key, image) -> image`` on [0, 1] HWC images, or
      None (no hinge term).
    rank_by_abs: rank ``|masks|`` (HYDRA's reference): the forward sees
      the masks' absolute values, the gradient to a mask is multiplied by
      its sign.
    hinge_bn: BatchNorm of the two predictions the hinge compares:
      "running" (the running statistics, as the certified model: the hinge
      then trains exactly the certified Z and d; one more forward pass) or
      "batch" (each pass normalised with its own batch's statistics, clean
      predictions shared with the cross-entropy).
  """

  forward: str
  sparsity: float
  scope: str
  structure: str
  lam_cert: float = 0.0
  lam_cons: float = 0.0
  kappa: float = 0.0
  sampler: Sampler | None = None
  hinge_bn: str = "batch"
  rank_by_abs: bool = False


def mask_objective(
  masks: PyTree,
  params: PyTree,
  model: state_lib.Model,
  batch_stats: PyTree,
  batch: dict[str, jax.Array],
  key: jax.Array,
  settings: MaskObjective,
) -> tuple[jax.Array, tuple[jax.Array, PyTree, jax.Array]]:
  """HYDRA (CE only) or C-SAM objective of the masks.

  The clean pass runs in training mode and its BatchNorm statistics are
  returned; the passes of the hinge normalise as ``settings.hinge_bn`` says
  and their statistics updates are discarded, so the running statistics
  come from clean inputs only.

  Args:
    masks: soft masks (scores).
    params: weights.
    model: the model.
    batch_stats: BatchNorm statistics.
    batch: dict(image=[0, 1] NHWC, label).
    key: PRNG key for the input variations of this step.
    settings: the objective's static settings.

  Returns:
    ``(loss, (logits, new_batch_stats, cross_entropy))``.
  """
  masked = csam_jax.apply_masks(
    params,
    jax.tree.map(jnp.abs, masks) if settings.rank_by_abs else masks,
    mode=settings.forward,
    sparsity=settings.sparsity,
    scope=settings.scope,
    structure=settings.structure,
  )
  images = batch["image"]
  logits, new_stats = state_lib.apply_model(
    model, masked, batch_stats, images, train=True
  )
  ce = cross_entropy(logits, batch["label"])
  loss = ce
  if settings.lam_cert > 0 and settings.sampler is not None:
    keys = jax.random.split(key, images.shape[0])
    varied = csam_jax.variations.sample_batch(settings.sampler, keys, images)
    train = settings.hinge_bn == "batch"
    logits_c = logits
    if not train:
      logits_c, _ = state_lib.apply_model(
        model, masked, batch_stats, images, train=False
      )
    logits_t, _ = state_lib.apply_model(
      model, masked, batch_stats, varied, train=train
    )
    hinge = objectives.certification_hinge(
      jax.nn.softmax(logits_c), jax.nn.softmax(logits_t), kappa=settings.kappa
    ).mean()
    loss = loss + settings.lam_cert * hinge
  if settings.lam_cons > 0:
    loss = loss + settings.lam_cons * objectives.mask_consistency(
      masks,
      settings.sparsity,
      scope=settings.scope,
      structure=settings.structure,
    )
  return loss, (logits, new_stats, ce)
