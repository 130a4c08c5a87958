"""Tests of the certification stage, its config and its plots."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats

from csam_jax import certify as certify_lib
from experiments.configs.certify_config import get_certify_config
from experiments.reports import plots, report_metrics
from experiments.robustness import certification, samplers

EPS_KEYS = [f"1e-{k:02d}" for k in range(10, 1, -1)]


def _constant_logits(b):
  """Predicts class 1 whatever the input: invariant under every T."""
  return jnp.broadcast_to(jnp.array([0.0, 4.0, -1.0]), (b.shape[0], 3)) + (
    0.0 * b.sum()
  )


def _small_cfg(**overrides):
  cfg = get_certify_config()
  cfg.update(dict(num_images=3, num_samples=100, num_bounds=10, batch_size=512))
  cfg.distributions = ("semantic",)
  cfg.smoothing.update(dict(n0=10, n=100, radii=(0.0, 0.25, 0.5)))
  cfg.update(overrides)
  return cfg


def test_certify_invariant_model_hand_computed():
  cfg = _small_cfg()
  images = np.random.default_rng(0).uniform(size=(4, 4, 4, 3))
  labels = np.array([1, 1, 0, 1])  # third image misclassified
  out = certification.certify(
    cfg, jax.random.key(0), _constant_logits, images, labels
  )
  json.dumps(out)  # JSON-serialisable
  assert out["num_images"] == 3
  sem = out["semantic"]
  assert list(sem["cc_cert"]) == EPS_KEYS
  # CC-Cert: bound 0 for the two correct images at every eps.
  assert sem["cc_cert"] == {k: pytest.approx(2 / 3) for k in EPS_KEYS}
  # Clopper-Pearson with all N = 1000 draws correct: lower = alpha^(1/N)
  # = 0.99312, so certified only where 1 - eps <= 0.99312, i.e. eps = 1e-2;
  # no certificate from 1,000 draws reaches eps < 1 - 0.99312: n/a (None).
  assert sem["binomial"] == {
    k: (pytest.approx(2 / 3) if k == "1e-02" else None) for k in EPS_KEYS
  }
  assert sem["binomial_eps_min"] == pytest.approx(1 - 1e-3 ** (1 / 1000))
  assert sem["clean_accuracy"] == pytest.approx(2 / 3)
  assert sem["mean_changed_fraction"] == 0.0
  # Smoothing: all n = 100 votes for class 1 -> radius
  # sigma * Phi^-1(alpha^(1/100)) = 0.25 * 1.50 = 0.375.
  radius = 0.25 * scipy.stats.norm.ppf(1e-3 ** (1 / 100))
  assert 0.25 < radius < 0.5
  assert out["smoothing"] == {
    "0": pytest.approx(2 / 3),
    "0.25": pytest.approx(2 / 3),
    "0.5": 0.0,
  }
  assert out["smoothing_sigma"] == 0.25
  assert report_metrics.run_columns(out) == {
    "semantic CC-Cert@1e-2": pytest.approx(2 / 3),
    "semantic CP@1e-2": pytest.approx(2 / 3),
    "smoothing r=0.25": pytest.approx(2 / 3),
  }


def test_certify_matches_direct_certificates():
  """The stage's accuracies equal those recomputed from cc_cert and scipy.

  A wrong threshold (<= for <), a wrong eps mapping, a wrong key or a
  Clopper-Pearson bound computed from the wrong counts changes them.
  """
  w = jax.random.normal(jax.random.key(1), (4 * 4 * 3, 3))
  logits_fn = lambda b: 0.3 * b.reshape(b.shape[0], -1) @ w
  images = np.random.default_rng(1).uniform(size=(12, 4, 4, 3))
  labels = np.array(jnp.argmax(logits_fn(jnp.asarray(images)), -1))
  labels[:2] = (labels[:2] + 1) % 3  # two misclassified images
  cfg = _small_cfg(num_images=12, num_samples=40, num_bounds=5)
  cfg.eps = (1e-3, 6e-2, 1e-1, 2e-1, 5e-1)
  cfg.smoothing.enabled = False
  key = jax.random.key(2)
  out = certification.certify(cfg, key, logits_fn, images, labels)
  res = certify_lib.cc_cert(
    jax.random.fold_in(key, cfg.seed_offsets.semantic),
    logits_fn,
    images,
    samplers.make_sampler("semantic", cfg.variations),
    num_samples=40,
    num_bounds=5,
    delta=cfg.delta,
  )
  correct = np.asarray(res.pred) == labels
  kept = 200 - np.asarray(res.num_changed)
  lower = scipy.stats.beta.ppf(1e-3, np.maximum(kept, 1), 200 - kept + 1)
  eps_min = 1 - 1e-3 ** (1 / 200)  # 0.034: 1e-3 is n/a
  expected_cc, expected_binom = {}, {}
  for e in cfg.eps:
    k = certification.eps_key(e)
    expected_cc[k] = np.mean(correct & (np.asarray(res.bound) < e))
    expected_binom[k] = (
      np.mean(correct & (kept > 0) & (lower >= 1 - e)) if e >= eps_min else None
    )
  assert out["semantic"]["cc_cert"] == pytest.approx(expected_cc, abs=1e-12)
  assert out["semantic"]["binomial"] == {
    k: (v if v is None else pytest.approx(v, abs=1e-12))
    for k, v in expected_binom.items()
  }
  # The case is informative: levels certify different sets of images.
  assert len(set(expected_cc.values())) >= 3
  assert 0 < expected_binom["2e-01"] < 10 / 12
  assert expected_binom["1e-03"] is None
  assert 0.0 < out["semantic"]["mean_changed_fraction"] < 1.0
  # The same model with its weights as a traced Partial argument.
  partial = jax.tree_util.Partial(
    lambda weights, b: 0.3 * b.reshape(b.shape[0], -1) @ weights, w
  )
  assert certification.certify(cfg, key, partial, images, labels) == out
  # Per-image records: which images each certificate certifies.
  cfg.per_image = True
  per_image = certification.certify(cfg, key, logits_fn, images, labels)[
    "semantic"
  ]["per_image"]
  bits = lambda mask: "".join(str(int(m)) for m in mask)
  assert per_image["correct"] == bits(correct)
  assert per_image["cc_cert"]["1e-01"] == bits(
    correct & (np.asarray(res.bound) < 0.1)
  )
  assert per_image["binomial"]["2e-01"] == bits(correct & (lower >= 0.8))
  for k, acc in out["semantic"]["cc_cert"].items():
    assert per_image["cc_cert"][k].count("1") / 12 == pytest.approx(acc)
  # What certifies any other level: the bounds and the kept draws.
  # (1.0 and 0 for a misclassified image: never certified)
  assert per_image["cc_cert_bound"] == [
    float(b) if c else 1.0 for b, c in zip(res.bound, correct, strict=True)
  ]
  assert per_image["binomial_kept"] == [
    int(k) if c else 0 for k, c in zip(kept, correct, strict=True)
  ]
  bound = np.asarray(per_image["cc_cert_bound"])
  assert bits(correct & (bound < 0.05)) == bits(
    correct & (np.asarray(res.bound) < 0.05)
  )
  kept_back = np.asarray(per_image["binomial_kept"])
  lower_back = scipy.stats.beta.ppf(
    1e-3, np.maximum(kept_back, 1), 200 - kept_back + 1
  )
  assert per_image["binomial"]["2e-01"] == bits(correct & (lower_back >= 0.8))


def test_skip_misclassified_keeps_every_certificate_bit_for_bit():
  """Skipping the draws of misclassified images changes no accuracy, no
  per-image bit, only what is averaged over the drawn images."""
  w = jax.random.normal(jax.random.key(1), (4 * 4 * 3, 3))
  logits_fn = jax.tree_util.Partial(
    lambda weights, b: 0.3 * b.reshape(b.shape[0], -1) @ weights, w
  )
  images = np.random.default_rng(1).uniform(size=(12, 4, 4, 3))
  labels = np.array(jnp.argmax(logits_fn(jnp.asarray(images)), -1))
  labels[[0, 5, 7]] = (labels[[0, 5, 7]] + 1) % 3  # three misclassified
  cfg = _small_cfg(num_images=12, num_samples=40, num_bounds=5)
  cfg.eps = (1e-3, 6e-2, 1e-1, 2e-1, 5e-1)
  cfg.smoothing.enabled = False
  cfg.per_image = True
  key = jax.random.key(2)
  out = {}
  for skip in (False, True):
    cfg.skip_misclassified = skip
    out[skip] = certification.certify(cfg, key, logits_fn, images, labels)
  full, skip = out[False]["semantic"], out[True]["semantic"]
  assert (full["num_skipped"], skip["num_skipped"]) == (0, 3)
  res = certify_lib.cc_cert(
    jax.random.fold_in(key, cfg.seed_offsets.semantic),
    logits_fn,
    images,
    certification.sampler_for("semantic", cfg.variations),
    num_samples=40,
    num_bounds=5,
  )
  changed = np.asarray(res.num_changed, np.int64)
  drawn = np.ones(12, bool)
  drawn[[0, 5, 7]] = False
  assert full["mean_changed_fraction"] == np.mean(changed) / 200
  assert skip["mean_changed_fraction"] == np.mean(changed[drawn]) / 200
  assert skip["mean_changed_fraction"] != full["mean_changed_fraction"]
  for sem in (full, skip):
    del sem["mean_changed_fraction"], sem["num_skipped"]
  assert skip == full  # accuracies, per-image bits, binomial: all equal
  # The case is informative: levels certify different images.
  assert len(set(full["cc_cert"].values())) >= 3
  assert len({v for v in full["binomial"].values() if v is not None}) >= 2
  assert full["per_image"]["correct"] == "011110101111"


def test_skip_misclassified_when_every_image_is_misclassified():
  cfg = _small_cfg(num_samples=10, num_bounds=2, eps=(1e-2, 0.5))
  cfg.smoothing.enabled = False
  images = np.random.default_rng(0).uniform(size=(3, 4, 4, 3))
  labels = np.array([0, 2, 0])  # the constant model predicts 1
  sem = certification.certify(
    cfg, jax.random.key(0), _constant_logits, images, labels
  )["semantic"]
  assert sem["num_skipped"] == 3
  assert sem["mean_changed_fraction"] is None
  assert sem["clean_accuracy"] == 0.0
  assert sem["cc_cert"] == {"1e-02": 0.0, "5e-01": 0.0}
  # 20 draws: eps_min = 0.29, so 1e-2 is n/a.
  assert sem["binomial"] == {"1e-02": None, "5e-01": 0.0}


def test_skip_misclassified_config_default_and_validation():
  cfg = get_certify_config()
  assert cfg.skip_misclassified is True
  certification.validate_certify_config(cfg)
  bad = cfg.to_dict()
  bad["skip_misclassified"] = "yes"
  with pytest.raises(ValueError, match="skip_misclassified must be a bool"):
    certification.validate_certify_config(ml_collections.ConfigDict(bad))
  # A config stored before the field ran as its default: no difference.
  from experiments import experiment
  from experiments.configs import default

  new = json.loads(default.get_config().to_json())
  old = json.loads(default.get_config().to_json())
  del old["certify"]["skip_misclassified"]
  assert experiment.differing_fields(old, new) == []
  new["certify"]["skip_misclassified"] = False
  assert experiment.differing_fields(old, new) == ["certify.skip_misclassified"]


def test_certify_reuses_compiled_draw_program_across_models():
  """A second model (new weights, a new but equal config) is certified by
  the compiled program of the first: no retrace, no recompilation."""
  from csam_jax._src.certify import chernoff_cramer

  def apply_fn(weights, b):  # defined here: a program of its own
    return b.reshape(b.shape[0], -1) @ weights

  images = np.random.default_rng(0).uniform(size=(3, 4, 4, 3))
  sizes = []
  for seed in (0, 1):
    w = jax.random.normal(jax.random.key(seed), (4 * 4 * 3, 3))
    cfg = _small_cfg(num_samples=10, num_bounds=2)
    cfg.smoothing.enabled = False
    certification.certify(
      cfg,
      jax.random.key(0),
      jax.tree_util.Partial(apply_fn, w),
      images,
      np.array([0, 1, 2]),
    )
    sizes.append(chernoff_cramer._cc_draws._cache_size())
  assert sizes[1] == sizes[0]
  v = _small_cfg().variations
  assert certification.sampler_for("semantic", v) is (
    certification.sampler_for("semantic", _small_cfg().variations)
  )
  assert certification.sampler_for("rotation", v) is not (
    certification.sampler_for("semantic", v)
  )


def _grey(values, size=8):
  values = np.asarray(values, np.float32)
  shape = (len(values), size, size, 3)
  return np.broadcast_to(values[:, None, None, None], shape)


def _centre_pixel_logits(b):
  """Class 0 iff the centre pixel is brighter than 0.5 (saturated)."""
  c = b[:, b.shape[1] // 2, b.shape[2] // 2, :].mean(-1) - 0.5
  return 100.0 * jnp.stack([c, -c], -1)


def _within_4_sigma(fraction, p, n):
  """A flip fraction over two images, one flipping w.p. p, one never."""
  return abs(fraction - p / 2) < 4 * np.sqrt(p * (1 - p) / n) / 2


def test_per_family_distributions_and_contrast_convention():
  # A grey 0.45 image: rotation keeps its centre pixel (no flip); brightness
  # +-0.2 crosses 0.5 when delta > 0.05 (p = 0.375); contrast x*c crosses it
  # when c > 1.11 ("zero", the CC-Cert convention, p = 0.31) but keeps a
  # constant image under "mean". A 0.1 image is never flipped.
  cfg = _small_cfg(num_images=2, num_samples=50, num_bounds=4)
  cfg.distributions = ("semantic", "rotation", "brightness", "contrast")
  cfg.variations.ranges = dict(rotation=10.0, brightness=0.2, contrast=1.3)
  cfg.smoothing.enabled = False
  images, labels = _grey([0.45, 0.1]), np.array([1, 1])
  out = certification.certify(
    cfg, jax.random.key(4), _centre_pixel_logits, images, labels
  )
  cc = {d: out[d]["cc_cert"]["1e-02"] for d in cfg.distributions}
  assert cc == {
    "semantic": 0.5,
    "rotation": 1.0,
    "brightness": 0.5,
    "contrast": 0.5,
  }
  changed = {d: out[d]["mean_changed_fraction"] for d in cfg.distributions}
  assert changed["rotation"] == 0.0
  assert _within_4_sigma(changed["brightness"], 0.375, 200)
  assert _within_4_sigma(changed["contrast"], (1.3 - 0.5 / 0.45) / 0.6, 200)
  assert report_metrics.run_columns(out)["rotation CC-Cert@1e-2"] == 1.0
  assert out["conventions"]["contrast_center"] == "zero"
  cfg.variations.contrast_center = "mean"
  cfg.distributions = ("contrast",)
  out = certification.certify(
    cfg, jax.random.key(4), _centre_pixel_logits, images, labels
  )
  assert out["contrast"]["cc_cert"]["1e-02"] == 1.0
  assert out["contrast"]["mean_changed_fraction"] == 0.0
  assert out["conventions"]["contrast_center"] == "mean"


def test_certify_corruptions_distribution_uses_its_input():
  # Corruption sampler over contrast-2 (a grey image is unchanged) and
  # brightness-2 (+0.1 in HSV value): the 0.45 image flips exactly on the
  # brightness draws (half of them), the 0.1 image never.
  cfg = _small_cfg(
    num_images=2, num_samples=50, num_bounds=4, distributions=("corruptions",)
  )
  cfg.variations.update(
    dict(
      corruption_names=("contrast", "brightness"), corruption_severities=(2,)
    )
  )
  cfg.smoothing.enabled = False
  out = certification.certify(
    cfg,
    jax.random.key(3),
    _centre_pixel_logits,
    _grey([0.45, 0.1]),
    np.array([1, 1]),
  )
  assert "semantic" not in out
  corr = out["corruptions"]
  assert corr["cc_cert"] == {k: 0.5 for k in EPS_KEYS}
  # 200 draws cannot give a Clopper-Pearson certificate below eps = 0.034.
  assert corr["binomial"] == {k: None for k in EPS_KEYS}
  assert corr["binomial_eps_min"] == pytest.approx(1 - 1e-3 ** (1 / 200))
  assert _within_4_sigma(corr["mean_changed_fraction"], 0.5, 200)


def test_bad_config_raises():
  images, labels = np.zeros((2, 4, 4, 3)), np.array([1, 1])
  for field, value, match in (
    ("distributions", ("fog",), "distributions"),
    ("distributions", (), "distributions"),
    ("num_samples", 0, "num_samples"),
    ("delta", 1.5, "delta"),
    ("eps", (0.0, 1e-2), "eps"),
  ):
    cfg = _small_cfg(**{field: value})
    with pytest.raises(ValueError, match=match):
      certification.certify(
        cfg, jax.random.key(0), _constant_logits, images, labels
      )
  cfg = _small_cfg()
  cfg.binomial.alpha = 1.0
  with pytest.raises(ValueError, match="binomial.alpha"):
    certification.certify(
      cfg, jax.random.key(0), _constant_logits, images, labels
    )
  with pytest.raises(ValueError, match="labels"):
    certification.certify(
      _small_cfg(), jax.random.key(0), _constant_logits, images, labels[:1]
    )
  with pytest.raises(ValueError, match="the distribution must be one of"):
    samplers.make_sampler("weather", _small_cfg().variations)


def _run(method, sparsity, cc, clean=0.9, seed=0):
  return dict(
    method=method,
    sparsity=sparsity,
    seed=seed,
    clean_accuracy=clean,
    certification={
      "num_images": 10,
      "semantic": {
        "cc_cert": {k: cc * (i + 1) / 9 for i, k in enumerate(EPS_KEYS)},
        "binomial": {k: 0.0 for k in EPS_KEYS},
      },
    },
  )


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path):
  runs = [_run("dense", 0.0, 0.8), _run("csam", 0.8, 0.6)]
  path = str(tmp_path / "eps.png")
  assert plots.plot_certified_vs_eps(runs, path) == path and _is_png(path)
  path = str(tmp_path / "sparsity.png")
  runs += [_run("csam", 0.9, 0.5, clean=0.8)]
  assert plots.plot_vs_sparsity(runs, path) == path and _is_png(path)


def test_plots_skip_when_nothing_to_plot(tmp_path):
  path = str(tmp_path / "x.png")
  no_cert = [dict(method="dense", sparsity=0.5, clean_accuracy=0.9)]
  assert plots.plot_certified_vs_eps(no_cert, path) is None
  one_sparsity = [_run("hydra", 0.9, 0.5), _run("csam", 0.9, 0.6)]
  assert plots.plot_vs_sparsity(one_sparsity, path) is None
  assert not (tmp_path / "x.png").exists()
