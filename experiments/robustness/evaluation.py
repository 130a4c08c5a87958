"""Evaluation with hard masks: clean accuracy, sparsity, logits functions.

Final evaluation always uses the hard mask ``W * TopK_s(C)``
(docs/method.md, "Hard masks").
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import csam_jax
from experiments import input_pipeline
from experiments.training import parallel
from experiments.training import state as state_lib

PyTree = Any


def deployed_params(state: state_lib.TrainState, config: Any) -> PyTree:
  """Weights as deployed: ``W * TopK_s(C)`` (``W`` for dense models)."""
  if state.masks is None:
    return state.params
  return csam_jax.apply_masks(
    state.params,
    state.masks,
    mode="hard",
    sparsity=config.sparsity,
    scope=config.scope,
    structure=config.structure,
  )


def deployed_masks(state: state_lib.TrainState, config: Any) -> PyTree:
  """The deployed hard 0/1 masks ``TopK_s(C)`` of a pruned state."""
  return csam_jax.topk_masks(
    state.masks,
    config.sparsity,
    scope=config.scope,
    structure=config.structure,
  )


def sparsity_reached(state: state_lib.TrainState, config: Any) -> float:
  """Fraction of zeros among the prunable entries of the deployed weights.

  Counted on the actual weights (not the masks), over ``csam_jax.prunable``
  leaves; a dense model reports its (near zero) natural sparsity.
  """
  host = state.replace(
    params=parallel.to_host(state.params), masks=parallel.to_host(state.masks)
  )
  return float(csam_jax.sparsity(deployed_params(host, config))["global"])


@functools.partial(jax.jit, static_argnums=0)
def _eval_logits(
  model: state_lib.Model,
  params: PyTree,
  batch_stats: PyTree,
  images01: jax.Array,
) -> jax.Array:
  logits, _ = state_lib.apply_model(
    model, params, batch_stats, images01, train=False
  )
  return logits


@dataclasses.dataclass(frozen=True)
class _DeployedLogits:
  """Hashable ``(params, batch_stats, images01) -> logits`` of one model."""

  model: state_lib.Model

  def __call__(self, params, batch_stats, images01):
    return _eval_logits(self.model, params, batch_stats, images01)


def make_logits_fn(
  model: state_lib.Model, state: state_lib.TrainState, config: Any
) -> jax.tree_util.Partial:
  """``logits_fn(images01) -> logits`` of the deployed (hard-masked) model.

  A ``jax.tree_util.Partial`` over the weights: the certifiers of
  ``csam_jax.certify`` take its arrays as arguments of their compiled
  programs (one compilation for any weights, no constants baked in). Jitted
  (compiled once per input shape when called eagerly, inlined when traced
  inside the caller's jit/vmap/scan); eval-mode BatchNorm.
  """
  return jax.tree_util.Partial(
    _DeployedLogits(model), deployed_params(state, config), state.batch_stats
  )


def evaluate_accuracy(
  model: state_lib.Model,
  state: state_lib.TrainState,
  config: Any,
  mesh: Any,
  *,
  split: str = "eval",
  cache: dict | None = None,
) -> float:
  """Top-1 accuracy of the deployed model on a split (all processes).

  Args:
    model: the model.
    state: the trained state.
    config: the experiment config (data, evaluation, sparsity).
    mesh: the data mesh.
    split: "eval", "train" or "validation".
    cache: optional dict keeping the jitted counter between calls (one
      compilation per state structure).

  Returns:
    Accuracy over the split's (first ``config.evaluation.max_examples``)
    examples, each counted once.
  """

  cache = {} if cache is None else cache
  if ("eval_counts",) not in cache:

    @jax.jit
    def counts(state, batch):
      logits = make_logits_fn(model, state, config)(batch["image"])
      correct = (jnp.argmax(logits, -1) == batch["label"]) & batch["mask"]
      return jnp.sum(correct), jnp.sum(batch["mask"])

    cache[("eval_counts",)] = counts
  counts = cache[("eval_counts",)]

  correct, total = 0, 0
  for batch in input_pipeline.eval_batches(
    config.data,
    split=split,
    batch_size=config.evaluation.batch_size,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    normalize=False,
    max_examples=config.evaluation.max_examples,
  ):
    c, n = counts(state, parallel.global_batch(batch, mesh))
    correct, total = correct + int(c), total + int(n)
  if total == 0:
    raise ValueError(f"The {split!r} split has no examples to evaluate.")
  return correct / total


def image_seed(config: Any) -> int:
  """Seed of the evaluated image subsets: ``config.evaluation.image_seed``,
  or the run's ``config.seed`` when None (a study sets one seed for every
  model and training seed, so that all are evaluated on the same images).

  Example:
    >>> from experiments.configs import default
    >>> cfg = default.get_config()
    >>> cfg.seed = 3
    >>> image_seed(cfg), image_seed(dict(seed=3, evaluation=dict(
    ...   image_seed=7)))
    (3, 7)
  """
  chosen = config["evaluation"].get("image_seed")
  return int(config["seed"] if chosen is None else chosen)


def evaluation_split(config: Any) -> str:
  """The split models are evaluated and certified on:
  ``config.evaluation.split``, "eval" (the test split) or "validation"
  (carved from the training split; settings are chosen there)."""
  return config["evaluation"].get("split") or "eval"


def evaluation_indices(
  config: Any, num_images: int, seed: int, split: str = "eval"
) -> np.ndarray:
  """Sorted rows of ``split`` drawn by `evaluation_subset`.

  ``num_images`` rows (all when fewer) uniformly without replacement, with
  ``numpy.random.default_rng(seed)``.
  """
  total = input_pipeline.get_info(config.data).num_examples[split]
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(total, min(num_images, total), replace=False))


def indices_digest(indices: Any) -> str:
  """SHA-256 of the rows as little-endian int64 (a short, exact identity
  of an image set).

  Example:
    >>> indices_digest([1, 5, 9])[:12]
    'dc2554190d72'
  """
  data = np.asarray(indices, dtype="<i8").tobytes()
  return hashlib.sha256(data).hexdigest()


def evaluation_subset(
  config: Any, num_images: int, seed: int, split: str = "eval"
) -> tuple[np.ndarray, np.ndarray]:
  """A seeded uniform random subset of a split ([0, 1] images).

  The split is read once and ``num_images`` examples (all when fewer) are
  kept, in split order, at indices drawn without replacement - not the
  first ones, because a split may be sorted by class (the CIFAR-10 npz
  is). Every process draws the same subset (certification and corruption
  evaluation run redundantly per process; only process 0 reports).

  Args:
    config: the experiment config (data, evaluation batch size).
    num_images: subset size.
    seed: selection seed.
    split: "eval" (the test split) or "validation".

  Returns:
    ``(images float32 NHWC, labels int)``, the rows `evaluation_indices`.
  """
  chosen = evaluation_indices(config, num_images, seed, split)
  images, labels, offset = [], [], 0
  for batch in input_pipeline.eval_batches(
    config.data,
    split=split,
    batch_size=config.evaluation.batch_size,
    normalize=False,
  ):
    valid = np.flatnonzero(batch["mask"])
    index = offset + np.arange(len(valid))
    keep = valid[np.isin(index, chosen)]
    images.append(batch["image"][keep])
    labels.append(batch["label"][keep])
    offset += len(valid)
  return np.concatenate(images), np.concatenate(labels)
