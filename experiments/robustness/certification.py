"""The certification stage: certified accuracy of a trained model.

`certify` runs, for each configured variation distribution, CC-Cert
(Pautov et al. 2022) and a Clopper-Pearson binomial certificate computed
from the same Monte Carlo draws, and Gaussian randomized smoothing (Cohen
et al. 2019) once; it returns a JSON-serialisable dict. The distributions:

the distributions of experiments/robustness/samplers.py ("semantic": every
family of ``certify.variations.ranges`` composed in one draw; one family alone,
as the CC-Cert reference certifies in one run, so our numbers sit beside
published per-family ones; "corruptions": CIFAR-10-C), each drawn by
``samplers.make_sampler(distribution, certify.variations)``.

Binomial certificate from the CC-Cert draws: of the N transformed samples of
an image, ``N - num_changed`` keep the clean prediction; when that prediction
is the label, this is the number of correct samples ``k`` and the image is
certified at eps iff ``clopper_pearson_lower(k, N, alpha) >= 1 - eps``. As
for CC-Cert, an image whose clean prediction is wrong is never certified.
Even ``k = N`` gives the lower bound ``alpha ** (1 / N)``, so no image can be
certified below ``eps_min = 1 - alpha ** (1 / N)`` (6.9e-3 at N = 1,000,
alpha = 1e-3): the accuracy at such a level is reported as None ("n/a" in
tables, no point in plots), not as 0, and ``binomial_eps_min`` is recorded.

Cost: with ``certify.skip_misclassified`` (the default) the images whose
clean prediction is wrong, which neither certificate can certify, get no
draws (`csam_jax.certify.cc_cert` with ``labels``): the accuracies and the
per-image records are those of the run that draws for every image, bit for
bit, at ``1 - clean_accuracy`` less Monte Carlo work. ``num_skipped``
counts them, and ``mean_changed_fraction`` is over the images drawn for
(all of them without the skip; None when none was).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from csam_jax import certify as certify_lib
from experiments.robustness import samplers

# Single variation families certified alone: CC-Cert's set.
FAMILIES = samplers.FAMILIES
# The distributions a model is certified under: every one but "none".
DISTRIBUTIONS = tuple(d for d in samplers.DISTRIBUTIONS if d != "none")


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


def binomial_eps_min(num_draws: int, alpha: float) -> float:
  """Smallest eps a Clopper-Pearson certificate from N draws can reach.

  With all ``N`` draws correct the lower bound is ``alpha ** (1 / N)``, so
  ``lower >= 1 - eps`` needs ``eps >= 1 - alpha ** (1 / N)``.

  Example:
    >>> round(binomial_eps_min(1000, 1e-3), 6)
    0.006884
  """
  return float(-np.expm1(np.log(alpha) / num_draws))


def validate_certify_config(cfg: Any) -> None:
  """Raises ValueError naming the field of an invalid certify section."""
  for field in ("num_images", "batch_size", "num_samples", "num_bounds"):
    value = cfg[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"certify.{field} must be an int >= 1, got {value!r}")
  if not isinstance(cfg["skip_misclassified"], bool):
    raise ValueError(
      "certify.skip_misclassified must be a bool, got "
      f"{cfg.skip_misclassified!r}"
    )
  if not 0.0 < cfg.delta <= 1.0:
    raise ValueError(f"certify.delta must be in (0, 1], got {cfg.delta}")
  if not cfg.eps or any(not 0.0 < e < 1.0 for e in cfg.eps):
    raise ValueError(f"certify.eps must be levels in (0, 1), got {cfg.eps}")
  if not cfg.distributions:
    raise ValueError("certify.distributions must name at least one")
  for d in cfg.distributions:
    if d not in DISTRIBUTIONS:
      raise ValueError(
        f"certify.distributions: unknown {d!r}; valid: {DISTRIBUTIONS}"
      )
    if d not in cfg.seed_offsets:
      raise ValueError(f"certify.seed_offsets has no key for {d!r}")
  offsets = [cfg.seed_offsets[d] for d in (*cfg.distributions, "smoothing")]
  if len(set(offsets)) != len(offsets):
    raise ValueError(
      "certify.seed_offsets must give every distribution (and smoothing) "
      f"its own key, got {dict(cfg.seed_offsets)}"
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


_SAMPLERS: dict[tuple[str, str], Any] = {}


def sampler_for(distribution: str, variations: Any) -> Any:
  """``samplers.make_sampler(distribution, variations)``, built once.

  The certifiers' compiled programs are keyed by the sampler object, and
  `csam_jax.variations.compose` returns a new closure on every call: one
  object per distribution and ``variations`` lets every model certified in
  this process (every cell of a study) reuse the programs of the first,
  with no retrace and no recompilation; the draws are the same.

  Example:
    >>> v, w = samplers.get_config(), samplers.get_config()
    >>> sampler_for("semantic", v) is sampler_for("semantic", w)
    True
  """
  key = (distribution, variations.to_json(sort_keys=True))
  if key not in _SAMPLERS:
    _SAMPLERS[key] = samplers.make_sampler(distribution, variations)
  return _SAMPLERS[key]


def _certify_distribution(cfg, key, logits_fn, images, labels, sampler):
  num_draws = cfg.num_samples * cfg.num_bounds
  res = certify_lib.cc_cert(
    key,
    logits_fn,
    images,
    sampler,
    num_samples=cfg.num_samples,
    num_bounds=cfg.num_bounds,
    delta=cfg.delta,
    batch_size=cfg.batch_size,
    labels=labels if cfg.skip_misclassified else None,
  )
  eps = [float(e) for e in cfg.eps]
  cc = certify_lib.certified_accuracy(res, labels, eps)
  correct = np.asarray(res.pred) == labels
  changed = np.asarray(res.num_changed, np.int64)
  drawn = changed != certify_lib.NOT_DRAWN
  out = {
    "cc_cert": {eps_key(e): a for e, a in zip(eps, cc, strict=True)},
    "clean_accuracy": float(np.mean(correct)),
    "mean_changed_fraction": (
      float(np.mean(changed[drawn]) / num_draws) if drawn.any() else None
    ),
    "num_draws": num_draws,
    "num_skipped": int(np.sum(~drawn)),
  }
  if cfg.binomial.enabled:
    # The draws that keep the clean prediction are the correct ones when
    # that prediction is the label (other images are never certified; the
    # skipped ones get k = 0, so lower bound 0).
    kept = np.where(drawn, num_draws - changed, 0)
    lower = certify_lib.clopper_pearson_lower(
      kept, num_draws, cfg.binomial.alpha
    )
    binom = certify_lib.BinomialCertificate(lower, kept, num_draws, res.pred)
    accs = certify_lib.certified_accuracy(binom, labels, eps)
    eps_min = binomial_eps_min(num_draws, cfg.binomial.alpha)
    out["binomial"] = {
      eps_key(e): (a if e >= eps_min else None)
      for e, a in zip(eps, accs, strict=True)
    }
    out["binomial_eps_min"] = eps_min
  if cfg.per_image:
    out["per_image"] = _per_image(
      res, binom if cfg.binomial.enabled else None, labels, eps
    )
  return out


def _bits(mask: Any) -> str:
  """A bool vector as a string of 0/1 (compact, exact, JSON-friendly)."""
  return "".join("1" if m else "0" for m in np.asarray(mask, bool))


def _per_image(res, binom, labels, eps) -> dict[str, Any]:
  """Which image each certificate certifies at each level (0/1 strings),
  and what certifies it at any other level: each image's CC-Cert bound
  (``cc_cert_bound``; certified at eps when correct and bound < eps; 1.0
  for an image given no draws) and, with the Clopper-Pearson certificate,
  its draws that kept the prediction (``binomial_kept``, of ``num_draws``:
  certified at eps when correct and the lower bound is >= 1 - eps). A
  misclassified image, never certified, is recorded as bound 1.0 and 0
  kept draws, drawn or not (`skip_misclassified` changes no record)."""
  correct = np.asarray(res.pred) == labels
  bound = np.asarray(res.bound)
  out = {
    "correct": _bits(correct),
    "cc_cert": {eps_key(e): _bits(correct & (bound < e)) for e in eps},
    "cc_cert_bound": [float(b) for b in np.where(correct, bound, 1.0)],
  }
  if binom is not None:
    lower = np.asarray(binom.lower_bound)
    out["binomial"] = {
      eps_key(e): _bits(correct & (lower >= 1.0 - e)) for e in eps
    }
    kept = np.where(correct, np.asarray(binom.num_correct), 0)
    out["binomial_kept"] = [int(k) for k in kept]
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
    ``{"num_images": n, "conventions": {"contrast_center": ..., ...},
    <distribution>: {"cc_cert": {"1e-10": acc, ...}, "binomial": {...,
    "1e-02": acc} (None below eps_min), "binomial_eps_min": float,
    "clean_accuracy": acc, "num_skipped": n, ...}, "smoothing":
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
  if any(d != "corruptions" for d in cfg.distributions):
    out["conventions"] = {
      "contrast_center": str(cfg.variations.contrast_center),
      "border_mode": str(cfg.variations.border_mode),
      "cval": float(cfg.variations.cval),
    }
  for distribution in cfg.distributions:
    sub = jax.random.fold_in(key, cfg.seed_offsets[distribution])
    sampler = sampler_for(distribution, cfg.variations)
    out[distribution] = _certify_distribution(
      cfg, sub, logits_fn, images, labels, sampler
    )
    logging.info("certify %s: %s", distribution, out[distribution]["cc_cert"])
  if cfg.smoothing.enabled:
    sub = jax.random.fold_in(key, cfg.seed_offsets.smoothing)
    out["smoothing"] = _smoothing(cfg, sub, logits_fn, images, labels)
    out["smoothing_sigma"] = float(cfg.smoothing.sigma)
  return out


def protocol_note(cert: dict[str, Any]) -> str:
  """One Markdown paragraph naming the certification protocol and limits.

  Example:
    >>> print(protocol_note({"num_images": 64, "conventions":
    ...   {"contrast_center": "zero", "border_mode": "constant", "cval": 0.0},
    ...   "semantic": {"num_draws": 1000, "binomial_eps_min": 0.0068842}}))
    Certification: 64 test images, N = 1000 draws per image and distribution; contrast convention "zero" (x * c, as kornia's adjust_contrast in the CC-Cert reference), geometric border "constant" (cval 0); Clopper-Pearson certificates cannot reach eps < 6.88e-03 (n/a).
  """  # noqa: E501 - a doctest output line.
  dists = [cert[d] for d in DISTRIBUTIONS if d in cert]
  parts = [f"Certification: {cert['num_images']} test images"]
  if dists:
    parts[0] += (
      f", N = {dists[0]['num_draws']} draws per image and distribution"
    )
  conv = cert.get("conventions")
  if conv:
    meaning = {
      "zero": "x * c, as kornia's adjust_contrast in the CC-Cert reference",
      "mean": "(x - mean) * c + mean, about the image mean",
    }[conv["contrast_center"]]
    parts.append(
      f'contrast convention "{conv["contrast_center"]}" ({meaning}), '
      f'geometric border "{conv["border_mode"]}" (cval {conv["cval"]:g})'
    )
  eps_min = [d["binomial_eps_min"] for d in dists if "binomial_eps_min" in d]
  if eps_min:
    parts.append(
      f"Clopper-Pearson certificates cannot reach eps < {max(eps_min):.2e} "
      "(n/a)"
    )
  return "; ".join(parts) + "."
