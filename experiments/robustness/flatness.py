"""Structural flatness: how a pruned model degrades when its mask changes.

C-SAM claims masks that are flat "with respect to model structure". This
diagnostic measures that directly on a trained pruned model: its final hard
mask is perturbed by swapping a fraction ``f`` of every layer's kept
entries with pruned ones (`csam_jax.swap_masks`: sparsity kept exactly,
``round(f * kept)`` per layer), the weights and BatchNorm statistics left
as trained, and the swapped model is evaluated:

* random swaps, ``flatness.num_draws`` draws per fraction (mean and the
  draws): the structure's average-case flatness;
* the gradient-directed swap of the same size: the kept entries of most
  negative ``dL/dm`` dropped and the pruned entries of most positive
  ``dL/dm`` added, ``dL/dm`` the gradient of the mean cross-entropy on the
  evaluated images with respect to the hard mask (eval-mode BatchNorm):
  the first-order worst case.

Clean accuracy and cross-entropy on the certified image set (the same
images, split and seed as certification), and certified accuracy on a
fixed smaller subset of it (every k-th image, ``flatness.certify_images``)
at ``flatness.certify_fractions``, for the gradient-directed swap and the
first random draw. A flat structure loses little under both.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import csam_jax
from experiments.reports import report_metrics
from experiments.robustness import certification, evaluation
from experiments.training import losses
from experiments.training import state as state_lib

PyTree = Any


def get_config() -> ml_collections.ConfigDict:
  """The ``config.flatness`` section (off by default; studies enable it).

  Fields:
    enabled: run the diagnostic on every pruned model.
    fractions: swapped fractions of each layer's kept entries.
    num_draws: random swaps per fraction.
    certify_fractions: the fractions also certified (a subset of
      ``fractions``); () for none.
    certify_images: images of the certified subset (every k-th image of
      the certified set, k = num_images // certify_images).
    distribution: the certification distribution (as certify.distributions).
  """
  return ml_collections.ConfigDict(
    dict(
      enabled=False,
      fractions=(0.005, 0.01, 0.02, 0.05, 0.1),
      num_draws=3,
      certify_fractions=(0.01, 0.05),
      certify_images=100,
      distribution="semantic",
    )
  )


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad field of a flatness section."""
  fractions = [float(f) for f in cfg.fractions]
  if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
    raise ValueError(
      f"config.flatness.fractions must be fractions in (0, 1], got "
      f"{tuple(cfg.fractions)}"
    )
  outside = [f for f in cfg.certify_fractions if float(f) not in fractions]
  if outside:
    raise ValueError(
      f"config.flatness.certify_fractions {outside} must be among "
      f"fractions {tuple(cfg.fractions)}"
    )
  for field in ("num_draws", "certify_images"):
    value = cfg[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"config.flatness.{field} must be an int >= 1")
  if cfg.distribution not in certification.DISTRIBUTIONS:
    raise ValueError(
      f"config.flatness.distribution={cfg.distribution!r}; valid: "
      f"{certification.DISTRIBUTIONS}"
    )


def fraction_key(fraction: float) -> str:
  """Dict key of a fraction, e.g. ``0.005``.

  Example:
    >>> fraction_key(0.05), fraction_key(0.1)
    ('0.05', '0.1')
  """
  return f"{float(fraction):g}"


def _masked_params(params: PyTree, masks: PyTree) -> PyTree:
  return csam_jax.apply_masks(params, masks, mode="soft")


@functools.partial(jax.jit, static_argnums=0)
def _chunk_sums(model, params, masks, batch_stats, images, labels):
  """(correct, summed cross-entropy, d summed CE / d masks) of a chunk."""

  def total_ce(m):
    logits, _ = state_lib.apply_model(
      model, _masked_params(params, m), batch_stats, images, train=False
    )
    ce = losses.cross_entropy(logits, labels) * labels.shape[0]
    return ce, logits

  (ce, logits), grads = jax.value_and_grad(total_ce, has_aux=True)(masks)
  correct = jnp.sum(jnp.argmax(logits, -1) == labels)
  return correct, ce, grads


def evaluate_mask(
  model: state_lib.Model,
  params: PyTree,
  masks: PyTree,
  batch_stats: PyTree,
  images: np.ndarray,
  labels: np.ndarray,
  batch_size: int,
) -> tuple[float, float, PyTree]:
  """Accuracy, mean cross-entropy and ``dL/dm`` of the hard-masked model.

  ``L`` is the mean cross-entropy over all ``images`` (eval-mode BatchNorm,
  weights ``params * masks``).
  """
  correct, ce, grads = 0, 0.0, None
  for start in range(0, len(images), batch_size):
    c, e, g = _chunk_sums(
      model,
      params,
      masks,
      batch_stats,
      jnp.asarray(images[start : start + batch_size]),
      jnp.asarray(labels[start : start + batch_size]),
    )
    correct, ce = correct + int(c), ce + float(e)
    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
  n = len(images)
  return correct / n, ce / n, jax.tree.map(lambda g: g / n, grads)


def _certified(config, key, model, params, masks, batch_stats, images, labels):
  """Certified accuracy (CC-Cert at the headline eps) of a masked model."""
  cfg = config.certify.copy_and_resolve_references()
  cfg.num_images = len(images)
  cfg.distributions = (config.flatness.distribution,)
  cfg.per_image = False
  cfg.smoothing.enabled = False
  cfg.binomial.enabled = False
  logits_fn = jax.tree_util.Partial(
    evaluation._DeployedLogits(model),
    _masked_params(params, masks),
    batch_stats,
  )
  out = certification.certify(cfg, key, logits_fn, images, labels)
  return out[config.flatness.distribution]["cc_cert"][
    report_metrics.HEADLINE.level
  ]


def certify_positions(num_images: int, certify_images: int) -> np.ndarray:
  """Positions in the certified set of the diagnostic's certified subset:
  every k-th image, ``k = num_images // certify_images`` (the set is
  sorted by row, and a split may be sorted by class: strided positions
  keep the classes mixed).

  Example:
    >>> certify_positions(1000, 4).tolist(), certify_positions(3, 5).tolist()
    ([0, 250, 500, 750], [0, 1, 2])
  """
  m = min(certify_images, num_images)
  return np.arange(m) * (num_images // m)


def structural_flatness(
  config: ml_collections.ConfigDict,
  model: state_lib.Model,
  state: state_lib.TrainState,
  images: np.ndarray,
  labels: np.ndarray,
  key: jax.Array,
  certification_key: jax.Array,
) -> dict[str, Any]:
  """The diagnostic of one trained pruned model (see the module docstring).

  Args:
    config: the experiment config (``flatness``, ``certify``, sparsity).
    model: the model.
    state: the trained state (host arrays; masks set).
    images: the evaluated images ([0, 1] NHWC): the certified set.
    labels: their labels.
    key: key of the random swaps (draw ``d`` of fraction ``f``:
      ``fold_in(fold_in(key, i_f), d)``).
    certification_key: the model's certification key (the swapped models
      are certified with it).

  Returns:
    A JSON-able dict: ``base`` (accuracy, cross_entropy, certified),
    ``random[f]`` (accuracy and cross_entropy means, ``draws``, certified
    of draw 0 at the certified fractions), ``directed[f]`` (the same for
    the gradient-directed swap), ``swapped[f]`` (the swapped fraction of
    all kept entries), and the settings.
  """
  cfg = config.flatness
  validate(cfg)
  hard = evaluation.deployed_masks(state, config)
  batch = int(config.evaluation.batch_size)
  run = lambda m: evaluate_mask(
    model, state.params, m, state.batch_stats, images, labels, batch
  )
  positions = certify_positions(len(images), cfg.certify_images)
  cert_images, cert_labels = images[positions], labels[positions]
  certify = lambda m: _certified(
    config,
    certification_key,
    model,
    state.params,
    m,
    state.batch_stats,
    cert_images,
    cert_labels,
  )
  accuracy, ce, grads = run(hard)
  certified = {float(f) for f in cfg.certify_fractions}
  out = dict(
    fractions=[float(f) for f in cfg.fractions],
    num_images=len(images),
    num_draws=int(cfg.num_draws),
    certify_images=len(positions),
    distribution=cfg.distribution,
    base=dict(
      accuracy=accuracy,
      cross_entropy=ce,
      certified=certify(hard) if certified else None,
    ),
    random={},
    directed={},
    swapped={},
  )
  for i, f in enumerate(out["fractions"]):
    name = fraction_key(f)
    draws = []
    for d in range(cfg.num_draws):
      sub = jax.random.fold_in(jax.random.fold_in(key, i), d)
      swapped = csam_jax.swap_masks(hard, f, key=sub)
      acc, loss, _ = run(swapped)
      draws.append(dict(accuracy=acc, cross_entropy=loss))
      if d == 0:
        first = swapped
    out["random"][name] = dict(
      accuracy=float(np.mean([r["accuracy"] for r in draws])),
      cross_entropy=float(np.mean([r["cross_entropy"] for r in draws])),
      draws=draws,
      certified=certify(first) if f in certified else None,
    )
    directed = csam_jax.swap_masks(hard, f, direction=grads)
    acc, loss, _ = run(directed)
    out["directed"][name] = dict(
      accuracy=acc,
      cross_entropy=loss,
      certified=certify(directed) if f in certified else None,
    )
    out["swapped"][name] = float(csam_jax.flip_fraction(hard, directed))
  return out
