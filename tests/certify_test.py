"""Tests of csam_jax.certify: CC-Cert, binomial and smoothing certificates."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from csam_jax import certify, variations
from csam_jax._src.certify import chernoff_cramer as cc_cert_lib
from csam_jax._src.certify import smoothing as smoothing_lib

EPS_GRID = [10.0**-k for k in range(10, 1, -1)]


def _numpy_cc_bound(z, a, num_bounds, delta=0.9):
  """The reference formula evaluated directly (no log space), float64."""
  t = np.linspace(1e-4, 1e4, 500)
  groups = z.reshape(z.shape[:-1] + (num_bounds, -1))
  e_exp = np.mean(np.exp(groups[..., None] * t), axis=-2)
  ratio = e_exp / np.exp(a[..., None, None] * t)
  return np.minimum(1.0, np.max(np.min(ratio, axis=-1), axis=-1) / delta)


def _linear_logits(weights):
  """logits = flatten(images) @ weights (a fixed multi-class linear model)."""
  w = jnp.asarray(weights, jnp.float32)
  return lambda b: b.reshape(b.shape[0], -1) @ w


# ------------------------------------------------------------- cc_bound --


def test_cc_bound_matches_direct_numpy_formula():
  rng = np.random.default_rng(0)
  # Small z and margins keep exp(t z) finite in float64 for t <= 1e4, so the
  # direct (overflowing in general) formula can serve as the reference.
  z = 0.06 * rng.beta(1.0, 4.0, size=(4, 60))
  margin = rng.uniform(0.02, 0.05, size=(4,))
  expected = _numpy_cc_bound(z, margin, num_bounds=3)
  assert np.all((expected > 1e-30) & (expected < 1.0))  # non-trivial cases
  with jax.enable_x64(True):
    got = np.asarray(certify.cc_bound(z, margin, num_bounds=3))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # float32 agrees to float32 accuracy of t * (z - a) with t up to 1e4.
  got32 = certify.cc_bound(
    z.astype(np.float32), margin.astype(np.float32), num_bounds=3
  )
  np.testing.assert_allclose(np.asarray(got32), expected, rtol=2e-3)


def test_cc_bound_log_ratios_finite_on_whole_grid():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.uniform(0.0, 1.0, size=(3, 100)), jnp.float32)
  margin = jnp.asarray([0.0, 0.2, 0.5], jnp.float32)
  t = jnp.linspace(1e-4, 1e4, 500)
  log_r = cc_cert_lib._cc_log_ratios(z, margin, t, num_bounds=10)
  assert log_r.shape == (3, 10, 500)
  assert bool(jnp.all(jnp.isfinite(log_r)))
  with np.errstate(over="ignore"):
    assert np.isinf(np.exp(np.asarray(z)[0, :, None] * np.asarray(t))).any()
  bound = certify.cc_bound(z, margin)
  assert bool(jnp.all(jnp.isfinite(bound)))
  assert bool(jnp.all((bound >= 0) & (bound <= 1)))


def test_cc_bound_hand_cases():
  # z == 0: R(t) = exp(-t a); min at t = 1e4 -> exp(-1e4 * a) / delta.
  z = jnp.zeros((2, 10))
  got = certify.cc_bound(z, jnp.array([1e-3, 0.0]), num_bounds=2, delta=0.5)
  np.testing.assert_allclose(got, [np.exp(-10.0) / 0.5, 1.0], rtol=1e-5)
  # z >= a everywhere: R(t) >= 1 -> bound 1.
  got = certify.cc_bound(jnp.full((1, 10), 0.3), jnp.array([0.2]), num_bounds=5)
  np.testing.assert_allclose(got, [1.0])


# --------------------------------------------------------------- cc_cert --


def test_invariant_model_certified_at_every_eps():
  const = jnp.array([0.0, 3.0, -1.0])
  logits_fn = lambda b: jnp.broadcast_to(const, (b.shape[0], 3)) + 0 * b.sum()
  sample_fn = variations.compose(variations.CC_CERT_RANGES)
  x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 3))
  res = certify.cc_cert(
    jax.random.key(1),
    logits_fn,
    x,
    sample_fn,
    num_samples=20,
    num_bounds=5,
    batch_size=32,
  )
  assert res.pred.tolist() == [1, 1, 1]
  assert res.num_changed.tolist() == [0, 0, 0]
  assert float(jnp.max(res.bound)) < 1e-30
  assert certify.certified_accuracy(res, [1, 1, 1], EPS_GRID) == [1.0] * 9
  # The image must also be classified correctly to be certified.
  assert certify.certified_accuracy(res, [0, 1, 1], 1e-2) == pytest.approx(
    2 / 3
  )


def test_flipping_model_never_certified():
  # x = 0.2 -> class 1; the transformation maps x to 1 - x -> class 0.
  logits_fn = lambda b: 5.0 * jnp.stack([b[:, 0, 0, 0], 1 - b[:, 0, 0, 0]], -1)
  sample_fn = lambda key, im: 1.0 - im + 0.0 * jax.random.uniform(key)
  x = jnp.full((2, 1, 1, 1), 0.2)
  res = certify.cc_cert(
    jax.random.key(0),
    logits_fn,
    x,
    sample_fn,
    num_samples=10,
    num_bounds=4,
    batch_size=16,
  )
  assert res.pred.tolist() == [1, 1]
  assert res.num_changed.tolist() == [40, 40]
  np.testing.assert_allclose(res.bound, [1.0, 1.0])
  assert (
    certify.certified_accuracy(res, [1, 1], EPS_GRID + [0.5, 0.99])
    == [0.0] * 11
  )


@functools.cache
def _cc_problem():
  # Cached: the same callables let tests share compiled programs.
  w = jax.random.normal(jax.random.key(3), (6 * 6 * 3, 4))
  logits_fn = _linear_logits(w)
  sample_fn = variations.compose(
    {"rotation": 30.0, "brightness": 0.3, "gaussian_noise": 0.1}
  )
  x = jax.random.uniform(jax.random.key(4), (3, 6, 6, 3))
  return logits_fn, sample_fn, x


def test_cc_cert_chunking_invariance():
  logits_fn, sample_fn, x = _cc_problem()
  key = jax.random.key(5)
  results = [
    certify.cc_cert(
      key, logits_fn, x, sample_fn, num_samples=8, num_bounds=5, batch_size=bs
    )
    for bs in (7, 1000)
  ]
  assert 0 < int(results[0].num_changed.sum()) < 120  # non-trivial draws
  for res in results[1:]:
    np.testing.assert_array_equal(res.pred, results[0].pred)
    np.testing.assert_array_equal(res.num_changed, results[0].num_changed)
    np.testing.assert_allclose(res.margin, results[0].margin, rtol=1e-6)
    np.testing.assert_allclose(res.bound, results[0].bound, rtol=1e-5)


def test_cc_cert_vmapped_equals_looped():
  logits_fn, sample_fn, x = _cc_problem()
  key = jax.random.key(6)
  res = certify.cc_cert(
    key, logits_fn, x, sample_fn, num_samples=6, num_bounds=2, batch_size=5
  )
  image_keys = jax.random.split(key, x.shape[0])

  @jax.jit
  def one_draw(image_key, j, image):  # one transformed sample, unbatched
    p0 = jax.nn.softmax(logits_fn(image[None])[0])
    xt = sample_fn(jax.random.fold_in(image_key, j), image)
    p = jax.nn.softmax(logits_fn(xt[None])[0])
    return jnp.max(jnp.abs(p - p0)), jnp.argmax(p) != jnp.argmax(p0)

  zs, changed = [], []
  for i in range(x.shape[0]):
    row, flips = [], 0
    for j in range(12):
      z, flip = one_draw(image_keys[i], j, x[i])
      row.append(float(z))
      flips += int(flip)
    zs.append(row)
    changed.append(flips)
  assert res.num_changed.tolist() == changed
  top2 = jax.lax.top_k(jax.nn.softmax(logits_fn(x)), 2)[0]
  margin = (top2[:, 0] - top2[:, 1]) / 2
  np.testing.assert_allclose(res.margin, margin, rtol=1e-6)
  expected = certify.cc_bound(jnp.asarray(zs), margin, num_bounds=2)
  np.testing.assert_allclose(res.bound, expected, rtol=1e-5, atol=1e-30)


def test_cc_cert_deterministic_for_key():
  logits_fn, sample_fn, x = _cc_problem()

  def run(seed):
    return certify.cc_cert(
      jax.random.key(seed),
      logits_fn,
      x,
      sample_fn,
      num_samples=8,
      num_bounds=5,
      batch_size=7,
    )

  a, b, c = run(7), run(7), run(8)
  assert not np.array_equal(a.num_changed, c.num_changed)
  jax.tree.map(np.testing.assert_array_equal, a, b)


# ------------------------------------------ cc_cert: misclassified skip --


class _RecordingNoise:
  """Gaussian noise on features 1: of [id, features] vectors; its batched
  form (one call per chunk of draws) records the ids of every chunk."""

  def __init__(self):
    self.chunks = []

  def __call__(self, key, v):
    return v.at[1:].add(0.05 * jax.random.normal(key, v[1:].shape))

  def sample_batch(self, keys, vs):
    jax.debug.callback(
      lambda ids: self.chunks.append(np.asarray(ids, int)), vs[:, 0]
    )
    return jax.vmap(self)(keys, vs)


def _skip_problem():
  """12 [id, features] inputs, a linear model on the features, and labels
  that make images 1, 3, 5 and 10 misclassified."""
  w = jax.random.normal(jax.random.key(0), (6, 3))
  logits_fn = jax.tree_util.Partial(lambda w, v: 0.05 * v[:, 1:] @ w, w)
  feats = jax.random.normal(jax.random.key(1), (12, 6))
  x = jnp.concatenate([jnp.arange(12.0)[:, None], feats], axis=1)
  pred = np.asarray(jnp.argmax(logits_fn(x), axis=-1))
  labels = pred.copy()
  labels[[1, 3, 5, 10]] = (pred[[1, 3, 5, 10]] + 1) % 3
  return logits_fn, x, pred, labels


def _run_recorded(logits_fn, x, sampler, labels=None):
  """cc_cert (N = 100, chunks of 7 straddling images) and its chunks."""
  sampler.chunks.clear()
  res = certify.cc_cert(
    jax.random.key(2),
    logits_fn,
    x,
    sampler,
    num_samples=20,
    num_bounds=5,
    batch_size=7,
    labels=labels,
  )
  jax.effects_barrier()
  return res, list(sampler.chunks)


def test_cc_cert_skips_misclassified_bit_for_bit():
  logits_fn, x, pred, labels = _skip_problem()
  sampler = _RecordingNoise()
  full, full_chunks = _run_recorded(logits_fn, x, sampler)
  skip, skip_chunks = _run_recorded(logits_fn, x, sampler, labels)
  drawn = pred == labels
  # The case is informative: bounds of drawn images from 0 to 0.35.
  assert np.asarray(full.bound)[drawn].tolist() == pytest.approx(
    [1.43e-23, 0, 0, 0, 0, 2.46e-5, 0, 0.349], rel=0.02
  )
  # Drawn images: the draws, bounds and flip counts of the full run.
  np.testing.assert_array_equal(skip.pred, full.pred)
  np.testing.assert_array_equal(skip.margin, full.margin)
  np.testing.assert_array_equal(
    np.asarray(skip.bound)[drawn], np.asarray(full.bound)[drawn]
  )
  np.testing.assert_array_equal(
    np.asarray(skip.num_changed)[drawn], np.asarray(full.num_changed)[drawn]
  )
  # Skipped images: the documented fills, and never a draw.
  assert np.asarray(skip.bound)[~drawn].tolist() == [1.0] * 4
  assert np.asarray(skip.num_changed)[~drawn].tolist() == [-1] * 4
  assert certify.NOT_DRAWN == -1 and certify.NOT_DRAWN_BOUND == 1.0
  assert len(full_chunks) == 172  # ceil(12 * 100 / 7)
  assert len(skip_chunks) == 115  # ceil(8 * 100 / 7)
  seen = np.concatenate(skip_chunks)
  assert sorted(set(seen.tolist())) == np.flatnonzero(drawn).tolist()
  assert np.bincount(seen[:800], minlength=12).tolist() == [
    100 * int(d) for d in drawn
  ]
  # Same certified accuracies and certified images at every level.
  levels = EPS_GRID + [1e-1, 0.3, 0.5, 0.99]
  accs = certify.certified_accuracy(skip, labels, levels)
  assert accs == certify.certified_accuracy(full, labels, levels)
  assert accs == [6 / 12] * 6 + [7 / 12] * 5 + [8 / 12] * 2
  for e in levels:
    np.testing.assert_array_equal(
      drawn & (np.asarray(skip.bound) < e), drawn & (np.asarray(full.bound) < e)
    )


def test_cc_cert_skip_none_or_all_misclassified():
  logits_fn, x, pred, _ = _skip_problem()
  sampler = _RecordingNoise()
  full, full_chunks = _run_recorded(logits_fn, x, sampler)
  # None misclassified: every field and every chunk as without labels.
  none, none_chunks = _run_recorded(logits_fn, x, sampler, pred)
  jax.tree.map(np.testing.assert_array_equal, none, full)
  assert len(none_chunks) == len(full_chunks) == 172  # ceil(1200 / 7)
  np.testing.assert_array_equal(
    np.concatenate(none_chunks), np.concatenate(full_chunks)
  )
  # All misclassified: no draw at all, nothing certified.
  wrong = (pred + 1) % 3
  res, chunks = _run_recorded(logits_fn, x, sampler, wrong)
  assert chunks == []
  np.testing.assert_array_equal(res.pred, full.pred)
  assert np.asarray(res.bound).tolist() == [1.0] * 12
  assert np.asarray(res.num_changed).tolist() == [-1] * 12
  levels = EPS_GRID + [0.99]
  assert certify.certified_accuracy(res, wrong, levels) == [0.0] * 10
  assert certify.certified_accuracy(full, wrong, levels) == [0.0] * 10


def test_cc_cert_skip_bad_labels_raise():
  logits_fn, x, _, _ = _skip_problem()
  with pytest.raises(ValueError, match="labels"):
    certify.cc_cert(
      jax.random.key(0), logits_fn, x, _RecordingNoise(), labels=[0, 1]
    )


# ---------------------------------------------------- binomial certificate --


def test_clopper_pearson_matches_scipy_beta():
  for n in (1, 7, 100):
    k = np.arange(n + 1)
    got = certify.clopper_pearson_lower(k, n, 0.01)
    assert got[0] == 0.0
    np.testing.assert_allclose(
      got[1:], scipy.stats.beta.ppf(0.01, k[1:], n - k[1:] + 1), rtol=1e-12
    )
    np.testing.assert_allclose(got[-1], 0.01 ** (1 / n), rtol=1e-10)


def test_binomial_certificate_coverage():
  # 2,000 independent trials in one call (one "image" per trial). The
  # transformation draws u ~ U[0, 1) and the model is right iff u < p, so
  # P(correct under T) = p exactly.
  p, trials, num_samples, alpha = 0.9, 2000, 50, 0.05
  logits_fn = lambda b: jnp.stack([p - b[:, 0, 0, 0], b[:, 0, 0, 0] - p], -1)
  sample_fn = lambda key, im: im + jax.random.uniform(key, im.shape)
  x = jnp.zeros((trials, 1, 1, 1))
  cert = certify.binomial_certificate(
    jax.random.key(0),
    logits_fn,
    x,
    np.zeros(trials, int),
    sample_fn,
    num_samples=num_samples,
    alpha=alpha,
    batch_size=20_000,
  )
  # Empirical success rate is p (the draws are right).
  assert abs(cert.num_correct.mean() / num_samples - p) < 0.005
  slack = 3 * np.sqrt(trials * alpha * (1 - alpha))
  assert np.sum(cert.lower_bound > p) <= alpha * trials + slack
  # A false claim P >= 1 - eps with 1 - eps = 0.92 > p is rarely certified.
  certified = certify.certified_accuracy(cert, np.zeros(trials, int), 0.08)
  assert certified * trials <= alpha * trials + slack
  # ... while the bound stays informative.
  assert cert.lower_bound.mean() > p - 0.12


def test_binomial_counts_only_correct_clean_predictions():
  # Clean input 0 is predicted as class 1, every transformed draw (+1) as
  # class 0 = the label: all N draws are correct, yet the clean prediction
  # is wrong, so neither CC-Cert nor the binomial certificate certifies it.
  logits_fn = lambda b: jnp.stack([b[:, 0] - 0.5, 0.5 - b[:, 0]], -1)
  shift = lambda key, v: v + 1.0
  x, labels = jnp.array([[0.0], [1.0]]), np.array([0, 0])
  cert = certify.binomial_certificate(
    jax.random.key(0), logits_fn, x, labels, shift, num_samples=100
  )
  assert cert.num_correct.tolist() == [100, 100]
  assert cert.pred.tolist() == [1, 0]
  assert certify.certified_accuracy(cert, labels, 1e-1) == 0.5
  # At eps below 1 - alpha^(1/N) nothing can be certified.
  eps_min = 1 - 1e-3 ** (1 / 100)
  assert certify.certified_accuracy(cert, labels, 0.99 * eps_min) == 0.0
  assert certify.certified_accuracy(cert, labels, 1.01 * eps_min) == 0.5


def test_certifiers_accept_feature_vectors():
  # The same 5 inputs as (5, 4) vectors and as (5, 1, 1, 4) images: every
  # certifier gives the same result for the same key.
  logits_fn, images, _ = _linear_binary()
  vectors = images.reshape(5, 4)
  noise = lambda key, v: v + 0.3 * jax.random.normal(key, v.shape)
  labels = np.array([1, 1, 1, 0, 0])
  key = jax.random.key(7)
  for run in (
    lambda x: certify.cc_cert(
      key, logits_fn, x, noise, num_samples=20, num_bounds=5
    ),
    lambda x: certify.binomial_certificate(
      key, logits_fn, x, labels, noise, num_samples=50
    ),
    lambda x: certify.smoothing_certify(
      key, logits_fn, x, sigma=0.5, n0=20, n=200
    ),
    lambda x: certify.smoothing_predict(
      key, logits_fn, x, sigma=0.5, n=100, alpha=0.01
    ),
  ):
    for a, b in zip(
      jax.tree.leaves(run(vectors)), jax.tree.leaves(run(images)), strict=True
    ):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------- smoothing --


def _linear_binary():
  w = np.array([1.0, -2.0, 0.5, 1.0])
  b = 0.3
  logits_fn = lambda x: jnp.stack(
    [jnp.zeros(x.shape[0]), x.reshape(x.shape[0], -1) @ w + b], -1
  )
  unit = w / np.linalg.norm(w)
  # Points at signed distances from the hyperplane w.x + b = 0.
  distances = np.array([0.1, 0.4, 0.8, -0.6, 0.0])
  base = -b * w / np.dot(w, w)
  x = base[None] + distances[:, None] * unit[None]
  return logits_fn, x.reshape(-1, 1, 1, 4).astype(np.float32), distances


def test_smoothing_certify_linear_closed_form():
  sigma, n, alpha = 0.5, 10_000, 1e-3
  logits_fn, x, distances = _linear_binary()
  pred, radius = certify.smoothing_certify(
    jax.random.key(0),
    logits_fn,
    x,
    sigma=sigma,
    n0=100,
    n=n,
    alpha=alpha,
    batch_size=4096,
  )
  assert pred.tolist()[:4] == [1, 1, 1, 0]
  assert pred[4] == certify.ABSTAIN and radius[4] == 0.0
  # Smoothed classifier of a linear one: pA = Phi(|d| / sigma), true radius
  # sigma * Phi^-1(pA) = |d|. The certified radius uses the Clopper-Pearson
  # bound of k ~ Binomial(n, pA): bracket it at k = n pA -/+ 4 sd.
  p_a = scipy.stats.norm.cdf(np.abs(distances[:4]) / sigma)
  sd = np.sqrt(n * p_a * (1 - p_a))
  lo_k = np.floor(n * p_a - 4 * sd).astype(int)
  hi_k = np.ceil(n * p_a + 4 * sd).astype(int)
  lo = sigma * scipy.stats.norm.ppf(
    certify.clopper_pearson_lower(lo_k, n, alpha)
  )
  hi = sigma * scipy.stats.norm.ppf(
    certify.clopper_pearson_lower(hi_k, n, alpha)
  )
  assert np.all((radius[:4] >= lo) & (radius[:4] <= hi))
  assert np.all(radius[:4] < np.abs(distances[:4]))  # a lower bound


def test_smoothing_predict_abstains_at_the_boundary():
  logits_fn, x, _ = _linear_binary()
  pred = certify.smoothing_predict(
    jax.random.key(1),
    logits_fn,
    x,
    sigma=0.5,
    n=2000,
    alpha=1e-3,
    batch_size=1024,
  )
  assert pred.tolist() == [1, 1, 1, 0, certify.ABSTAIN]


def test_binomial_test_pvalue_matches_scipy():
  for n_a in range(0, 30, 3):
    for n_b in range(0, n_a + 1, 2):
      if n_a + n_b == 0:
        continue
      expected = scipy.stats.binomtest(n_a, n_a + n_b, 0.5).pvalue
      got = smoothing_lib._binomial_test_pvalue(np.array(n_a), np.array(n_b))
      np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_smoothing_and_binomial_chunking_invariance():
  logits_fn, x, _ = _linear_binary()
  certs = [
    certify.smoothing_certify(
      jax.random.key(2),
      logits_fn,
      x,
      sigma=1.0,
      n0=300,
      n=300,
      alpha=0.01,
      batch_size=bs,
    )
    for bs in (13, 2000)
  ]
  np.testing.assert_array_equal(certs[0].pred, certs[1].pred)
  np.testing.assert_array_equal(certs[0].radius, certs[1].radius)
  sample_fn = lambda key, im: im + 0.5 * jax.random.normal(key, im.shape)
  bins = [
    certify.binomial_certificate(
      jax.random.key(3),
      logits_fn,
      x,
      [1, 1, 1, 0, 1],
      sample_fn,
      num_samples=100,
      batch_size=bs,
    )
    for bs in (9, 1000)
  ]
  np.testing.assert_array_equal(bins[0].num_correct, bins[1].num_correct)
  assert 0 < bins[0].num_correct.sum() < 500


# ------------------------------------------- Partial: params as arguments --


def test_partial_logits_fn_compiles_once_and_matches_closures():
  traces = []

  def apply_fn(w, images):  # defined here: no compiled program to reuse
    traces.append(1)  # runs once per trace, never when a program is reused
    return images.reshape(images.shape[0], -1) @ w

  _, sample_fn, x = _cc_problem()
  ws = [jax.random.normal(jax.random.key(k), (6 * 6 * 3, 4)) for k in (10, 11)]
  labels = [0, 1, 2]
  cc_kw = dict(num_samples=4, num_bounds=2, batch_size=8)
  binom_kw = dict(num_samples=8, batch_size=8)
  smooth_kw = dict(sigma=0.5, n0=16, n=16, batch_size=8)

  def run_all(logits_fn):
    return (
      certify.cc_cert(jax.random.key(12), logits_fn, x, sample_fn, **cc_kw),
      certify.binomial_certificate(
        jax.random.key(13), logits_fn, x, labels, sample_fn, **binom_kw
      ),
      certify.smoothing_certify(jax.random.key(14), logits_fn, x, **smooth_kw),
    )

  results, num_traces = [], []
  for w in ws:
    results.append(run_all(jax.tree_util.Partial(apply_fn, w)))
    num_traces.append(len(traces))
  # Every certifier traced the function for the first params only.
  assert num_traces[0] > 0 and num_traces[1] == num_traces[0]
  assert not np.array_equal(results[0][0].margin, results[1][0].margin)
  # The reused programs give, for the second params, exactly the results of
  # the same model as a static closure.
  expected = run_all(_linear_logits(ws[1]))
  jax.tree.map(np.testing.assert_array_equal, results[1], expected)


def test_partial_with_non_array_leaf_and_unhashable_callable_raise():
  _, sample_fn, x = _cc_problem()
  bad = jax.tree_util.Partial(lambda name, b: b[:, 0, 0], "linear")
  with pytest.raises(TypeError, match="logits_fn.*str"):
    certify.cc_cert(jax.random.key(0), bad, x, sample_fn)

  class Unhashable:
    __hash__ = None

    def __call__(self, b):
      return b[:, 0, 0]

  with pytest.raises(TypeError, match="logits_fn must be hashable"):
    certify.binomial_certificate(
      jax.random.key(0), Unhashable(), x, [0, 0, 0], sample_fn, num_samples=2
    )
  with pytest.raises(TypeError, match="sample_fn must be callable"):
    certify.cc_cert(jax.random.key(0), _linear_logits(jnp.ones((108, 2))), x, 3)


# ------------------------------------------------------------- bad inputs --


def test_bad_inputs_raise_clear_errors():
  logits_fn, x, _ = _linear_binary()
  same = lambda key, im: im
  with pytest.raises(ValueError, match="num_bounds"):
    certify.cc_bound(jnp.zeros((2, 15)), jnp.zeros(2), num_bounds=10)
  with pytest.raises(ValueError, match="margin"):
    certify.cc_bound(jnp.zeros((2, 10)), jnp.zeros(3))
  with pytest.raises(ValueError, match="delta"):
    certify.cc_cert(jax.random.key(0), logits_fn, x, same, delta=1.5)
  with pytest.raises(ValueError, match="alpha"):
    certify.clopper_pearson_lower(3, 10, 1.0)
  with pytest.raises(ValueError, match="alpha"):
    certify.binomial_certificate(
      jax.random.key(0),
      logits_fn,
      x,
      np.zeros(5, int),
      same,
      num_samples=10,
      alpha=0.0,
    )
  with pytest.raises(ValueError, match="k <= n"):
    certify.clopper_pearson_lower(11, 10, 0.1)
  with pytest.raises(ValueError, match="sigma"):
    certify.smoothing_certify(jax.random.key(0), logits_fn, x, sigma=-0.1)
  with pytest.raises(ValueError, match="sigma"):
    certify.smoothing_predict(
      jax.random.key(0), logits_fn, x, sigma=0.0, n=10, alpha=0.01
    )
  with pytest.raises(ValueError, match="alpha"):
    certify.smoothing_certify(
      jax.random.key(0), logits_fn, x, sigma=0.1, alpha=2.0
    )
  with pytest.raises(ValueError, match="leading batch axis"):
    certify.cc_cert(jax.random.key(0), logits_fn, jnp.float32(0.0), same)
  with pytest.raises(ValueError, match="labels"):
    certify.binomial_certificate(
      jax.random.key(0), logits_fn, x, [0, 1], same, num_samples=4
    )
  with pytest.raises(TypeError, match="num_samples"):
    certify.cc_cert(jax.random.key(0), logits_fn, x, same, num_samples=2.5)
  with pytest.raises(ValueError, match="batch_size"):
    certify.cc_cert(jax.random.key(0), logits_fn, x, same, batch_size=0)
  res = certify.CCCertResult(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))
  with pytest.raises(ValueError, match="eps"):
    certify.certified_accuracy(res, [0, 0], [1e-2, 0.0])
  with pytest.raises(TypeError, match="CCCertResult"):
    certify.certified_accuracy((1, 2), [0, 0], 0.1)


def test_sharded_input_gives_same_result():
  # Two host CPU devices need a fresh process (XLA flags are read at start).
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from csam_jax import certify, variations
      assert jax.device_count() == 2
      w = jax.random.normal(jax.random.key(0), (4 * 4 * 3, 3))
      logits_fn = lambda b: b.reshape(b.shape[0], -1) @ w
      sample_fn = variations.compose({"rotation": 20.0, "brightness": 0.3})
      x = jax.random.uniform(jax.random.key(1), (4, 4, 4, 3))
      mesh = Mesh(np.array(jax.devices()), ("data",))
      xs = jax.device_put(x, NamedSharding(mesh, P("data")))
      a = certify.cc_cert(jax.random.key(2), logits_fn, x, sample_fn,
                          num_samples=5, num_bounds=2, batch_size=8)
      b = certify.cc_cert(jax.random.key(2), logits_fn, xs, sample_fn,
                          num_samples=5, num_bounds=2, batch_size=8)
      np.testing.assert_array_equal(a.pred, b.pred)
      np.testing.assert_array_equal(a.num_changed, b.num_changed)
      np.testing.assert_allclose(a.bound, b.bound, rtol=1e-5)
      print("OK")
  """)
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    JAX_PLATFORMS="cpu",
  )
  out = subprocess.run(
    [sys.executable, "-c", code],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "OK"
