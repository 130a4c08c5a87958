"""The certification stage: certified accuracy of a trained model.

`certify` runs, for each configured transformation distribution ("semantic":
csam_jax.variations.compose of the configured ranges; "corruptions":
csam_jax.variations.corruption_sampler), CC-Cert (Pautov et al. 2022) and a
Clopper-Pearson binomial certificate computed from the same Monte Carlo
draws, and Gaussian randomized smoothing (Cohen et al. 2019) once; it returns
a JSON-serialisable dict (CONTRACTS.md "experiments.certification").

Binomial certificate from the CC-Cert draws: of the N transformed samples of
an image, ``N - num_changed`` keep the clean prediction; when that prediction
is the label, this is the number of correct samples ``k`` and the image is
certified at eps iff ``clopper_pearson_lower(k, N, alpha) >= 1 - eps``. As
for CC-Cert, an image whose clean prediction is wrong is never certified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from csam_jax import certify as certify_lib
from csam_jax import variations

HEADLINE_EPS = "1e-02"


def eps_key(eps: float) -> str:
  """The dict key of a level: ``1e-10``, ..., ``1e-02``.

  Example:
    >>> eps_key(0.01), eps_key(1e-10)
    ('1e-02', '1e-10')
  """
  return f"{eps:.0e}"


def radius_key(radius: float) -> str:
  """The dict key of a smoothing radius, e.g. ``0.25``."""
  return f"{float(radius):g}"


def sample_fn_for(cfg: Any, distribution: str) -> Callable:
  """``sample_fn(key, image)`` of a configured distribution.

  Args:
    cfg: the ``config.certify`` section.
    distribution: "semantic" or "corruptions".

  Returns:
    The transformation sampler.

  Raises:
    ValueError: for an unknown distribution.
  """
  if distribution == "semantic":
    sem = cfg.semantic
    return variations.compose(
      dict(sem.ranges),
      border_mode=sem.border_mode,
      cval=sem.cval,
      contrast_center=sem.contrast_center,
    )
  if distribution == "corruptions":
    # Imported lazily: the corruption families are a separate, heavier part
    # of csam_jax.variations.
    from csam_jax.variations import CORRUPTIONS, corruption_sampler

    names = tuple(cfg.corruptions.names) or CORRUPTIONS
    return corruption_sampler(names, tuple(cfg.corruptions.severities))
  raise ValueError(
    f"unknown distribution {distribution!r}; valid: 'semantic', 'corruptions'"
  )


def validate_certify_config(cfg: Any) -> None:
  """Raises ValueError naming the field of an invalid certify section."""
  for field in ("num_images", "batch_size", "num_samples", "num_bounds"):
    value = cfg[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"certify.{field} must be an int >= 1, got {value!r}")
  if not 0.0 < cfg.delta <= 1.0:
    raise ValueError(f"certify.delta must be in (0, 1], got {cfg.delta}")
  if not cfg.eps or any(not 0.0 < e < 1.0 for e in cfg.eps):
    raise ValueError(f"certify.eps must be levels in (0, 1), got {cfg.eps}")
  for d in cfg.distributions:
    if d not in ("semantic", "corruptions"):
      raise ValueError(
        f"certify.distributions: unknown {d!r}; valid: 'semantic', "
        "'corruptions'"
      )
  for section in ("binomial", "smoothing"):
    alpha = cfg[section].alpha
    if cfg[section].enabled and not 0.0 < alpha < 1.0:
      raise ValueError(
        f"certify.{section}.alpha must be in (0, 1), got {alpha}"
      )
  if cfg.smoothing.enabled and not cfg.smoothing.sigma > 0:
    raise ValueError(
      f"certify.smoothing.sigma must be > 0, got {cfg.smoothing.sigma}"
    )


def _certify_distribution(cfg, key, logits_fn, images, labels, sample_fn):
  num_draws = cfg.num_samples * cfg.num_bounds
  res = certify_lib.cc_cert(
    key,
    logits_fn,
    images,
    sample_fn,
    num_samples=cfg.num_samples,
    num_bounds=cfg.num_bounds,
    delta=cfg.delta,
    batch_size=cfg.batch_size,
  )
  eps = [float(e) for e in cfg.eps]
  cc = certify_lib.certified_accuracy(res, labels, eps)
  correct = np.asarray(res.pred) == labels
  out = {
    "cc_cert": {eps_key(e): a for e, a in zip(eps, cc, strict=True)},
    "clean_accuracy": float(np.mean(correct)),
    "mean_changed_fraction": float(np.mean(res.num_changed) / num_draws),
    "num_draws": num_draws,
  }
  if cfg.binomial.enabled:
    kept = num_draws - np.asarray(res.num_changed, np.int64)
    lower = certify_lib.clopper_pearson_lower(
      np.where(correct, kept, 0), num_draws, cfg.binomial.alpha
    )
    binom = certify_lib.BinomialCertificate(lower, kept, num_draws)
    accs = certify_lib.certified_accuracy(binom, labels, eps)
    out["binomial"] = {eps_key(e): a for e, a in zip(eps, accs, strict=True)}
  return out


def _smoothing(cfg, key, logits_fn, images, labels) -> dict[str, float]:
  sm = cfg.smoothing
  n = min(sm.num_images, images.shape[0])
  pred, radius = certify_lib.smoothing_certify(
    key,
    logits_fn,
    images[:n],
    sigma=sm.sigma,
    n0=sm.n0,
    n=sm.n,
    alpha=sm.alpha,
    batch_size=cfg.batch_size,
  )
  correct = pred == labels[:n]
  # Certified at radius r: correct and certified radius >= r (Cohen et al.).
  return {
    radius_key(r): float(np.mean(correct & (radius >= r))) for r in sm.radii
  }


def certify(
  cfg: Any,
  key: jax.Array,
  logits_fn: Callable[[jax.Array], jax.Array] | jax.tree_util.Partial,
  images: Any,
  labels: Any,
) -> dict[str, Any]:
  """Certifies ``logits_fn`` on ``images`` under the configured distributions.

  Args:
    cfg: the ``config.certify`` section (`get_certify_config`).
    key: PRNG key; per-purpose keys are ``fold_in(key, seed_offsets[...])``.
    logits_fn: ``logits_fn(images01) -> logits`` of the deployed model:
      preferably ``jax.tree_util.Partial(apply_fn, variables)``, passed
      through to the certifiers, which then trace the variables as
      arguments (fast compilation, one program for every method and
      seed); a plain callable also works, compiled with the arrays it
      closes over as constants (see `csam_jax.certify.cc_cert`).
    images: float32 NHWC images in [0, 1] (numpy or jax); the first
      ``cfg.num_images`` are used.
    labels: integer labels of the images.

  Returns:
    ``{"num_images": n, <distribution>: {"cc_cert": {"1e-10": acc, ...},
    "binomial": {...}, "clean_accuracy": acc, ...}, "smoothing":
    {"0.25": acc, ...}, "smoothing_sigma": sigma}``.

  Raises:
    ValueError: for an invalid config or images / labels that disagree.

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from experiments.configs.certify_config import get_certify_config
    >>> cfg = get_certify_config()
    >>> cfg.update(dict(num_images=2, num_samples=4, num_bounds=2))
    >>> cfg.smoothing.enabled = False
    >>> logits_fn = lambda b: jnp.stack([b.mean((1, 2, 3)), 0 * b[:, 0, 0, 0]
    ...                                  + 2.0], -1)
    >>> out = certify(cfg, jax.random.key(0), logits_fn,
    ...               np.full((2, 4, 4, 1), 0.5, np.float32), np.array([1, 1]))
    >>> out["semantic"]["cc_cert"]["1e-02"]
    1.0
  """
  validate_certify_config(cfg)
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels)
  if images.ndim != 4 or labels.shape != images.shape[:1]:
    raise ValueError(
      f"images must be NHWC with one label each, got {images.shape} and "
      f"labels {labels.shape}"
    )
  n = min(cfg.num_images, images.shape[0])
  images, labels = images[:n], labels[:n]
  out: dict[str, Any] = {"num_images": int(n)}
  for distribution in cfg.distributions:
    sub = jax.random.fold_in(key, cfg.seed_offsets[distribution])
    sample_fn = sample_fn_for(cfg, distribution)
    out[distribution] = _certify_distribution(
      cfg, sub, logits_fn, images, labels, sample_fn
    )
    logging.info("certify %s: %s", distribution, out[distribution]["cc_cert"])
  if cfg.smoothing.enabled:
    sub = jax.random.fold_in(key, cfg.seed_offsets.smoothing)
    out["smoothing"] = _smoothing(cfg, sub, logits_fn, images, labels)
    out["smoothing_sigma"] = float(cfg.smoothing.sigma)
  return out


def headline_columns(cert: dict[str, Any]) -> dict[str, float]:
  """Few columns for the Markdown table: accuracies at eps = 1e-2.

  Example:
    >>> headline_columns({"num_images": 2, "semantic": {"cc_cert":
    ...   {"1e-02": 0.5}, "binomial": {"1e-02": 0.25}}})
    {'semantic cc-cert@1e-2': 0.5, 'semantic binom@1e-2': 0.25}
  """
  columns: dict[str, float] = {}
  for distribution in ("semantic", "corruptions"):
    if distribution not in cert:
      continue
    for method, short in (("cc_cert", "cc-cert"), ("binomial", "binom")):
      accs = cert[distribution].get(method, {})
      if HEADLINE_EPS in accs:
        columns[f"{distribution} {short}@1e-2"] = accs[HEADLINE_EPS]
  smoothing = cert.get("smoothing", {})
  positive = [r for r in smoothing if float(r) > 0]
  if positive:
    r = min(positive, key=float)
    columns[f"smoothing r={r}"] = smoothing[r]
  return columns
