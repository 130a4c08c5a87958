"""The structure study's report: flatness under mask swaps, dose-response.

From the cell records (`experiments.study`):

* `flatness_groups`: per (variant, sparsity), the structural-flatness
  diagnostic (experiments/robustness/flatness.py) over seeds: the accuracy drop
  ``base - swapped`` at every swapped fraction, random and
  gradient-directed, with Student-t intervals over seeds, and the
  certified accuracy at the certified fractions;
* `flatness_comparisons`: the seed-level difference of those drops between
  two variants (A's drop minus B's: negative = A's structure is flatter),
  per fraction and over all fractions at once (``overall``: one test per
  pair and swap, Holm-adjusted over the report's pairs);
* `perturbation_rows`: what each variant's perturbation did during the
  search (flipped fraction, radius, loss increase, gradient cosine) beside
  its certified accuracy and its paired difference from the main variant.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np

from experiments.reports import markdown
from experiments.study import inference as study_inference
from experiments.study import stats as study_stats

SWAPS = ("random", "directed")


def _interval(values: list[float]) -> dict[str, Any] | None:
  values = [v for v in values if v is not None]
  return study_stats.seed_interval(values)._asdict() if values else None


def _drops(rec: dict, swap: str) -> dict[str, float]:
  f = rec["flatness"]
  base = f["base"]["accuracy"]
  return {name: base - r["accuracy"] for name, r in f[swap].items()}


def flatness_groups(records: list[dict]) -> list[dict[str, Any]]:
  """Per (variant, sparsity) with flatness records: intervals over seeds.

  Returns:
    Rows with variant, sparsity, seeds, fractions, ``base`` (accuracy,
    cross_entropy, certified intervals) and, per swap (random or directed)
    and fraction, ``drop`` (accuracy drop), ``cross_entropy`` and ``certified``.
  """
  groups = collections.defaultdict(list)
  for rec in records:
    if rec.get("flatness"):
      groups[(rec["variant"], rec["sparsity"])].append(rec)
  out = []
  for (variant, sparsity), recs in sorted(groups.items()):
    fractions = list(recs[0]["flatness"]["random"])
    row = dict(
      variant=variant,
      sparsity=sparsity,
      seeds=sorted(r["seed"] for r in recs),
      fractions=fractions,
      base={
        m: _interval([r["flatness"]["base"][m] for r in recs])
        for m in ("accuracy", "cross_entropy", "certified")
      },
    )
    for swap in SWAPS:
      row[swap] = {
        name: dict(
          drop=_interval([_drops(r, swap)[name] for r in recs]),
          cross_entropy=_interval(
            [r["flatness"][swap][name]["cross_entropy"] for r in recs]
          ),
          certified=_interval(
            [r["flatness"][swap][name].get("certified") for r in recs]
          ),
        )
        for name in fractions
      }
    out.append(row)
  return out


def flatness_comparisons(
  records: list[dict], pairs: list[tuple[str, str]]
) -> list[dict[str, Any]]:
  """Seed-level differences of accuracy drops, A minus B, per fraction and
  over all fractions.

  Paired by (sparsity, seed): ``d_s = drop_A(s) - drop_B(s)`` for every
  seed both have; `study_stats.seed_level_difference` over the seeds. Each
  fraction's interval is a separate look at the same models; ``overall``
  is one: per swap, the mean of ``d_s`` over the fractions (one number per
  seed) with its seed-level interval and t-test, and ``holm``, that p-value
  adjusted over every row's overall tests (both swaps).
  """
  by_key = {
    (r["variant"], r["sparsity"], r["seed"]): r
    for r in records
    if r.get("flatness")
  }
  out = []
  for a, b in pairs:
    for sparsity in sorted({k[1] for k in by_key}):
      seeds = [
        s
        for (v, sp, s) in by_key
        if v == a and sp == sparsity and (b, sparsity, s) in by_key
      ]
      if not seeds:
        continue
      row = dict(main=a, other=b, sparsity=sparsity, seeds=sorted(seeds))
      for swap in SWAPS:
        da = [_drops(by_key[(a, sparsity, s)], swap) for s in row["seeds"]]
        db = [_drops(by_key[(b, sparsity, s)], swap) for s in row["seeds"]]
        per_fraction = {
          name: [x[name] - y[name] for x, y in zip(da, db, strict=True)]
          for name in da[0]
        }
        row[swap] = {
          name: study_stats.seed_level_difference(d)._asdict()
          for name, d in per_fraction.items()
        }
        row.setdefault("overall", {})[swap] = study_stats.seed_level_difference(
          np.mean(list(per_fraction.values()), axis=0)
        )._asdict()
      out.append(row)
  _holm_overall(out)
  return out


def _holm_overall(rows: list[dict[str, Any]]) -> None:
  """Adds ``holm`` to every row's overall tests: Holm over all of them."""
  tests = [row["overall"][swap] for row in rows for swap in SWAPS]
  adjusted = study_stats.holm([t["p_value"] for t in tests]) if tests else []
  for test, p in zip(tests, adjusted, strict=True):
    test["holm"] = float(p)


