"""Study statistics against scipy and hand-computed cases."""

import math

import numpy as np
import pytest
import scipy.stats

from experiments import study_stats


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
