"""results.json, results.md and plots in the work directory (process 0)."""

from __future__ import annotations

import math
import os
from typing import Any

from absl import logging

from experiments import storage
from experiments.reports import markdown, plots, report_metrics
from experiments.robustness import certification, corruption_eval

BASE_COLUMNS = (
  ("method", "method"),
  ("model", "model"),
  ("sparsity", "sparsity"),
  ("sparsity_reached", "sparsity reached"),
  ("clean_accuracy", "clean acc."),
  ("wall_time_s", "wall time (s)"),
)


def table_columns(entry: dict[str, Any]) -> dict[str, float | None]:
  """Extra table columns from certification and corruption results."""
  columns: dict[str, float | None] = {}
  if entry.get("certification") is not None:
    columns.update(report_metrics.run_columns(entry["certification"]))
  if entry.get("corruptions") is not None:
    columns.update(corruption_eval.corruption_columns(entry["corruptions"]))
  return columns


def _format(value: Any, key: str = "") -> str:
  """A table cell: "n/a" for None (a level a certificate cannot reach)."""
  if value is None:
    return "n/a"
  if isinstance(value, float):
    if math.isnan(value):
      return "-"
    return f"{value:.1f}" if key == "wall_time_s" else f"{value:.4f}"
  return str(value)


def markdown_table(runs: list[dict[str, Any]]) -> str:
  """A Markdown table of the runs (one row per method).

  Example:
    >>> rows = markdown_table([dict(method="dense", model="tiny_cnn",
    ...   sparsity=0.0, sparsity_reached=0.0, clean_accuracy=0.9,
    ...   wall_time_s=12.0)]).splitlines()
    >>> rows[0].split(" | ")[:4]
    ['| method', 'model', 'sparsity', 'sparsity reached']
    >>> rows[2]
    '| dense | tiny_cnn | 0.0000 | 0.0000 | 0.9000 | 12.0 |'

  A column a run lacks reads "-"; a certified accuracy at a level its
  certificate cannot reach (None) reads "n/a".
  """
  extra = [table_columns(r) for r in runs]
  extra_names = list(dict.fromkeys(k for e in extra for k in e))
  header = [title for _, title in BASE_COLUMNS] + extra_names
  rows = []
  for run, ex in zip(runs, extra, strict=True):
    cells = [_format(run[k], k) for k, _ in BASE_COLUMNS]
    cells += [_format(ex.get(k, float("nan"))) for k in extra_names]
    rows.append(cells)
  return markdown.table(header, rows)


def write_results(
  workdir: str, config_dict: dict[str, Any], runs: list[dict[str, Any]]
) -> None:
  """Writes results.json, results.md and (when available) plots.

  results.json keeps each stage's record without its metric summary (the
  means and last logged interval of every metric): that stays in the full
  entries of ``runs/<method>.json`` and in the checkpoints.

  Args:
    workdir: the work directory.
    config_dict: the config as a JSON-able dict.
    runs: run entries (`experiments.experiment.method_entry`).
  """
  storage.write_json(
    os.path.join(workdir, "results.json"),
    {"config": config_dict, "runs": [_without_summaries(r) for r in runs]},
    indent=2,
  )
  storage.path(workdir, "results.md").write_text(
    results_markdown(config_dict.get("name", ""), runs)
  )
  for name, plot in (
    ("certified_vs_eps.png", plots.plot_certified_vs_eps),
    ("vs_sparsity.png", plots.plot_vs_sparsity),
  ):
    try:
      plot(runs, os.path.join(workdir, name))
    except Exception as e:  # noqa: BLE001 - plots must not lose results.
      logging.warning("Plot %s failed: %s: %s", name, type(e).__name__, e)


def _without_summaries(run: dict[str, Any]) -> dict[str, Any]:
  if "stages" not in run:
    return run
  stages = [
    {k: v for k, v in r.items() if k != "summary"} for r in run["stages"]
  ]
  return dict(run, stages=stages)


def results_markdown(name: str, runs: list[dict[str, Any]]) -> str:
  """results.md: the runs table, the certification protocol, corruptions.

  Example:
    >>> print(results_markdown("demo", [dict(method="dense", model="cnn",
    ...   sparsity=0.0, sparsity_reached=0.0, clean_accuracy=0.9,
    ...   wall_time_s=1.0)]))
    # Results: demo
    <BLANKLINE>
    | method | model | sparsity | sparsity reached | clean acc. | wall time (s) |
    | --- | --- | --- | --- | --- | --- |
    | dense | cnn | 0.0000 | 0.0000 | 0.9000 | 1.0 |
    <BLANKLINE>
  """  # noqa: E501 - a doctest output line.
  parts = [f"# Results: {name}", markdown_table(runs)]
  cert = next((r["certification"] for r in runs if r.get("certification")), 0)
  if cert:
    parts.append(certification.protocol_note(cert))
  by_corruption = corruption_eval.methods_table(runs)
  if by_corruption:
    parts.append(
      "## Accuracy per corruption (mean over severities)\n\n" + by_corruption
    )
  return "\n\n".join(parts) + "\n"