def perturbation_rows(
  records: list[dict], comparisons: list[dict], dist: str
) -> list[dict[str, Any]]:
  """Per (variant, sparsity) of a C-SAM search: what its perturbation did.

  ``comparisons`` are the main variant's (`study_report.paired_
  comparisons`); each row carries its comparison with the main variant.
  """
  versus = {(c["other"], c["sparsity"]): c for c in comparisons}
  groups = collections.defaultdict(list)
  for rec in records:
    if rec.get("method") == "csam":
      groups[(rec["variant"], rec["sparsity"])].append(rec)
  out = []
  for (variant, sparsity), recs in sorted(groups.items()):
    pert = [r.get("perturbation") or {} for r in recs]
    cert = [
      ((r.get("certification") or {}).get(dist) or {})
      .get("cc_cert", {})
      .get("1e-02")
      for r in recs
    ]
    out.append(
      dict(
        variant=variant,
        sparsity=sparsity,
        seeds=sorted(r["seed"] for r in recs),
        flip_fraction=_interval([r.get("flip_fraction") for r in recs]),
        **{
          m: _interval([p.get(m) for p in pert])
          for m in ("perturbation_radius", "loss_increase", "grad_cosine")
        },
        certified=_interval(cert),
        clean=_interval([r["clean_accuracy"] for r in recs]),
        versus=versus.get((variant, sparsity)),
      )
    )
  return out


def _mean(iv: dict | None, scale: float = 100.0, digits: int = 1) -> str:
  if iv is None:
    return "n/a"
  text = f"{scale * iv['mean']:.{digits}f}"
  if not math.isnan(iv["low"]):
    text += f" ± {scale * (iv['high'] - iv['low']) / 2:.{digits}f}"
  return text


def flatness_table(groups: list[dict]) -> str:
  """Markdown: accuracy drop (points) per swapped fraction, both swaps."""
  if not groups:
    return ""
  fractions = groups[0]["fractions"]
  header = ["variant", "sparsity", "seeds", "accuracy (%)"]
  header += [f"drop @{100 * float(f):g}% rand / dir" for f in fractions]
  header += ["certified (%) base / rand / dir"]
  rows = []
  for g in groups:
    cells = [
      g["variant"],
      f"{g['sparsity']:.2f}",
      str(len(g["seeds"])),
      _mean(g["base"]["accuracy"]),
    ]
    cells += [
      f"{_mean(g['random'][f]['drop'])} / {_mean(g['directed'][f]['drop'])}"
      for f in fractions
    ]
    certified = [
      f"@{100 * float(f):g}%: {_mean(g['random'][f]['certified'])} / "
      f"{_mean(g['directed'][f]['certified'])}"
      for f in fractions
      if g["random"][f]["certified"] is not None
    ]
    cells.append(
      f"{_mean(g['base']['certified'])}; " + "; ".join(certified)
      if certified
      else "n/a"
    )
    rows.append(cells)
  return markdown.table(header, rows)


def _diff(s: dict) -> str:
  if math.isnan(s["low"]):
    return f"{100 * s['mean']:+.1f}"
  return (
    f"{100 * s['mean']:+.1f} [{100 * s['low']:+.1f}, {100 * s['high']:+.1f}]"
    f" {s['agree']}/{s['n']}"
  )


