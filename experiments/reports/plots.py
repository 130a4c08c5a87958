"""Every plot of the project (PNG, matplotlib's Agg canvas; no display).

A run's plots take the list of run entries of results.json (the ``runs``
of `experiments.experiment.run`); a study's take the groups of
`experiments.study.report.aggregate`'s summary. Each writes one PNG and
returns the path written, or None when there is nothing to plot (no
certification results, a single sparsity, no flatness diagnostic).
"""

from __future__ import annotations

import collections
import math
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments import storage
from experiments.reports.report_metrics import HEADLINE
from experiments.robustness.certification import DISTRIBUTIONS

_METHODS = (("cc_cert", "CC-Cert"), ("binomial", "Clopper-Pearson"))


def _label(run: dict[str, Any], with_sparsity: bool) -> str:
  label = str(run.get("method", "?"))
  if with_sparsity:
    label += f" s={run.get('sparsity', 0.0):g}"
  return label


def _save(fig: Figure, path: str) -> str:
  FigureCanvasAgg(fig)
  storage.save_figure(fig, path)
  return path


def plot_certified_vs_eps(
  results: list[dict[str, Any]], path: str
) -> str | None:
  """Certified accuracy vs eps (log scale), one line per run.

  One panel per (distribution, certificate) present: a row per
  certificate, a column per distribution. Runs that share method and
  sparsity (several seeds) are averaged. Levels a certificate cannot reach
  (None: Clopper-Pearson below ``eps_min``) get no point; a dotted line
  marks ``eps_min``.

  Args:
    results: run entries; those without "certification" are skipped.
    path: PNG file to write.

  Returns:
    ``path``, or None when no run has certification results.
  """
  runs = [r for r in results if r.get("certification")]
  present = lambda d, m: any(m in r["certification"].get(d, {}) for r in runs)
  dists = [d for d in DISTRIBUTIONS if any(present(d, m) for m, _ in _METHODS)]
  rows = [(m, t) for m, t in _METHODS if any(present(d, m) for d in dists)]
  if not rows:
    return None
  with_sparsity = len({r.get("sparsity") for r in runs}) > 1
  fig = Figure(figsize=(4.5 * len(dists), 3.6 * len(rows)))
  for i, (method, title) in enumerate(rows):
    for j, dist in enumerate(dists):
      ax = fig.add_subplot(len(rows), len(dists), i * len(dists) + j + 1)
      _eps_panel(ax, runs, dist, method, with_sparsity)
      ax.set_title(f"{title} ({dist})")
  return _save(fig, path)


def _eps_panel(ax, runs, dist, method, with_sparsity) -> None:
  curves = collections.defaultdict(list)
  eps_min = []
  for run in runs:
    result = run["certification"].get(dist, {})
    if result.get(method):
      curves[_label(run, with_sparsity)].append(result[method])
      if method == "binomial" and "binomial_eps_min" in result:
        eps_min.append(result["binomial_eps_min"])
  for label, seeds in curves.items():
    keys = sorted(seeds[0], key=float)
    values = [[np.nan if s[k] is None else s[k] for k in keys] for s in seeds]
    ax.plot(
      [float(k) for k in keys], np.mean(values, axis=0), marker="o", label=label
    )
  if eps_min:
    ax.axvline(max(eps_min), color="grey", linestyle=":", label="eps_min")
  ax.set_xscale("log")
  ax.set_ylim(-0.02, 1.02)
  ax.set_xlabel("eps")
  ax.set_ylabel("certified accuracy")
  ax.legend(fontsize="small")


def plot_vs_sparsity(results: list[dict[str, Any]], path: str) -> str | None:
  """Clean and certified (CC-Cert, eps = 1e-2) accuracy vs sparsity.

  One line per method (seeds averaged); certified accuracy is taken from
  the first distribution present (in the order of
  `experiments.robustness.certification.DISTRIBUTIONS`: "semantic" first).

  Args:
    results: run entries.
    path: PNG file to write.

  Returns:
    ``path``, or None when fewer than two sparsities were run.
  """
  if len({r.get("sparsity") for r in results}) < 2:
    return None
  clean = collections.defaultdict(lambda: collections.defaultdict(list))
  cert = collections.defaultdict(lambda: collections.defaultdict(list))
  for run in results:
    method, s = run.get("method", "?"), float(run.get("sparsity", 0.0))
    clean[method][s].append(run["clean_accuracy"])
    c = run.get("certification") or {}
    for dist in DISTRIBUTIONS:
      acc = c.get(dist, {}).get(HEADLINE.certificate, {}).get(HEADLINE.level)
      if acc is not None:
        cert[method][s].append(acc)
        break
  panels = [("clean accuracy", clean)]
  if cert:
    panels.append(("certified accuracy (CC-Cert, eps=1e-2)", cert))
  fig = Figure(figsize=(5 * len(panels), 4))
  for i, (title, table) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), i + 1)
    for method, by_s in table.items():
      xs = sorted(by_s)
      ax.plot(xs, [np.mean(by_s[x]) for x in xs], marker="o", label=method)
    ax.set_xlabel("sparsity")
    ax.set_ylabel(title)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="small")
  return _save(fig, path)


