"""Statistics of the study: seed CIs and paired per-image comparisons.

Two kinds of uncertainty, each with its own tool:

* Over seeds (training randomness): the mean of a metric over ``n`` seeds
  with the Student-t 95% interval ``mean +- t_{0.975, n-1} s / sqrt(n)``
  (`seed_interval`).
* Between two models on the same test images (the certified indicator of
  each image): the exact McNemar test, i.e. a two-sided binomial test of the
  ``b`` images only the first model certifies against the ``c`` only the
  second does, ``Binomial(b + c, 1/2)``; the difference of accuracies
  ``(b - c) / n`` with its Wald interval for paired proportions,
  ``se = sqrt(b + c - (b - c)^2 / n) / n`` (`paired_comparison`). Pooled over
  seeds, the pairs of all seeds are concatenated (each seed's models are
  paired on the same images).

The functions take plain numpy arrays and return floats: scipy does the
distributions (``scipy.stats.t``, ``scipy.stats.binomtest``, ``norm``).
"""

from __future__ import annotations

import math
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
  se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
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
