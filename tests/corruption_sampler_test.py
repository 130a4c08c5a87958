"""Tests of the bucketed corruption sampler and the shot-noise Poisson draw."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from csam_jax import variations
from csam_jax._src.certify import chernoff_cramer, montecarlo
from csam_jax._src.corruptions import noise, registry

# Noise (two kinds of randomness), a deterministic one, a convolution, a
# geometric resampling and JPEG (integer DCT): each runs in its own bucket.
NAMES = (
  "shot_noise",
  "impulse_noise",
  "contrast",
  "defocus_blur",
  "zoom_blur",
  "jpeg_compression",
)
# For the invariance tests (fast to compile): a Poisson draw (while loop),
# a reduction (the image mean) and a convolution.
SMALL = ("shot_noise", "contrast", "defocus_blur")


def _images(n: int, size: int = 16) -> jax.Array:
  return jax.random.uniform(jax.random.key(7), (n, size, size, 3))


@functools.cache
def _batched(names: tuple[str, ...]):
  return jax.jit(variations.corruption_sampler(names).sample_batch)


# The unbucketed reference: one draw, one corruption (static name).
_apply_one = jax.jit(registry.apply_at, static_argnames="name")


def test_batched_equals_each_draw_alone():
  sampler = variations.corruption_sampler(NAMES)
  keys = jax.random.split(jax.random.key(0), 48)
  x = _images(48)
  batched = _batched(NAMES)(keys, x)
  which, severity_index, corrupt_keys = jax.vmap(sampler.draw)(keys)
  assert set(which.tolist()) == set(range(len(NAMES)))  # all buckets used
  for i in range(48):
    alone = _apply_one(
      corrupt_keys[i],
      x[i],
      name=NAMES[which[i]],
      severity_index=severity_index[i],
    )
    # Different XLA programs: equal to float32 rounding (a few ulp).
    np.testing.assert_allclose(batched[i], alone, atol=1e-6, err_msg=f"{i}")


def test_batched_draws_do_not_depend_on_the_chunk():
  keys = jax.random.split(jax.random.key(1), 24)
  x = _images(24)
  whole = _batched(SMALL)(keys, x)
  for size in (1, 8):
    parts = [
      _batched(SMALL)(keys[i : i + size], x[i : i + size])
      for i in range(0, 24, size)
    ]
    np.testing.assert_array_equal(jnp.concatenate(parts), whole)


def test_cc_cert_draws_do_not_depend_on_batch_size():
  x = _images(3)

  def logits_fn(images):  # channel means: sensitive to every pixel
    return images.mean(axis=(1, 2)) * jnp.array([1.0, 2.0, 3.0])

  sampler = jax.tree_util.Partial(variations.corruption_sampler(SMALL))
  z = [
    chernoff_cramer._cc_draws(
      jax.random.key(2),
      x,
      jax.tree_util.Partial(logits_fn),
      sampler,
      num_draws=20,
      batch_size=batch_size,
    )[2]
    for batch_size in (60, 7)
  ]
  assert float(jnp.max(jnp.abs(z[0]))) > 0.0
  np.testing.assert_array_equal(z[0], z[1])


def test_transform_uses_sample_batch_or_vmap():
  keys = jax.random.split(jax.random.key(3), 5)
  x = _images(5)
  sampler = variations.corruption_sampler(("brightness", "contrast"))

  class Marked:  # a batched sampler whose batch form is distinguishable
    def __call__(self, key, image):
      return image

    def sample_batch(self, keys, images):
      return images + 1.0

  out = montecarlo.transform(jax.tree_util.Partial(Marked()), keys, x)
  np.testing.assert_array_equal(out, x + 1.0)
  np.testing.assert_array_equal(
    montecarlo.transform(jax.tree_util.Partial(sampler), keys, x),
    sampler.sample_batch(keys, x),
  )
  plain = lambda key, image: image * 2.0
  np.testing.assert_array_equal(montecarlo.transform(plain, keys, x), x * 2.0)


def test_drawn_labels_are_uniform():
  sampler = variations.corruption_sampler()  # 15 names x 5 severities
  keys = jax.random.split(jax.random.key(4), 30_000)
  which, severity_index, _ = jax.jit(jax.vmap(sampler.draw))(keys)
  which, severity_index = np.asarray(which), np.asarray(severity_index)
  name_counts = np.bincount(which, minlength=15)
  assert name_counts.shape == (15,)
  assert scipy.stats.chisquare(name_counts).pvalue > 1e-3, name_counts
  pair_counts = np.bincount(which * 5 + severity_index, minlength=75)
  assert pair_counts.shape == (75,)
  assert scipy.stats.chisquare(pair_counts).pvalue > 1e-3, pair_counts
  # A subset of severities: only those are drawn, uniformly.
  sub = variations.corruption_sampler(("fog",), (2, 5))
  severity = np.asarray(jax.vmap(sub.draw)(keys[:4000])[1]) + 1
  assert set(severity.tolist()) == {2, 5}
  assert scipy.stats.chisquare(np.bincount(severity)[[2, 5]]).pvalue > 1e-3


def test_bucket_size_and_switch_change_only_the_rounding():
  keys = jax.random.split(jax.random.key(8), 20)
  x = _images(20)
  a = jax.jit(variations.corruption_sampler(SMALL, bucket_size=1).sample_batch)
  b = jax.jit(variations.corruption_sampler(SMALL, bucket_size=64).sample_batch)
  np.testing.assert_allclose(a(keys, x), b(keys, x), atol=1e-6)
  # The per-sample sample_fn (vmapped lax.switch) gives the same draws.
  per_sample = jax.jit(jax.vmap(variations.corruption_sampler(SMALL)))
  np.testing.assert_allclose(per_sample(keys, x), a(keys, x), atol=1e-6)


def test_sampler_equality_and_errors():
  a = variations.corruption_sampler(("fog", "snow"), (1, 2))
  assert a == variations.corruption_sampler(["fog", "snow"], [1, 2])
  assert hash(a) == hash(variations.corruption_sampler(("fog", "snow"), (1, 2)))
  assert a != variations.corruption_sampler(("fog", "snow"), (1, 3))
  keys = jax.random.split(jax.random.key(0), 2)
  with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
    a.sample_batch(keys, jnp.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match="one key per image"):
    a.sample_batch(keys, jnp.zeros((3, 8, 8, 3)))
  with pytest.raises(ValueError, match="bucket_size"):
    variations.corruption_sampler(bucket_size=0)
  with pytest.raises(TypeError, match="bucket_size"):
    variations.corruption_sampler(bucket_size=2.0)


@pytest.mark.parametrize(
  "lam", [0.0, 1e-3, 0.05, 0.7, 3.0, 8.5, 9.5, 27.0, 150.0, 499.0]
)
def test_poisson_inverse_is_the_poisson_quantile(lam):
  # Exact inversion: equal to scipy's ppf except where u is within float32
  # rounding of a CDF value (documented: 3.5e-7), there off by at most one.
  u = np.asarray(
    jax.random.uniform(jax.random.key(5), (20_000,), jnp.float32), np.float64
  )
  # jax.random.uniform draws multiples of 2**-23 in [0, 1 - 2**-23].
  u = np.concatenate([u, [0.0, 2**-23, 1e-4, 0.5, 1 - 1e-4, 1 - 2**-23]])
  got = np.asarray(noise.poisson_inverse(jnp.full(u.shape, lam), u))
  want = scipy.stats.poisson.ppf(u, lam)
  want = np.where(u == 0.0, 0.0, want)  # ppf(0) = -1 in scipy
  near = np.minimum(
    np.abs(u - scipy.stats.poisson.cdf(want, lam)),
    np.abs(u - scipy.stats.poisson.cdf(want - 1, lam)),
  )
  near = near < 5e-7
  np.testing.assert_array_equal(got[~near], want[~near])
  assert np.all(np.abs(got - want) <= 1)
  assert np.mean(got != want) < 1e-3


@pytest.mark.parametrize("lam", [0.02, 0.6, 4.0, 12.0, 75.0, 250.0])
def test_poisson_inverse_distribution(lam):
  # Fixed-seed chi-square against scipy.stats.poisson (tails merged so that
  # every cell expects >= 5), and the mean and variance.
  n = 50_000
  u = jax.random.uniform(jax.random.key(6), (n,), jnp.float32)
  counts = np.asarray(noise.poisson_inverse(jnp.full((n,), lam), u))
  assert np.all(counts == np.round(counts)) and counts.min() >= 0
  lo, hi = scipy.stats.poisson.ppf([1e-4, 1 - 1e-4], lam).astype(int)
  edges = np.arange(max(lo, 0), hi + 1)
  observed = np.array(
    [np.sum(counts <= lo)]
    + [np.sum(counts == k) for k in edges[1:-1]]
    + [np.sum(counts >= hi)]
  )
  probs = np.concatenate(
    [
      [scipy.stats.poisson.cdf(lo, lam)],
      scipy.stats.poisson.pmf(edges[1:-1], lam),
      [scipy.stats.poisson.sf(hi - 1, lam)],
    ]
  )
  keep = probs * n >= 5
  merged_obs = np.append(observed[keep], observed[~keep].sum())
  merged_exp = np.append(probs[keep], probs[~keep].sum()) * n
  if merged_exp[-1] == 0:
    merged_obs, merged_exp = merged_obs[:-1], merged_exp[:-1]
  merged_exp *= merged_obs.sum() / merged_exp.sum()
  if len(merged_obs) > 1:
    assert scipy.stats.chisquare(merged_obs, merged_exp).pvalue > 1e-3
  # Mean and variance lam: 5 standard errors.
  assert abs(counts.mean() - lam) < 5 * np.sqrt(lam / n)
  var_se = np.sqrt((lam + 2 * lam**2) / n)  # sd of the sample variance
  assert abs(counts.var() - lam) < 5 * var_se + 1e-12


def test_shot_noise_severities_mean_and_variance():
  # CIFAR-10-C: Poisson(x * c) / c, so mean x and variance x / c.
  x = jnp.full((64, 64, 3), 0.3)
  for severity, c in zip((1, 3, 5), (500.0, 100.0, 50.0), strict=True):
    y = variations.corrupt(jax.random.key(severity), x, "shot_noise", severity)
    counts = np.asarray(y, np.float64) * c
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    n = counts.size
    assert abs(y.mean() - 0.3) < 5 * np.sqrt(0.3 / c / n)
    np.testing.assert_allclose(float(y.var()), 0.3 / c, rtol=0.1)
