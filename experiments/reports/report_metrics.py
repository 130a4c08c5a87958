"""The certified-accuracy metrics the reports show, declared once.

Every table and plot of a run (results.md) and of a study (RESULTS.md,
summary.json, the plots) takes its certificate columns from `METRICS`: the
certificate, its eps level, the one spelling of its label. A study checks
that its config certifies every level a report shows (`check_levels`), so
no column is silently empty.

Example:
  >>> [m.key for m in METRICS]
  ['cc_cert@1e-02', 'cc_cert@1e-03', 'binomial@1e-02', 'binomial@1e-03']
  >>> HEADLINE.label, HEADLINE.level
  ('CC-Cert@1e-2', '1e-02')
"""

from __future__ import annotations

from typing import Any, NamedTuple

from experiments.robustness import certification


class Metric(NamedTuple):
  """One certified accuracy of the reports.

  Attributes:
    certificate: "cc_cert" (CC-Cert) or "binomial" (Clopper-Pearson).
    eps: the certified level.
    label: its one spelling in every table and plot.
    in_tables: shown as a table column (every metric is in summary.json).
  """

  certificate: str
  eps: float
  label: str
  in_tables: bool = True

  @property
  def level(self) -> str:
    """The level as records key it (``certification.eps_key``)."""
    return certification.eps_key(self.eps)

  @property
  def key(self) -> str:
    """``<certificate>@<level>``, the key of a study summary's groups."""
    return f"{self.certificate}@{self.level}"


METRICS = (
  Metric("cc_cert", 1e-2, "CC-Cert@1e-2"),
  Metric("cc_cert", 1e-3, "CC-Cert@1e-3"),
  Metric("binomial", 1e-2, "CP@1e-2"),
  Metric("binomial", 1e-3, "CP@1e-3", in_tables=False),
)
# The headline metric: the study's comparisons, its plots, the run
# report's per-distribution columns.
HEADLINE = METRICS[0]
# The run report's columns (results.md): the headline level, both
# certificates (Clopper-Pearson for the composed distributions only).
RUN_COLUMNS = tuple(m for m in METRICS if m.eps == HEADLINE.eps)


def run_columns(cert: dict[str, Any]) -> dict[str, float | None]:
  """Columns for the Markdown table: accuracies at eps = 1e-2.

  CC-Cert and Clopper-Pearson for the composed distributions, CC-Cert for
  each family alone; None where the certificate cannot reach eps ("n/a").

  Example:
    >>> run_columns({"num_images": 2, "semantic": {"cc_cert":
    ...   {"1e-02": 0.5}, "binomial": {"1e-02": None}}, "gamma":
    ...   {"cc_cert": {"1e-02": 0.75}, "binomial": {"1e-02": 0.5}}})
    {'semantic CC-Cert@1e-2': 0.5, 'semantic CP@1e-2': None, 'gamma CC-Cert@1e-2': 0.75}
  """  # noqa: E501 - a doctest output line.
  columns: dict[str, float | None] = {}
  for distribution in certification.DISTRIBUTIONS:
    if distribution not in cert:
      continue
    for metric in RUN_COLUMNS:
      if (
        metric.certificate == "binomial"
        and distribution in certification.FAMILIES
      ):
        continue
      accs = cert[distribution].get(metric.certificate, {})
      if metric.level in accs:
        columns[f"{distribution} {metric.label}"] = accs[metric.level]
  smoothing = cert.get("smoothing", {})
  positive = [r for r in smoothing if float(r) > 0]
  if positive:
    r = min(positive, key=float)
    columns[f"smoothing r={r}"] = smoothing[r]
  return columns


def check_levels(eps: tuple[float, ...] | list[float]) -> None:
  """Raises ValueError when ``eps`` (a config's ``certify.eps``) lacks a
  level some report shows.

  Example:
    >>> check_levels([1e-3, 1e-2, 0.1])
    >>> check_levels([1e-2])
    Traceback (most recent call last):
    ...
    ValueError: certify.eps lacks 1e-03, which the reports show ...
  """
  have = {certification.eps_key(float(e)) for e in eps}
  missing = sorted({m.level for m in METRICS} - have)
  if missing:
    raise ValueError(
      f"certify.eps lacks {', '.join(missing)}, which the reports show "
      "(experiments/reports/report_metrics.py METRICS); add the level(s) to "
      "certify.eps."
    )