def plot_study_vs_sparsity(
  groups: list[dict], dist: str, path: str
) -> str | None:
  """A study's certified accuracy (CC-Cert @1e-2) vs sparsity, 95% bands;
  variants with at least two sparsities."""
  lines = collections.defaultdict(dict)
  for g in groups:
    iv = g["certified"].get(dist, {}).get(HEADLINE.key)
    if iv is not None:
      lines[g["variant"]][g["sparsity"]] = iv
  lines = {v: by_s for v, by_s in lines.items() if len(by_s) >= 2}
  if not lines:
    return None
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot(1, 1, 1)
  for variant, by_s in sorted(lines.items()):
    xs = sorted(by_s)
    mean = np.array([by_s[x]["mean"] for x in xs])
    low = np.array([by_s[x]["low"] for x in xs])
    high = np.array([by_s[x]["high"] for x in xs])
    ax.plot(xs, mean, marker="o", label=variant)
    if not np.isnan(low).any():
      ax.fill_between(xs, low, high, alpha=0.2)
  ax.set_xlabel("sparsity")
  ax.set_ylabel(f"certified accuracy ({dist}, CC-Cert, eps=1e-2)")
  ax.legend(fontsize="small")
  return _save(fig, path)


def plot_study_vs_clean(groups: list[dict], dist: str, path: str) -> str | None:
  """A study's certified vs clean accuracy, one point per (variant,
  sparsity), with 95% intervals as error bars."""
  points = [(g, g["certified"].get(dist, {}).get(HEADLINE.key)) for g in groups]
  points = [
    (g, iv) for g, iv in points if iv is not None and g["clean_accuracy"]
  ]
  if not points:
    return None
  fig = Figure(figsize=(6, 4.5))
  ax = fig.add_subplot(1, 1, 1)
  for g, iv in points:
    clean = g["clean_accuracy"]
    err = lambda i: 0.0 if math.isnan(i["low"]) else (i["high"] - i["low"]) / 2
    ax.errorbar(
      clean["mean"],
      iv["mean"],
      xerr=err(clean),
      yerr=err(iv),
      marker="o",
      capsize=3,
      label=f"{g['variant']} s={g['sparsity']:g}",
    )
  ax.set_xlabel("clean accuracy")
  ax.set_ylabel(f"certified accuracy ({dist}, CC-Cert, eps=1e-2)")
  ax.legend(fontsize="x-small")
  return _save(fig, path)


def plot_flatness(groups: list[dict], path: str) -> str | None:
  """The structural-flatness diagnostic: accuracy vs swapped fraction per
  variant: random solid, directed
  dashed (means over seeds; the unswapped accuracy at 0)."""
  if not groups:
    return None
  fig = Figure(figsize=(6.5, 4.5))
  ax = fig.add_subplot(1, 1, 1)
  for g in groups:
    base = g["base"]["accuracy"]["mean"]
    xs = [0.0] + [100 * float(f) for f in g["fractions"]]
    label = f"{g['variant']} s={g['sparsity']:g}"
    line = None
    for kind, style in (("random", "-"), ("directed", "--")):
      ys = [base] + [base - g[kind][f]["drop"]["mean"] for f in g["fractions"]]
      color = None if line is None else line.get_color()
      (line,) = ax.plot(
        xs,
        ys,
        style,
        marker="o",
        markersize=3,
        color=color,
        label=label if kind == "random" else None,
      )
  ax.set_xscale("symlog", linthresh=0.5)
  ax.set_xlabel("kept entries swapped per layer (%)")
  ax.set_ylabel("clean accuracy (solid: random swaps, dashed: directed)")
  ax.legend(fontsize="x-small")
  return _save(fig, path)
