"""Statistics of the study: seed CIs and paired per-image comparisons.

Two kinds of uncertainty, each with its own tool:

* Over seeds (training randomness): the mean of a metric over ``n`` seeds
  with the Student-t 95% interval ``mean +- t_{0.975, n-1} s / sqrt(n)``
  (`seed_interval`). For a comparison of two variants, the same interval on
  the per-seed differences ``d_s = acc_A(s) - acc_B(s)``, with the one-sample
  t-test of ``mean = 0`` and the count of seeds that agree in sign
  (`seed_level_difference`).
* Between two models on the same test images (the certified indicator of
  each image): the exact McNemar test, i.e. a two-sided binomial test of the
  ``b`` images only the first model certifies against the ``c`` only the
  second does, ``Binomial(b + c, 1/2)``; the difference of accuracies
  ``(b - c) / n`` with its Wald interval for paired proportions,
  ``se = sqrt(b + c - (b - c)^2 / n) / n`` (`paired_comparison`). Pooled over
  seeds, the pairs of all seeds are concatenated (each seed's models are
  paired on the same images).

The per-image McNemar p-value is conditional on the trained models: it
measures the noise of the test images and of the Monte Carlo draws, not the
variability of training: pooling the images of more seeds sharpens it about
these particular models, not about another training run. Whether the paired
effect differs across seeds beyond that noise is tested by Cochran's Q of
the per-seed differences (`heterogeneity`). When the two kinds disagree
(e.g. a small pooled McNemar p-value but a seed-level interval that covers
0), claims rest on the seed-level interval. Families of comparisons are
corrected with Holm's step-down adjustment (`holm`).

The functions take plain numpy arrays and return floats: scipy does the
distributions (``scipy.stats.t``, ``scipy.stats.binomtest``, ``norm``,
``chi2``) and statsmodels the multiple-testing adjustment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import scipy.stats

LEVEL = 0.95


class Interval(NamedTuple):
  """A mean (or difference) with its two-sided confidence interval."""

  mean: float
  low: float
  high: float
  n: int


class PairedComparison(NamedTuple):
  """Model A vs model B on the same images (certified indicators).

  Attributes:
    n: paired images.
    only_a: images only A certifies (McNemar's b).
    only_b: images only B certifies (c).
    difference: ``(only_a - only_b) / n`` = acc(A) - acc(B).
    low, high: its Wald 95% interval for paired proportions.
    p_value: exact two-sided McNemar p-value (1.0 when b + c = 0).
  """

  n: int
  only_a: int
  only_b: int
  difference: float
  low: float
  high: float
  p_value: float


def seed_interval(values: Any, level: float = LEVEL) -> Interval:
  """Mean over seeds and its Student-t interval (NaN width for one seed).

  Example:
    >>> iv = seed_interval([0.5, 0.6, 0.7])
    >>> round(iv.mean, 4), round(iv.low, 4), round(iv.high, 4)
    (0.6, 0.3516, 0.8484)
  """
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f"values must be a non-empty 1-D sequence, got {x!r}")
  mean = float(np.mean(x))
  if x.size == 1:
    return Interval(mean, math.nan, math.nan, 1)
  half = scipy.stats.t.ppf(0.5 + level / 2, x.size - 1) * (
    np.std(x, ddof=1) / math.sqrt(x.size)
  )
  return Interval(mean, mean - float(half), mean + float(half), int(x.size))


def paired_comparison(a: Any, b: Any, level: float = LEVEL) -> PairedComparison:
  """Exact McNemar test and paired difference of two indicator vectors.

  Args:
    a: (n,) bool, image certified by model A.
    b: (n,) bool, the same images, model B.
    level: confidence level of the interval.

  Returns:
    A `PairedComparison`.

  Raises:
    ValueError: for vectors of different or zero length.

  Example:
    >>> r = paired_comparison([1, 1, 1, 0, 0, 1], [1, 0, 0, 0, 1, 1])
    >>> r.only_a, r.only_b, round(r.difference, 4), round(r.p_value, 4)
    (2, 1, 0.1667, 1.0)
  """
  a = np.asarray(a, bool)
  b = np.asarray(b, bool)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(
      f"a and b must be 1-D of the same non-zero length, got {a.shape} and "
      f"{b.shape}"
    )
  n = a.size
  only_a = int(np.sum(a & ~b))
  only_b = int(np.sum(b & ~a))
  diff = (only_a - only_b) / n
  se = math.sqrt(_paired_variance(n, only_a, only_b))
  z = scipy.stats.norm.ppf(0.5 + level / 2)
  discordant = only_a + only_b
  p = (
    scipy.stats.binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
  )
  return PairedComparison(
    n, only_a, only_b, diff, diff - z * se, diff + z * se, float(p)
  )


def relative_improvement(method: float, best_baseline: float) -> float:
  """The paper's headline: ``(method - best) / best`` (NaN when best is 0).

  "Relative improvement in certified robustness over the best baseline":
  the certified accuracy of C-SAM minus that of the baseline with the
  highest certified accuracy at the same sparsity, divided by the latter.

  Example:
    >>> round(relative_improvement(0.30, 0.25), 4)
    0.2
  """
  if best_baseline == 0:
    return math.nan
  return (method - best_baseline) / best_baseline


def _paired_variance(n: Any, only_a: Any, only_b: Any) -> Any:
  """Variance of ``(b - c) / n``: ``(b + c - (b - c)^2 / n) / n^2``, >= 0."""
  return np.maximum(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0) / n**2


class SeedDifference(NamedTuple):
  """Mean over cells of the per-seed differences A - B, and its t-test.

  Attributes:
    mean: mean of the differences ``d_s = acc_A(s) - acc_B(s)``.
    low, high: its Student-t interval (NaN for one cell).
    p_value: two-sided one-sample t-test of ``mean = 0`` (NaN for one cell).
    n: cells (seed x sparsity) combined.
    agree: cells whose difference has the sign of the mean. A zero
      difference agrees with nothing, so with a zero mean none agrees.
  """

  mean: float
  low: float
  high: float
  p_value: float
  n: int
  agree: int


def seed_level_difference(
  differences: Any, level: float = LEVEL
) -> SeedDifference:
  """Seed-level comparison of A and B from their per-seed differences.

  Each training run (seed) gives one difference of accuracies on the same
  test images; the runs are the replicates, so the interval and the test
  include training variability, unlike the per-image McNemar test.

  Args:
    differences: (n,) ``acc_A(s) - acc_B(s)``, one per seed x sparsity cell.
    level: confidence level of the interval.

  Returns:
    A `SeedDifference`. One cell has a NaN interval and p-value. Identical
    differences (zero spread) have a zero-width interval and the limit of
    the t-test: p = 0 for a non-zero mean, NaN when all are 0.

  Raises:
    ValueError: for an empty or non-1-D input.

  Example:
    >>> r = seed_level_difference([0.01, 0.03, 0.02])
    >>> round(r.mean, 4), round(r.high - r.mean, 4), round(r.p_value, 4)
    (0.02, 0.0248, 0.0742)
    >>> r.n, r.agree
    (3, 3)
    >>> seed_level_difference([0.02, -0.01, 0.0]).agree
    1
  """
  iv = seed_interval(differences, level)
  d = np.asarray(differences, np.float64)
  agree = int(np.sum(np.sign(d) * np.sign(iv.mean) > 0))
  return SeedDifference(iv.mean, iv.low, iv.high, _t_test_p(d), iv.n, agree)


# A spread of differences below this is rounding: differences of accuracies
# over hundreds or thousands of images are multiples of 1e-4 or more.
ZERO_SPREAD = 1e-12


def _t_test_p(d: np.ndarray) -> float:
  """Two-sided p-value of ``mean(d) = 0``; zero spread (up to the rounding
  of differences of accuracies, `ZERO_SPREAD`) handled exactly."""
  if d.size < 2:
    return math.nan
  if np.ptp(d) <= ZERO_SPREAD:  # t = +-inf, or 0 / 0 when all are 0.
    return 0.0 if abs(d[0]) > ZERO_SPREAD else math.nan
  return float(scipy.stats.ttest_1samp(d, 0.0).pvalue)


class Heterogeneity(NamedTuple):
  """Cochran's Q test that the paired effect is the same in every seed.

  Attributes:
    q: ``sum_s w_s (d_s - d_w)^2`` with ``w_s = 1 / v_s``.
    p_value: ``chi2.sf(q, k - 1)`` (NaN for one seed).
    i_squared: ``max(0, (q - (k - 1)) / q)``, the share of the spread of the
      ``d_s`` beyond their within-seed noise (0 when ``q <= k - 1``, NaN
      for one seed).
    weighted_mean: ``d_w``, the inverse-variance (fixed-effect) mean.
    k: seeds.
  """

  q: float
  p_value: float
  i_squared: float
  weighted_mean: float
  k: int


def heterogeneity(
  per_seed: Iterable[Any] | Mapping[Any, Any],
) -> Heterogeneity:
  """Does the paired difference A - B vary across seeds beyond chance?

  The fixed-effect meta-analysis of the per-seed differences
  ``d_s = (b_s - c_s) / n_s`` with the variances of the Wald interval of
  `paired_comparison`, ``v_s = (b_s + c_s - (b_s - c_s)^2 / n_s) / n_s^2``.

  A seed without discordant pairs (or with all images discordant one way)
  has ``v_s = 0``, an infinite weight. Every ``v_s`` is therefore floored at
  ``1 / n_s^2``: the variance of a seed with no discordant pairs after the
  usual continuity correction of adding 1/2 to ``b`` and to ``c``. No seed is
  thus more precise than one discordant image in ``n_s`` allows; the floor
  only binds when ``b + c - (b - c)^2 / n < 1``.

  Args:
    per_seed: one result per seed, a `PairedComparison` or its
      ``_asdict()`` dict (the keys ``n``, ``only_a`` and ``only_b`` are
      read), as a sequence or as a mapping seed -> result, like the
      ``per_seed`` entry that `experiments.study.report` stores.

  Returns:
    A `Heterogeneity`; one seed gives ``q = 0`` and NaN p-value and I^2.

  Raises:
    ValueError: for no seeds or a seed with ``n <= 0``.

  Example:
    >>> r = heterogeneity([dict(n=100, only_a=10, only_b=2),
    ...                    dict(n=100, only_a=6, only_b=4),
    ...                    dict(n=100, only_a=3, only_b=5)])
    >>> round(r.q, 4), round(r.p_value, 4), round(r.i_squared, 4), r.k
    (5.177, 0.0751, 0.6137, 3)
  """
  items = per_seed.values() if isinstance(per_seed, Mapping) else per_seed
  counts = np.array([_counts(r) for r in items], np.float64).reshape(-1, 3)
  if not counts.size or np.any(counts[:, 0] <= 0):
    raise ValueError(f"need seeds with n > 0, got counts {counts.tolist()}")
  n, b, c = counts.T
  d = (b - c) / n
  w = 1.0 / np.maximum(_paired_variance(n, b, c), 1.0 / n**2)
  mean = float(np.sum(w * d) / np.sum(w))
  q = float(np.sum(w * (d - mean) ** 2))
  df = d.size - 1
  if df == 0:
    return Heterogeneity(0.0, math.nan, math.nan, mean, 1)
  i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
  return Heterogeneity(q, float(scipy.stats.chi2.sf(q, df)), i2, mean, df + 1)


def _counts(result: Any) -> tuple[int, int, int]:
  """``(n, only_a, only_b)`` of a `PairedComparison` or its dict."""
  r = result._asdict() if hasattr(result, "_asdict") else result
  return int(r["n"]), int(r["only_a"]), int(r["only_b"])


def holm(p_values: Any) -> np.ndarray:
  """Holm-Bonferroni adjusted p-values of a family of tests.

  Step-down: the ``i``-th smallest of ``m`` p-values is multiplied by
  ``m - i + 1``, made non-decreasing in that order and capped at 1
  (statsmodels' ``multipletests(method="holm")``). NaN entries (tests that
  could not be run) are passed through as NaN and not counted in ``m``.

  Args:
    p_values: (m,) p-values in [0, 1] or NaN.

  Returns:
    (m,) float64 adjusted p-values, in the input order.

  Raises:
    ValueError: for a non-1-D input or a p-value outside [0, 1].

  Example:
    >>> holm([0.01, 0.04, 0.03, 0.005]).round(4).tolist()
    [0.03, 0.06, 0.06, 0.02]
    >>> holm([0.01, float("nan"), 0.04]).round(4).tolist()
    [0.02, nan, 0.04]
  """
  # Imported here: statsmodels pulls in pandas, seconds that only Holm needs.
  from statsmodels.stats import multitest

  p = np.asarray(p_values, np.float64)
  if p.ndim != 1:
    raise ValueError(f"p_values must be 1-D, got shape {p.shape}")
  known = ~np.isnan(p)
  if np.any((p[known] < 0) | (p[known] > 1)):
    raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
  adjusted = np.full(p.shape, np.nan)
  if known.any():
    adjusted[known] = multitest.multipletests(p[known], method="holm")[1]
  return adjusted
