"""Two levels of inference for a study's paired comparisons.

Every comparison a report makes (A vs B at one sparsity, on the certified
indicators of the same images) is stated twice (`experiments.study.stats`):

* per image: the exact McNemar test pooled over seeds, conditional on the
  trained models (it measures image and Monte Carlo draw noise);
* per training run: the Student-t interval and t-test of the per-seed
  differences, the number of seeds whose difference has the sign of the
  mean, and Cochran's Q of whether the effect differs across seeds.

The p-values of each level are Holm-adjusted over the family of all the
comparisons the report makes (`adjust`), and each comparison gets a verdict
(`verdict`) that rests on the seed level where the two disagree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from experiments.reports import markdown
from experiments.study import stats as study_stats

ALPHA = 0.05
# The fewest seeds whose t-test may carry a claim across training runs.
# Certified accuracies on a fixed image set are multiples of 1/n_images, so
# two seeds can give the same difference by chance: the t-test's spread is
# then zero and its p 0, a verdict one more training run easily undoes.
MIN_SEEDS = 3
VERDICTS = {
  "seeds": "holds across training runs",
  "images": "holds for these trained models only",
  "none": "not established",
}


def two_level(comparison: dict[str, Any]) -> dict[str, Any]:
  """A comparison (``pooled`` and ``per_seed``) with its seed level added.

  Adds ``seed_level`` (`study_stats.SeedDifference` of the per-seed
  differences) and ``heterogeneity`` (Cochran's Q; None for one seed).
  """
  per_seed = comparison["per_seed"]
  diffs = [c["difference"] for c in per_seed.values()]
  seed = study_stats.seed_level_difference(diffs)
  het = study_stats.heterogeneity(per_seed) if len(per_seed) > 1 else None
  return dict(
    comparison,
    seed_level=seed._asdict(),
    heterogeneity=None if het is None else het._asdict(),
  )


def _key(c: dict) -> tuple:
  return (c["sparsity"], *sorted((c["main"], c["other"])))


def family(*groups: list[dict]) -> list[dict]:
  """The distinct comparisons of several lists (A vs B and B vs A once)."""
  seen, out = set(), []
  for group in groups:
    for c in group:
      if _key(c) not in seen:
        seen.add(_key(c))
        out.append(c)
  return out


def adjust(comparisons: list[dict]) -> list[dict]:
  """Holm-adjusts both levels over the family ``comparisons``.

  Returns the comparisons with ``holm_image`` (of the pooled McNemar
  p-values), ``holm_seed`` (of the seed-level t-test p-values; NaN where
  one seed) and ``verdict`` set; the family size is ``len(comparisons)``
  for the per-image level and the comparisons with two or more seeds for
  the seed level. The seed level decides a verdict only with at least
  `MIN_SEEDS` seeds; with fewer, the verdict is the per-image level's.
  """
  out = [c if "seed_level" in c else two_level(c) for c in comparisons]
  if not out:
    return out
  image = study_stats.holm([c["pooled"]["p_value"] for c in out])
  seed = study_stats.holm([_nan(c["seed_level"]["p_value"]) for c in out])
  return [
    dict(
      c,
      holm_image=float(i),
      holm_seed=float(s),
      verdict=verdict(i, s if c["seed_level"]["n"] >= MIN_SEEDS else math.nan),
    )
    for c, i, s in zip(out, image, seed, strict=True)
  ]


def _nan(p: float | None) -> float:
  return math.nan if p is None else float(p)


def verdict(holm_image: float, holm_seed: float, alpha: float = ALPHA) -> str:
  """Which level supports a difference (keys of `VERDICTS`).

  The seed level decides when it is available: a difference is claimed
  across training runs only when its Holm-adjusted t-test rejects; a
  per-image rejection alone supports a claim about the trained models.

  Example:
    >>> verdict(1e-5, 0.2), verdict(1e-5, 0.01), verdict(0.3, float("nan"))
    ('images', 'seeds', 'none')
  """
  if holm_seed < alpha:
    return "seeds"
  if holm_image < alpha:
    return "images"
  return "none"


def sign_agreement(comparisons: list[dict]) -> list[dict[str, Any]]:
  """Per pair (A, B) over every sparsity: how many seed x sparsity cells
  have a difference of the sign of their mean.

  Example:
    >>> c = lambda s, ds: dict(main="a", other="b", sparsity=s,
    ...   per_seed={i: dict(difference=d) for i, d in enumerate(ds)})
    >>> sign_agreement([c(0.8, [-0.1, -0.2]), c(0.9, [0.05, -0.3])])
    [{'main': 'a', 'other': 'b', 'cells': 4, 'agree': 3, 'mean': -0.1375}]
  """
  pairs: dict[tuple, list[float]] = {}
  for c in comparisons:
    pairs.setdefault((c["main"], c["other"]), []).extend(
      v["difference"] for v in c["per_seed"].values()
    )
  out = []
  for (a, b), diffs in pairs.items():
    d = np.asarray(diffs)
    mean = float(np.mean(d))
    agree = int(np.sum(np.sign(d) * np.sign(mean) > 0))
    out.append(dict(main=a, other=b, cells=d.size, agree=agree, mean=mean))
  return out


def p_text(p: float | None) -> str:
  """A p-value as the reports print it (``n/a`` for a test not run).

  Example:
    >>> p_text(0.012345), p_text(float("nan")), p_text(None)
    ('0.0123', 'n/a', 'n/a')
  """
  return "n/a" if p is None or math.isnan(p) else f"{p:.3g}"


def _ci(mean: float, low: float, high: float) -> str:
  if math.isnan(low):
    return f"{100 * mean:+.1f}"
  return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def table(comparisons: list[dict]) -> str:
  """Markdown: both levels of every comparison, Holm-adjusted."""
  header = [
    "sparsity",
    "A",
    "B",
    "per image: A - B (points) [95% CI]",
    "McNemar p (Holm)",
    "per seed: mean A - B [95% t CI]",
    "t-test p (Holm)",
    "same sign",
    "Cochran's Q p (I²)",
    "verdict",
  ]
  rows = []
  for c in comparisons:
    p, s, h = c["pooled"], c["seed_level"], c["heterogeneity"]
    het = (
      "n/a" if h is None else f"{p_text(h['p_value'])} ({h['i_squared']:.2f})"
    )
    cells = [
      f"{c['sparsity']:.2f}",
      c["main"],
      c["other"],
      _ci(p["difference"], p["low"], p["high"]),
      f"{p_text(p['p_value'])} ({p_text(c['holm_image'])})",
      _ci(s["mean"], s["low"], s["high"]),
      f"{p_text(s['p_value'])} ({p_text(c['holm_seed'])})",
      f"{s['agree']}/{s['n']}",
      het,
      VERDICTS[c["verdict"]],
    ]
    rows.append(cells)
  return markdown.table(header, rows)