def flatness_comparison_table(rows: list[dict]) -> str:
  """Markdown: A's drop minus B's per fraction (random; directed)."""
  if not rows:
    return ""
  fractions = list(rows[0]["random"])
  header = ["sparsity", "A", "B"]
  header += [f"@{100 * float(f):g}% rand; dir" for f in fractions]
  table = []
  for r in rows:
    cells = [f"{r['sparsity']:.2f}", r["main"], r["other"]]
    cells += [
      f"{_diff(r['random'][f])}; {_diff(r['directed'][f])}" for f in fractions
    ]
    table.append(cells)
  return markdown.table(header, table)


def flatness_overall_table(rows: list[dict]) -> str:
  """Markdown: A's drop minus B's over all fractions, per swap, with the
  t-test's p and its Holm adjustment."""
  if not rows:
    return ""
  header = ["sparsity", "A", "B", "seeds"]
  for swap in SWAPS:
    header += [f"{swap}: A - B [95% t CI] same sign", "t-test p (Holm)"]
  table = []
  for r in rows:
    cells = [f"{r['sparsity']:.2f}", r["main"], r["other"]]
    cells.append(str(len(r["seeds"])))
    for swap in SWAPS:
      o = r["overall"][swap]
      cells += [_diff(o), f"{_p(o['p_value'])} ({_p(o['holm'])})"]
    table.append(cells)
  return markdown.table(header, table)


# One p-value format for every report (`study_inference.p_text`).
_p = study_inference.p_text


def perturbation_table(rows: list[dict], main: str) -> str:
  """Markdown: the dose-response and control rows."""
  if not rows:
    return ""
  header = [
    "variant",
    "sparsity",
    "seeds",
    "flips / step (%)",
    "radius (norm of e)",
    "L(C+e) - L(C)",
    "cos(g(C+e), g(C))",
    "clean (%)",
    "CC-Cert@1e-2 (%)",
    f"minus {main} (points) [95% CI], McNemar p",
  ]
  table = []
  for r in rows:
    c = r["versus"]
    versus = "-" if c is None else _versus(c["pooled"])
    cells = [
      r["variant"],
      f"{r['sparsity']:.2f}",
      str(len(r["seeds"])),
      _mean(r["flip_fraction"], 100.0, 2),
      _mean(r["perturbation_radius"], 1.0, 3),
      _mean(r["loss_increase"], 1.0, 4),
      _mean(r["grad_cosine"], 1.0, 3),
      _mean(r["clean"]),
      _mean(r["certified"]),
      versus,
    ]
    table.append(cells)
  return markdown.table(header, table)


def _versus(pooled: dict) -> str:
  """The main-vs-other comparison seen from the other variant."""
  return (
    f"{-100 * pooled['difference']:+.1f} [{-100 * pooled['high']:+.1f}, "
    f"{-100 * pooled['low']:+.1f}], p = {pooled['p_value']:.3g}"
  )


def image_sets(records: list[dict]) -> dict[str, Any]:
  """Which images the records were certified on: the split(s), and whether
  every record used one set (by its digest; older records hold none)."""
  digests, splits, sizes = set(), set(), set()
  for rec in records:
    images = (rec.get("certification") or {}).get("images")
    if images:
      digests.add(images["sha256"])
      splits.add(images["split"])
      sizes.add(len(images["indices"]))
  return dict(
    digests=sorted(digests),
    splits=sorted(splits),
    sizes=sorted(sizes),
    recorded=sum(
      bool((r.get("certification") or {}).get("images")) for r in records
    ),
    total=len(records),
  )


def describe_image_sets(info: dict[str, Any]) -> str:
  """One sentence on the certified image set(s).

  Example:
    >>> describe_image_sets(dict(digests=["ab" * 32], splits=["eval"],
    ...   sizes=[1000], recorded=3, total=3))
    'Every model was certified on one image set: 1000 images of the eval split (sha256 abababababab...).'
  """  # noqa: E501 - a doctest output line.
  if not info["recorded"]:
    return (
      "The records do not hold their certified image sets (written before "
      "records kept them)."
    )
  if len(info["digests"]) == 1 and info["recorded"] == info["total"]:
    return (
      f"Every model was certified on one image set: {info['sizes'][0]} "
      f"images of the {info['splits'][0]} split (sha256 "
      f"{info['digests'][0][:12]}...)."
    )
  return (
    f"WARNING: the records were certified on {len(info['digests'])} "
    f"different image sets ({info['recorded']} of {info['total']} records "
    "hold theirs): comparisons pair images by position."
  )
