"""Study statistics against scipy and hand-computed cases."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from experiments.study import stats as study_stats


def test_seed_interval_matches_scipy_t_interval():
  x = np.array([0.61, 0.58, 0.66, 0.63])
  iv = study_stats.seed_interval(x)
  low, high = scipy.stats.t.interval(
    0.95, len(x) - 1, loc=x.mean(), scale=scipy.stats.sem(x)
  )
  assert (iv.mean, iv.n) == (pytest.approx(x.mean()), 4)
  assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
  one = study_stats.seed_interval([0.5])
  assert one.mean == 0.5 and math.isnan(one.low) and math.isnan(one.high)
  with pytest.raises(ValueError, match="non-empty"):
    study_stats.seed_interval([])


def test_paired_comparison_hand_computed():
  # n = 100: 10 images only A certifies, 2 only B, 50 both, 38 neither.
  a = np.array([1] * 10 + [0] * 2 + [1] * 50 + [0] * 38, bool)
  b = np.array([0] * 10 + [1] * 2 + [1] * 50 + [0] * 38, bool)
  r = study_stats.paired_comparison(a, b)
  assert (r.n, r.only_a, r.only_b) == (100, 10, 2)
  assert r.difference == pytest.approx(0.08)
  # Exact McNemar: 2 * P(Binomial(12, 1/2) <= 2) = 2 * 79 / 4096.
  assert r.p_value == pytest.approx(2 * (1 + 12 + 66) / 4096)
  assert r.p_value == pytest.approx(scipy.stats.binomtest(10, 12).pvalue)
  # Wald interval for paired proportions: se = sqrt(12 - 0.64) / 100.
  half = 1.959963984540054 * math.sqrt(11.36) / 100
  assert (r.low, r.high) == (
    pytest.approx(0.08 - half),
    pytest.approx(0.08 + half),
  )
  # Symmetric: B vs A negates the difference, keeps the p-value.
  s = study_stats.paired_comparison(b, a)
  assert s.difference == pytest.approx(-0.08)
  assert s.p_value == pytest.approx(r.p_value)


def test_paired_comparison_no_discordant_pairs_and_bad_input():
  same = np.array([1, 0, 1], bool)
  r = study_stats.paired_comparison(same, same)
  assert (r.difference, r.low, r.high, r.p_value) == (0.0, 0.0, 0.0, 1.0)
  with pytest.raises(ValueError, match="same non-zero length"):
    study_stats.paired_comparison([1, 0], [1])


def test_relative_improvement():
  assert study_stats.relative_improvement(0.3, 0.25) == pytest.approx(0.2)
  assert study_stats.relative_improvement(0.2, 0.25) == pytest.approx(-0.2)
  assert math.isnan(study_stats.relative_improvement(0.2, 0.0))


T_975_2 = 4.302652729749464  # scipy.stats.t.ppf(0.975, 2)


def test_seed_level_difference_hand_computed():
  r = study_stats.seed_level_difference([0.01, 0.03, 0.02])
  half = T_975_2 * 0.01 / math.sqrt(3)
  assert r.mean == pytest.approx(0.02)
  assert (r.low, r.high) == (
    pytest.approx(0.02 - half),
    pytest.approx(0.02 + half),
  )
  # t = 0.02 / (0.01 / sqrt(3)) = 2 sqrt(3) on 2 degrees of freedom.
  assert r.p_value == pytest.approx(2 * scipy.stats.t.sf(2 * math.sqrt(3), 2))
  assert (r.n, r.agree) == (3, 3)


def test_seed_level_difference_matches_scipy_and_counts_agreement():
  d = np.array([0.012, -0.004, 0.027, 0.009, 0.0])
  r = study_stats.seed_level_difference(d)
  test = scipy.stats.ttest_1samp(d, 0.0)
  low, high = scipy.stats.t.interval(
    0.95, len(d) - 1, loc=d.mean(), scale=scipy.stats.sem(d)
  )
  assert r.p_value == pytest.approx(test.pvalue)
  assert (r.low, r.high) == (pytest.approx(low), pytest.approx(high))
  # Mean > 0: three positive cells agree; the negative and the zero do not.
  assert (r.n, r.agree) == (5, 3)
  assert study_stats.seed_level_difference(-d).agree == 3


def test_seed_level_difference_degenerate_cases():
  one = study_stats.seed_level_difference([0.02])
  assert (one.mean, one.n, one.agree) == (0.02, 1, 1)
  assert math.isnan(one.low) and math.isnan(one.high)
  assert math.isnan(one.p_value)
  zeros = study_stats.seed_level_difference([0.0, 0.0, 0.0])
  assert (zeros.mean, zeros.low, zeros.high, zeros.agree) == (0, 0, 0, 0)
  assert math.isnan(zeros.p_value)
  # A zero mean: no cell agrees, whatever its sign.
  assert study_stats.seed_level_difference([0.01, -0.01, 0.0]).agree == 0
  same = study_stats.seed_level_difference([0.01, 0.01])
  assert (same.low, same.high, same.p_value) == (0.01, 0.01, 0.0)
  # Equal up to rounding (0.5 - 0.514 and 0.333 - 0.347 differ in floats):
  # the limit too, without scipy's precision-loss warning.
  d = [0.5 - 0.514, 0.333 - 0.347]
  assert d[0] != d[1]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    rounded = study_stats.seed_level_difference(d)
  assert rounded.p_value == 0.0
  assert rounded.low == pytest.approx(-0.014, abs=1e-12)
  with pytest.raises(ValueError, match="non-empty"):
    study_stats.seed_level_difference([])


# Three seeds of n = 100 images: (only_a, only_b) = (10, 2), (6, 4), (3, 5).
SEEDS = [
  dict(n=100, only_a=10, only_b=2),
  dict(n=100, only_a=6, only_b=4),
  dict(n=100, only_a=3, only_b=5),
]


def test_heterogeneity_hand_computed():
  d = np.array([0.08, 0.02, -0.02])
  # v = (b + c - (b - c)^2 / n) / n^2.
  w = 1 / (np.array([12 - 0.64, 10 - 0.04, 8 - 0.04]) / 100**2)
  mean = np.sum(w * d) / np.sum(w)
  q = np.sum(w * (d - mean) ** 2)
  r = study_stats.heterogeneity(SEEDS)
  assert r.q == pytest.approx(q) and r.q == pytest.approx(5.176968373655838)
  assert r.p_value == pytest.approx(scipy.stats.chi2.sf(q, 2))
  assert r.i_squared == pytest.approx((q - 2) / q)
  assert (r.weighted_mean, r.k) == (pytest.approx(mean), 3)
  # PairedComparison tuples and a mapping seed -> dict give the same.
  tuples = [
    study_stats.PairedComparison(s["n"], s["only_a"], s["only_b"], 0, 0, 0, 1)
    for s in SEEDS
  ]
  assert study_stats.heterogeneity(tuples) == r
  assert study_stats.heterogeneity(dict(enumerate(SEEDS))) == r


def test_heterogeneity_matches_statsmodels_fixed_effect():
  meta = pytest.importorskip("statsmodels.stats.meta_analysis")
  seeds = SEEDS + [dict(n=250, only_a=30, only_b=12)]
  n, b, c = (
    np.array([s[k] for s in seeds], float) for k in ("n", "only_a", "only_b")
  )
  d = (b - c) / n
  v = (b + c - (b - c) ** 2 / n) / n**2
  ref = meta.combine_effects(d, v, method_re="chi2")
  r = study_stats.heterogeneity(seeds)
  assert r.q == pytest.approx(ref.q)
  assert r.i_squared == pytest.approx(max(ref.i2, 0.0))
  assert r.weighted_mean == pytest.approx(ref.mean_effect_fe)


def test_heterogeneity_homogeneous_seeds():
  # The same difference 0.08 in every seed, whatever n: Q = 0, p = 1.
  seeds = [
    dict(n=100, only_a=10, only_b=2),
    dict(n=200, only_a=20, only_b=4),
    dict(n=100, only_a=9, only_b=1),
  ]
  r = study_stats.heterogeneity(seeds)
  assert r.q == pytest.approx(0.0, abs=1e-12)
  assert r.p_value == pytest.approx(1.0)
  assert (r.i_squared, r.weighted_mean) == (0.0, pytest.approx(0.08))


def test_heterogeneity_floors_zero_variance_at_one_over_n_squared():
  # No discordant pairs: v = 0, floored at 1 / n^2. With two seeds,
  # Q = (d_1 - d_2)^2 / (v_1 + v_2).
  r = study_stats.heterogeneity(
    [dict(n=100, only_a=0, only_b=0), dict(n=100, only_a=10, only_b=2)]
  )
  assert r.q == pytest.approx(0.08**2 / (1e-4 + 11.36e-4))
  assert math.isfinite(r.p_value) and r.k == 2
  # All images discordant one way: v = (10 - 100 / 10) / 100 = 0 too.
  r = study_stats.heterogeneity(
    [dict(n=10, only_a=10, only_b=0), dict(n=100, only_a=10, only_b=2)]
  )
  assert r.q == pytest.approx((1 - 0.08) ** 2 / (1e-2 + 11.36e-4))


def test_heterogeneity_one_seed_and_bad_input():
  r = study_stats.heterogeneity(SEEDS[:1])
  assert (r.q, r.weighted_mean, r.k) == (0.0, pytest.approx(0.08), 1)
  assert math.isnan(r.p_value) and math.isnan(r.i_squared)
  with pytest.raises(ValueError, match="n > 0"):
    study_stats.heterogeneity([])
  with pytest.raises(ValueError, match="n > 0"):
    study_stats.heterogeneity([dict(n=0, only_a=0, only_b=0)])


def test_holm_hand_computed_and_statsmodels():
  multitest = pytest.importorskip("statsmodels.stats.multitest")
  p = [0.01, 0.04, 0.03, 0.005]
  # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04;
  # made non-decreasing: 0.02, 0.03, 0.06, 0.06.
  np.testing.assert_allclose(study_stats.holm(p), [0.03, 0.06, 0.06, 0.02])
  np.testing.assert_allclose(
    study_stats.holm(p), multitest.multipletests(p, method="holm")[1]
  )
  # Capped at 1: 2 * 0.5 = 1, then 0.6 lifted to 1.
  np.testing.assert_allclose(study_stats.holm([0.5, 0.6]), [1.0, 1.0])


def test_holm_passes_nan_through_outside_the_family():
  nan = math.nan
  # A family of two: 2 * 0.01, then max(0.02, 0.04).
  np.testing.assert_allclose(
    study_stats.holm([nan, 0.01, nan, 0.04]), [nan, 0.02, nan, 0.04]
  )
  assert np.isnan(study_stats.holm([nan, nan])).all()
  assert study_stats.holm([]).shape == (0,)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    study_stats.holm([0.5, 1.5])
  with pytest.raises(ValueError, match="1-D"):
    study_stats.holm([[0.5]])
