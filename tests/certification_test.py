"""Tests of the certification stage, its config and its plots."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from experiments import certification, plots
from experiments.configs.certify_config import get_certify_config

EPS_KEYS = [f"1e-{k:02d}" for k in range(10, 1, -1)]


def _constant_logits(b):
  """Predicts class 1 whatever the input: invariant under every T."""
  return jnp.broadcast_to(jnp.array([0.0, 4.0, -1.0]), (b.shape[0], 3)) + (
    0.0 * b.sum()
  )


def _small_cfg(**overrides):
  cfg = get_certify_config()
  cfg.update(dict(num_images=3, num_samples=100, num_bounds=10, batch_size=512))
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
  # = 0.99312, so certified only where 1 - eps <= 0.99312, i.e. eps = 1e-2.
  assert sem["binomial"] == {
    k: (pytest.approx(2 / 3) if k == "1e-02" else 0.0) for k in EPS_KEYS
  }
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
  assert certification.headline_columns(out) == {
    "semantic cc-cert@1e-2": pytest.approx(2 / 3),
    "semantic binom@1e-2": pytest.approx(2 / 3),
    "smoothing r=0.25": pytest.approx(2 / 3),
  }


def test_certify_sensitive_model_is_monotone_in_eps():
  w = jax.random.normal(jax.random.key(1), (4 * 4 * 3, 3))
  logits_fn = lambda b: 3.0 * b.reshape(b.shape[0], -1) @ w
  images = np.random.default_rng(1).uniform(size=(6, 4, 4, 3))
  labels = np.asarray(jnp.argmax(logits_fn(jnp.asarray(images)), -1))
  cfg = _small_cfg(num_images=6, num_samples=20, num_bounds=5)
  cfg.smoothing.enabled = False
  out = certification.certify(cfg, jax.random.key(2), logits_fn, images, labels)
  assert "smoothing" not in out
  for method in ("cc_cert", "binomial"):
    accs = [out["semantic"][method][k] for k in EPS_KEYS]
    assert all(0.0 <= a <= 1.0 for a in accs)
    assert accs == sorted(accs)  # a larger eps certifies at least as many
  assert out["semantic"]["clean_accuracy"] == 1.0
  assert 0.0 < out["semantic"]["mean_changed_fraction"] < 1.0
  # The same model with its weights as a traced Partial argument.
  partial = jax.tree_util.Partial(
    lambda weights, b: 3.0 * b.reshape(b.shape[0], -1) @ weights, w
  )
  assert (
    certification.certify(cfg, jax.random.key(2), partial, images, labels)
    == out
  )


def test_certify_corruptions_distribution():
  cfg = _small_cfg(
    num_images=2, num_samples=4, num_bounds=2, distributions=("corruptions",)
  )
  cfg.corruptions.update(
    dict(names=("contrast", "brightness"), severities=(1,))
  )
  cfg.smoothing.enabled = False
  images = np.random.default_rng(2).uniform(size=(2, 8, 8, 3))
  out = certification.certify(
    cfg, jax.random.key(3), _constant_logits, images, np.array([1, 1])
  )
  assert "semantic" not in out
  assert out["corruptions"]["cc_cert"] == {k: 1.0 for k in EPS_KEYS}


def test_bad_config_raises():
  images, labels = np.zeros((2, 4, 4, 3)), np.array([1, 1])
  for field, value, match in (
    ("distributions", ("fog",), "distributions"),
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
  with pytest.raises(ValueError, match="unknown distribution"):
    certification.sample_fn_for(_small_cfg(), "weather")


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
