"""Numbers of a study's narrative, generated from its records.

A study's hand-written interpretation (``<results_dir>/narrative.md``) is a
template: every measured number in it is a placeholder ``{{name arg ...}}``
that `render` replaces, at aggregation, with the value computed from the
cell records and the summary of `experiments.study.report.aggregate`. The
prose keeps the interpretation; the numbers cannot go stale or be mistyped.
`unverified_numbers` lists the numbers a template still types by hand
outside its placeholders and the whitelisted config-level facts (`ALLOWED`),
so a test can require that there are none.

Grammar (one placeholder per ``{{...}}``, on one line; arguments separated
by spaces; V a variant, S a sparsity, SEED a seed; V... and SEED... are
comma-separated lists). Accuracies are in percent, differences in points
(percentage points), p-values to three significant digits.

Per cell (METRIC one of `METRICS`):

* ``{{METRIC V S}}``: mean over the seeds; ``{{METRIC V S SEED}}``: one
  seed's value;
* ``{{METRIC_ci V S}}``: mean ± half-width of the 95% Student-t interval over
  the seeds (as in RESULTS.md's table);
* ``{{METRIC_range V... S [SEED...]}}``: lowest-highest over the cells (of
  the listed seeds, or all);
* ``{{halfwidths METRIC}}``: the lowest and highest half-width of the seed
  intervals of every (variant, sparsity);
* ``{{passes V S STAGE}}``: forward and backward passes a step of a stage;
* ``{{seedgap V S SEED_A SEED_B}}``: certified accuracy of seed A minus seed
  B; ``{{seedgaps SEED_A SEED_B}}``: its range over every (variant,
  sparsity).

Comparisons (the two-level inference of `experiments.study.inference`, on
the certified indicator of the main distribution at eps 1e-2; A vs B may be
stored as B vs A, the sign is then turned):

* ``{{diff A B S}}``: per image, pooled over seeds: A minus B with its 95%
  interval, the exact McNemar p and its Holm adjustment;
  ``{{diff A B S SEED}}``: one seed's difference and McNemar p;
* ``{{only A B S [SEED]}}``: images certified only by A / only by B;
* ``{{seeddiff A B S}}``: per seed: the mean of the per-seed differences, its
  t interval, t-test p, Holm p and the seeds of the mean's sign;
* ``{{seedmetric METRIC A B S}}``: the same for any accuracy or fraction
  METRIC (e.g. ``clean``), on the seeds A and B share; outside the family
  the report Holm-adjusts, so no Holm p;
* ``{{verdict A B S}}``: which level supports the difference
  (`study_inference.VERDICTS`);
* ``{{verdicts KEY}}``: every comparison of that verdict (KEY: seeds,
  images or none);
* ``{{agree A B}}``: seed x sparsity cells whose difference has the sign of
  the mean over all of them ("9 of 9");
* ``{{diffs A B}}``: the pooled per-image difference at every sparsity;
* ``{{diffwidths}}``: the lowest and highest half-width of the pooled
  per-image intervals of every comparison;
* ``{{rel A B S}}``: relative difference of the mean certified accuracies,
  ``(A - B) / B`` in percent;
* ``{{headline S}}``: the report's headline at sparsity S.

Structural flatness (experiments/robustness/flatness.py; F a swapped fraction,
e.g. 0.001; SWAP ``random`` or ``directed``):

* ``{{drop V S F SWAP}}``: the clean accuracy lost (points, mean over
  seeds) when F of every layer's kept entries are swapped;
* ``{{flatdiff A B S F SWAP}}``: A's drop minus B's, seed-level mean, t
  interval and seeds of its sign (A before B as in the study's pairs or
  its main comparisons);
* ``{{flatsigns A B S SWAP}}``: that difference over every swapped
  fraction: how many are below zero, their range, and the fractions whose
  seed-level interval lies below or above zero (each fraction's own 95%
  interval, not adjusted for the fractions' number);
* ``{{flatmean A B S SWAP}}``: that difference over all swapped fractions
  at once (its mean over them, one number per seed): seed-level mean, t
  interval, t-test p, Holm over the report's pairs and both swaps, and
  seeds of its sign.

The study: ``{{records}}`` (cell records), ``{{family}}`` (comparisons in the
Holm family), ``{{sweep NAME}}`` (certified accuracy of a setting of the
one-seed sweep) and ``{{sweepdiff NAME}}`` (its paired difference from the
sweep's centre).

Example:
  >>> rec = lambda v, seed, acc: dict(variant=v, sparsity=0.9, seed=seed,
  ...   clean_accuracy=acc)
  >>> records = [rec("csam", 0, 0.62), rec("csam", 1, 0.64)]
  >>> render("Clean: {{clean csam 0.9}}% (seed 1: {{clean csam 0.9 1}}%).",
  ...   {}, records)
  'Clean: 63.0% (seed 1: 64.0%).'
  >>> render("{{clean csam 0.8}}", {}, records)
  Traceback (most recent call last):
  ...
  ValueError: line 1: {{clean csam 0.8}}: no records of csam at sparsity 0.8
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from experiments.study import inference as study_inference
from experiments.study import stats as study_stats

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
LEVEL = "1e-02"

# Literals a narrative may type by hand: config-level facts of the study
# (experiments/configs/study_cpu.py, study_sweep.py,
# experiments/study/variants.py), the paper's claim, the seeds' image-set
# overlaps (checked against experiments.robustness.evaluation.evaluation_indices
# by tests/study_narrative_test.py) and names that contain digits. Each is
# matched as a whole phrase.
ALLOWED = (
  "0.8",  # the sparsities (study.sparsity, study.extra_sparsities)
  "0.9",
  "0.95",
  "seeds 0, 1, 2",  # the seeds (study.seeds)
  "seeds 1 and 2",
  "seed 0",
  "seed 1",
  "seed 2",
  "seed 9",  # the sweep's seed and images (study_sweep.py)
  "500 images",
  "lam_cert 3",  # C-SAM's default weight of the hinge, set by the sweep
  "lam_cert 1",  # the sweep's settings (variants.SWEEP_BASE, SWEEP)
  "lam_cert 0.3",
  "rho 0.01",
  "rho 0.05",
  "rho 0.2",
  "mask learning rate 0.1",
  "mask learning rate 0.3",
  "batch 128",  # batch_size
  "1,000",  # certify.num_images per seed; pooled over the three seeds:
  "3,000",
  "N = 10 x 100",  # certify.num_bounds x certify.num_samples
  "1e-2",  # the certified eps levels
  "1e-3",
  "±0.2",  # the certified variations (certify.variations.ranges)
  "[0.7, 1.3]",
  "10,000",  # data.train_examples
  "width 0.125",  # model.width
  "15 + 3 + 3 epochs",  # pretrain, search and fine-tuning epochs
  "200 epochs",  # the CrAM and SAFE references' training (docs/method.md)
  "3 epochs",
  "250 images",  # corruptions.num_images, names and severities
  "15 corruptions at 5 severities",
  "rho = 0",  # the ablations (experiments/study/variants.py)
  "lam_cert = 0",
  "weight decay 1e-4",  # hydra_ref's reference settings
  "keeps 10%",  # 1 - sparsity 0.9
  "top 10%",
  "p < 0.05",  # the level of the verdicts (study_inference.ALPHA)
  "95%",  # the level of the intervals (study_stats.LEVEL)
  "[0, 1]",  # the interval C-SAM projects its scores onto
  "up to +42%",  # the paper's claim
  "width 0.25",  # where the layerwise radius was reported not to search
  "93 to 104 images",  # image-set overlaps of seeds 0, 1, 2 (see above)
  "10 images are in all three",
  "issue 22",  # names
  "CIFAR-10",
  "ResNet-18",
)

# A number: digits not inside an identifier (csam_rho0, seed0, s0.90), with
# a leading sign, thousands separators, decimals and an exponent; a unit
# after it ("3.3x", "10%") does not hide it.
NUMBER = re.compile(r"(?<![\w.])[+\-]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[+\-]?\d+)?")
# Text that may hold hand-typed numbers: placeholders, retracted statements
# quoted in a corrections list (~~...~~) and list numbering.
EXEMPT = re.compile(r"\{\{.*?\}\}|~~(?s:.*?)~~|^\s*\d+\.\s", re.MULTILINE)


def render(text: str, summary: dict, records: list[dict]) -> str:
  """``text`` with every placeholder replaced by its value.

  Args:
    text: the template (a narrative.md).
    summary: what `experiments.study.report.aggregate` returns (or its
      summary.json): ``inference``, ``sign_agreement``, ``headline``,
      ``sweep`` and ``main_distribution`` are read, when a placeholder
      needs them.
    records: the cell records (`experiments.study.report.load_records`).

  Returns:
    The text, every ``{{...}}`` replaced.

  Raises:
    ValueError: an unknown placeholder, malformed arguments, a variant,
      sparsity, seed or comparison the records and summary do not hold, or
      an unclosed ``{{``; the message names the placeholder and its line.

  Example:
    >>> render("{{records}} cells", {}, [{}, {}])
    '2 cells'
    >>> render("{{cert}}", {}, [])
    Traceback (most recent call last):
    ...
    ValueError: line 1: {{cert}}: cert takes V S [SEED], got []
  """
  context = _Context(summary, records)
  out = []
  for number, line in enumerate(text.splitlines(keepends=True), 1):
    out.append(_render_line(line, number, context))
  return "".join(out)


def unverified_numbers(text: str) -> list[str]:
  """The numbers of ``text`` typed by hand: outside placeholders, retracted
  (``~~...~~``) text and list numbering, and not an `ALLOWED` literal.

  Returns:
    ``"<number> (line <n>)"`` for each, in order.

  Example:
    >>> unverified_numbers("At 0.9 C-SAM: {{cert csam 0.9}}%, not 21.3%; "
    ...   "~~5-7 points~~, seeds 0, 1, 2, `csam_rho0`.\\nHYDRA 16.1.")
    ['21.3 (line 1)', '16.1 (line 2)']
  """
  text = EXEMPT.sub(lambda m: _blank(m.group()), text)
  for literal in sorted(ALLOWED, key=len, reverse=True):
    text = _allowed(literal).sub(lambda m: _blank(m.group()), text)
  return [
    f"{m.group()} (line {text.count(chr(10), 0, m.start()) + 1})"
    for m in NUMBER.finditer(text)
  ]


def _blank(s: str) -> str:
  """``s`` as spaces, its newlines kept (line numbers stay right)."""
  return re.sub(r"[^\n]", " ", s)


def _allowed(literal: str) -> re.Pattern:
  """``literal`` as a whole phrase (not inside a longer number or name);
  its spaces match any whitespace, line breaks included."""
  words = r"\s+".join(re.escape(w) for w in literal.split(" "))
  return re.compile(rf"(?<![\w.+\-]){words}(?![\w]|\.\d)")


def _render_line(line: str, number: int, context: _Context) -> str:
  def replace(match: re.Match) -> str:
    try:
      return _expand(match.group(1).split(), context)
    except ValueError as e:
      raise ValueError(f"line {number}: {match.group()}: {e}") from None

  out = PLACEHOLDER.sub(replace, line)
  if "{{" in out or "}}" in out:
    raise ValueError(f"line {number}: unclosed placeholder in {line.strip()!r}")
  return out


class _Context:
  """What a template is rendered from: the records and the summary."""

  def __init__(self, summary: dict, records: list[dict]):
    self.summary = summary
    self.records = records
    self.dist = summary.get("main_distribution", "semantic")

  def cells(
    self, variant: str, sparsity: float, seeds: list[int] | None = None
  ) -> list[dict]:
    """The records of one (variant, sparsity), of ``seeds`` (all: None)."""
    out = [
      r
      for r in self.records
      if r.get("variant") == variant
      and math.isclose(r.get("sparsity", math.nan), sparsity)
    ]
    if not out:
      raise ValueError(f"no records of {variant} at sparsity {sparsity:g}")
    if seeds is None:
      return sorted(out, key=lambda r: r["seed"])
    by_seed = {r["seed"]: r for r in out}
    missing = [s for s in seeds if s not in by_seed]
    if missing:
      raise ValueError(
        f"no records of {variant} at sparsity {sparsity:g}, seed {missing}"
      )
    return [by_seed[s] for s in seeds]

  def groups(self) -> list[tuple[str, float]]:
    """Every (variant, sparsity) of the records."""
    keys = {(r["variant"], r["sparsity"]) for r in self.records}
    return sorted(keys, key=lambda k: (k[1], k[0]))

  def need(self, key: str) -> Any:
    """A summary entry; ValueError when the summary lacks it."""
    if key not in self.summary:
      raise ValueError(f"the summary has no {key!r}")
    return self.summary[key]


# --- Per-cell metrics -------------------------------------------------------


def _stage(rec: dict, value: str, field: str, by: str = "name") -> float | None:
  """``field`` of the first stage whose ``by`` ("name" or "kind") is
  ``value``."""
  for stage in rec.get("stages") or ():
    if stage.get(by) == value:
      return stage.get(field)
  return None


def _certified(kind: str) -> Callable[[dict, str], float | None]:
  def get(rec: dict, dist: str) -> float | None:
    cert = (rec.get("certification") or {}).get(dist) or {}
    return (cert.get(kind) or {}).get(LEVEL)

  return get


def _corruption(rec: dict, dist: str) -> float | None:
  # Imported here: experiments.study.report imports this module.
  from experiments.study import report as study_report

  return study_report.corruption_mean(rec)


def _field(name: str) -> Callable[[dict, str], float | None]:
  return lambda rec, dist: rec.get(name)


def _perturbation(name: str) -> Callable[[dict, str], float | None]:
  return lambda rec, dist: (rec.get("perturbation") or {}).get(name)


def _pct(digits: int) -> Callable[[float], str]:
  return lambda v: f"{100 * v:.{digits}f}"


def _plain(digits: int) -> Callable[[float], str]:
  return lambda v: f"{v:.{digits}f}"


# name: (value of a record, format). Accuracies and fractions in percent
# (`PERCENT_METRICS`, the ones a difference in points is defined for).
METRICS = {
  "clean": (_field("clean_accuracy"), _pct(1)),
  "cert": (_certified("cc_cert"), _pct(1)),  # CC-Cert at eps 1e-2
  "cp": (_certified("binomial"), _pct(1)),  # Clopper-Pearson at eps 1e-2
  "corr": (_corruption, _pct(1)),  # CIFAR-10-C (generated), without frost
  "flip": (_field("flip_fraction"), _pct(2)),  # kept entries flipped / step
  "ce": (_field("search_cross_entropy"), _plain(2)),  # search's last CE
  # The search's perturbation, means over its steps: ||e||, L(C+e) - L(C)
  # and cos(g(C+e), g(C)).
  "radius": (_perturbation("perturbation_radius"), _plain(3)),
  "loss_increase": (_perturbation("loss_increase"), _plain(3)),
  "grad_cosine": (_perturbation("grad_cosine"), _plain(3)),
  "search_acc": (  # test accuracy of the hard mask after the search
    lambda rec, dist: _stage(rec, "search", "eval_accuracy"),
    _pct(1),
  ),
  # CrAM's / SAFE's dense model before the one-shot pruning (test accuracy
  # at the end of the compression-aware stage).
  "dense_acc": (
    lambda rec, dist: _stage(rec, "compression", "eval_accuracy", by="kind"),
    _pct(1),
  ),
  "wall": (_field("wall_time_s"), _plain(0)),  # training after pretraining
  "pretrain_s": (_field("pretrain_wall_time_s"), _plain(0)),
  "search_s": (
    lambda rec, dist: _stage(rec, "search", "wall_time_s"),
    _plain(0),
  ),
  "finetune_s": (
    lambda rec, dist: _stage(rec, "finetune", "wall_time_s"),
    _plain(0),
  ),
}
PERCENT_METRICS = (
  "clean",
  "cert",
  "cp",
  "corr",
  "flip",
  "search_acc",
  "dense_acc",
)


def _values(context: _Context, metric: str, cells: list[dict]) -> list[float]:
  get = METRICS[metric][0]
  out = []
  for rec in cells:
    value = get(rec, context.dist)
    if value is None:
      raise ValueError(
        f"{rec['variant']} at sparsity {rec['sparsity']:g}, seed "
        f"{rec['seed']} has no {metric}"
      )
    out.append(float(value))
  return out


def _metric(context: _Context, metric: str, args: list[str]) -> str:
  _arity(metric, args, "V S [SEED]", 2, 3)
  seeds = [_int(args[2])] if len(args) == 3 else None
  cells = context.cells(args[0], _float(args[1]), seeds)
  values = _values(context, metric, cells)
  return METRICS[metric][1](sum(values) / len(values))


def _metric_ci(context: _Context, metric: str, args: list[str]) -> str:
  _arity(f"{metric}_ci", args, "V S", 2, 2)
  cells = context.cells(args[0], _float(args[1]))
  iv = study_stats.seed_interval(_values(context, metric, cells))
  fmt = METRICS[metric][1]
  if math.isnan(iv.low):
    return fmt(iv.mean)
  return f"{fmt(iv.mean)} ± {fmt((iv.high - iv.low) / 2)}"


def _metric_range(context: _Context, metric: str, args: list[str]) -> str:
  _arity(f"{metric}_range", args, "V... S [SEED...]", 2, 3)
  seeds = _ints(args[2]) if len(args) == 3 else None
  values = []
  for variant in args[0].split(","):
    cells = context.cells(variant, _float(args[1]), seeds)
    values += _values(context, metric, cells)
  return _span(METRICS[metric][1], min(values), max(values), "-")


def _span(fmt: Callable[[float], str], low: float, high: float, sep: str):
  low, high = fmt(low), fmt(high)
  return low if low == high else f"{low}{sep}{high}"


def _halfwidths(context: _Context, args: list[str]) -> str:
  _arity("halfwidths", args, "METRIC", 1, 1)
  if args[0] not in METRICS:
    raise ValueError(f"unknown metric {args[0]!r}; known: {sorted(METRICS)}")
  halves = []
  for variant, sparsity in context.groups():
    cells = context.cells(variant, sparsity)
    iv = study_stats.seed_interval(_values(context, args[0], cells))
    if not math.isnan(iv.low):
      halves.append((iv.high - iv.low) / 2)
  if not halves:
    raise ValueError("no (variant, sparsity) has two seeds")
  return _span(METRICS[args[0]][1], min(halves), max(halves), " to ")


def _passes(context: _Context, args: list[str]) -> str:
  _arity("passes", args, "V S STAGE", 3, 3)
  from experiments.study import report as study_report

  rec = context.cells(args[0], _float(args[1]))[0]
  passes = study_report.passes_of(rec) or {}
  if args[2] not in passes:
    raise ValueError(f"{args[0]} has no stage {args[2]!r}: {passes}")
  return str(passes[args[2]])


def _seedgap_value(context, variant, sparsity, seed_a, seed_b) -> float:
  a, b = context.cells(variant, sparsity, [seed_a, seed_b])
  va, vb = _values(context, "cert", [a, b])
  return va - vb


def _seedgap(context: _Context, args: list[str]) -> str:
  _arity("seedgap", args, "V S SEED_A SEED_B", 4, 4)
  gap = _seedgap_value(
    context, args[0], _float(args[1]), _int(args[2]), _int(args[3])
  )
  return _points(gap)


def _seedgaps(context: _Context, args: list[str]) -> str:
  _arity("seedgaps", args, "SEED_A SEED_B", 2, 2)
  a, b = _int(args[0]), _int(args[1])
  gaps = [
    _seedgap_value(context, v, s, a, b)
    for v, s in context.groups()
    if {a, b} <= {r["seed"] for r in context.cells(v, s)}
  ]
  if not gaps:
    raise ValueError(f"no (variant, sparsity) has seeds {a} and {b}")
  return _span(_points, min(gaps), max(gaps), " to ")


# --- Comparisons ------------------------------------------------------------


def _turned(c: dict) -> dict:
  """A comparison A vs B seen as B vs A."""
  paired = lambda p: dict(
    p,
    only_a=p["only_b"],
    only_b=p["only_a"],
    difference=-p["difference"],
    low=-p["high"],
    high=-p["low"],
  )
  seed = c["seed_level"]
  return dict(
    c,
    main=c["other"],
    other=c["main"],
    pooled=paired(c["pooled"]),
    per_seed={k: paired(v) for k, v in c["per_seed"].items()},
    seed_level=dict(
      seed, mean=-seed["mean"], low=-seed["high"], high=-seed["low"]
    ),
  )


def _comparison(context: _Context, a: str, b: str, sparsity: float) -> dict:
  for c in context.need("inference"):
    if not math.isclose(c["sparsity"], sparsity):
      continue
    if (c["main"], c["other"]) == (a, b):
      return c
    if (c["main"], c["other"]) == (b, a):
      return _turned(c)
  raise ValueError(f"no comparison of {a} and {b} at sparsity {sparsity:g}")


def _per_seed(c: dict, seed: int) -> dict:
  by_seed = {int(k): v for k, v in c["per_seed"].items()}
  if seed not in by_seed:
    raise ValueError(f"the comparison has no seed {seed}: {sorted(by_seed)}")
  return by_seed[seed]


# One p-value format for every report (`study_inference.p_text`).
_p = study_inference.p_text


def _points(x: float) -> str:
  """A difference in points, signed (``0.0`` without a sign)."""
  s = f"{100 * x:+.1f}"
  return "0.0" if s in ("+0.0", "-0.0") else s


def _seed_interval(mean, low, high, agree, n, p_value=None) -> str:
  """A seed-level difference: mean, t interval, [t-test p,] sign count."""
  test = "" if p_value is None else f"t-test p = {_p(p_value)}, "
  return (
    f"{_points(mean)} points [{_points(low)}, {_points(high)}], "
    f"{test}same sign on {agree} of {n} seeds"
  )


def _pair_args(name: str, args: list[str], seed: bool) -> tuple:
  _arity(name, args, "A B S [SEED]" if seed else "A B S", 3, 4 if seed else 3)
  return (
    args[0],
    args[1],
    _float(args[2]),
    (_int(args[3]) if len(args) == 4 else None),
  )


def _diff(context: _Context, args: list[str]) -> str:
  a, b, s, seed = _pair_args("diff", args, seed=True)
  c = _comparison(context, a, b, s)
  if seed is not None:
    p = _per_seed(c, seed)
    return f"{_points(p['difference'])} points, p = {_p(p['p_value'])}"
  p = c["pooled"]
  return (
    f"{_points(p['difference'])} points [{_points(p['low'])}, "
    f"{_points(p['high'])}], McNemar p = {_p(p['p_value'])}, Holm "
    f"{_p(c['holm_image'])}"
  )


def _only(context: _Context, args: list[str]) -> str:
  a, b, s, seed = _pair_args("only", args, seed=True)
  c = _comparison(context, a, b, s)
  p = c["pooled"] if seed is None else _per_seed(c, seed)
  return f"{p['only_a']} / {p['only_b']}"


def _seeddiff(context: _Context, args: list[str]) -> str:
  a, b, s, _ = _pair_args("seeddiff", args, seed=False)
  c = _comparison(context, a, b, s)
  d = c["seed_level"]
  if d["n"] < 2:
    return f"{_points(d['mean'])} points (one seed: no seed-level interval)"
  return (
    f"{_points(d['mean'])} points [{_points(d['low'])}, "
    f"{_points(d['high'])}], t-test p = {_p(d['p_value'])}, Holm "
    f"{_p(c['holm_seed'])}, same sign on {d['agree']} of {d['n']} seeds"
  )


def _seedmetric(context: _Context, args: list[str]) -> str:
  """A metric's difference A minus B paired by seed (the seeds both have):
  mean, Student-t interval, t-test p and the seeds of the mean's sign."""
  _arity("seedmetric", args, "METRIC A B S", 4, 4)
  metric, a, b, s = args[0], args[1], args[2], _float(args[3])
  if metric not in PERCENT_METRICS:
    raise ValueError(
      f"seedmetric needs an accuracy or fraction metric, got {metric!r}"
    )
  seeds = sorted(
    {r["seed"] for r in context.cells(a, s)}
    & {r["seed"] for r in context.cells(b, s)}
  )
  if not seeds:
    raise ValueError(f"{a} and {b} share no seed at sparsity {s:g}")
  va = _values(context, metric, context.cells(a, s, seeds))
  vb = _values(context, metric, context.cells(b, s, seeds))
  pairs = zip(va, vb, strict=True)
  d = study_stats.seed_level_difference([x - y for x, y in pairs])
  if d.n < 2:
    return f"{_points(d.mean)} points (one seed)"
  return _seed_interval(d.mean, d.low, d.high, d.agree, d.n, d.p_value)


def _verdict(context: _Context, args: list[str]) -> str:
  a, b, s, _ = _pair_args("verdict", args, seed=False)
  return study_inference.VERDICTS[_comparison(context, a, b, s)["verdict"]]


def _verdicts(context: _Context, args: list[str]) -> str:
  _arity("verdicts", args, "KEY", 1, 1)
  if args[0] not in study_inference.VERDICTS:
    raise ValueError(
      f"unknown verdict {args[0]!r}; known: {list(study_inference.VERDICTS)}"
    )
  chosen = [
    f"`{c['main']}` minus `{c['other']}` at {c['sparsity']:g} "
    f"({_points(c['seed_level']['mean'])})"
    for c in context.need("inference")
    if c["verdict"] == args[0]
  ]
  return "; ".join(chosen) or "none"


def _agree(context: _Context, args: list[str]) -> str:
  _arity("agree", args, "A B", 2, 2)
  pairs = {(a, b) for a, b in [args, args[::-1]]}
  for row in context.need("sign_agreement"):
    if (row["main"], row["other"]) in pairs:
      return f"{row['agree']} of {row['cells']}"
  raise ValueError(f"no comparison of {args[0]} and {args[1]}")


def _diffs(context: _Context, args: list[str]) -> str:
  _arity("diffs", args, "A B", 2, 2)
  sparsities = sorted(
    c["sparsity"]
    for c in context.need("inference")
    if {c["main"], c["other"]} == set(args)
  )
  if not sparsities:
    raise ValueError(f"no comparison of {args[0]} and {args[1]}")
  return ", ".join(
    f"{_points(_comparison(context, *args, s)['pooled']['difference'])} at "
    f"{s:g}"
    for s in sparsities
  )


def _diffwidths(context: _Context, args: list[str]) -> str:
  _arity("diffwidths", args, "", 0, 0)
  halves = [
    (c["pooled"]["high"] - c["pooled"]["low"]) / 2
    for c in context.need("inference")
  ]
  if not halves:
    raise ValueError("the summary has no comparisons")
  return _span(_pct(1), min(halves), max(halves), " to ")


def _rel(context: _Context, args: list[str]) -> str:
  a, b, s, _ = _pair_args("rel", args, seed=False)
  means = [
    sum(v) / len(v)
    for v in (_values(context, "cert", context.cells(x, s)) for x in (a, b))
  ]
  return f"{100 * study_stats.relative_improvement(*means):+.1f}"


def _headline(context: _Context, args: list[str]) -> str:
  _arity("headline", args, "S", 1, 1)
  s = _float(args[0])
  for h in context.need("headline"):
    if math.isclose(h["sparsity"], s):
      return (
        f"{100 * h['relative_improvement']:+.1f}% relative to "
        f"`{h['best_baseline']}` ({100 * h['main_certified']:.1f}% vs "
        f"{100 * h['best_certified']:.1f}%)"
      )
  raise ValueError(f"no headline at sparsity {s:g}")


# --- Structural flatness ---------------------------------------------------


def _swap(name: str, swap: str) -> str:
  if swap not in ("random", "directed"):
    raise ValueError(f"{name}: SWAP must be random or directed, got {swap!r}")
  return swap


def _fraction_key(row: dict, f: str) -> str:
  for key in row:
    if math.isclose(float(key), float(f)):
      return key
  raise ValueError(f"no swapped fraction {f} (measured: {list(row)})")


def _drop(context: _Context, args: list[str]) -> str:
  _arity("drop", args, "V S F SWAP", 4, 4)
  v, s, f = args[0], _float(args[1]), args[2]
  swap = _swap("drop", args[3])
  for g in context.need("flatness"):
    if g["variant"] == v and math.isclose(g["sparsity"], s):
      return f"{100 * g[swap][_fraction_key(g[swap], f)]['drop']['mean']:.1f}"
  raise ValueError(f"no flatness diagnostic of {v} at sparsity {s:g}")


def _flatness_comparison(context: _Context, a: str, b: str, s: float) -> dict:
  for c in context.need("flatness_comparisons"):
    if (c["main"], c["other"]) == (a, b) and math.isclose(c["sparsity"], s):
      return c
  raise ValueError(f"no flatness comparison of {a} and {b} at {s:g}")


def _flatsigns(context: _Context, args: list[str]) -> str:
  """A's drop minus B's over every swapped fraction: how many are below
  zero, their range, and where the seed-level interval excludes zero."""
  _arity("flatsigns", args, "A B S SWAP", 4, 4)
  a, b, s = args[0], args[1], _float(args[2])
  swap = _swap("flatsigns", args[3])
  rows = _flatness_comparison(context, a, b, s)[swap]
  means = [d["mean"] for d in rows.values()]
  below = sum(m < 0 for m in means)
  span = _span(_points, min(means), max(means), " to ")

  def where(side) -> str:
    keys = [f"{100 * float(k):g}%" for k, d in rows.items() if side(d)]
    return ", ".join(keys) or "none"

  return (
    f"below zero at {below} of {len(means)} swapped fractions ({span} "
    f"points); the seed-level interval lies below zero at "
    f"{where(lambda d: d['high'] < 0)} and above it at "
    f"{where(lambda d: d['low'] > 0)}"
  )


def _flatdiff(context: _Context, args: list[str]) -> str:
  _arity("flatdiff", args, "A B S F SWAP", 5, 5)
  a, b, s, f = args[0], args[1], _float(args[2]), args[3]
  swap = _swap("flatdiff", args[4])
  rows = _flatness_comparison(context, a, b, s)[swap]
  d = rows[_fraction_key(rows, f)]
  if math.isnan(d["low"]):
    return f"{_points(d['mean'])} points (one seed)"
  return _seed_interval(d["mean"], d["low"], d["high"], d["agree"], d["n"])


def _flatmean(context: _Context, args: list[str]) -> str:
  """A's drop minus B's over all swapped fractions at once (``overall``):
  seed-level interval, t-test p, its Holm adjustment, sign count."""
  _arity("flatmean", args, "A B S SWAP", 4, 4)
  a, b, s = args[0], args[1], _float(args[2])
  swap = _swap("flatmean", args[3])
  d = _flatness_comparison(context, a, b, s)["overall"][swap]
  if d["n"] < 2:
    return f"{_points(d['mean'])} points (one seed)"
  return (
    f"{_points(d['mean'])} points [{_points(d['low'])}, "
    f"{_points(d['high'])}], t-test p = {_p(d['p_value'])}, Holm "
    f"{_p(d['holm'])}, same sign on {d['agree']} of {d['n']} seeds"
  )


# --- The study --------------------------------------------------------------


def _records(context: _Context, args: list[str]) -> str:
  _arity("records", args, "", 0, 0)
  return str(len(context.records))


def _family(context: _Context, args: list[str]) -> str:
  _arity("family", args, "", 0, 0)
  return str(len(context.need("inference")))


def _sweep_row(context: _Context, name: str) -> dict:
  for row in context.need("sweep"):
    if row["variant"] == name:
      return row
  raise ValueError(f"the sweep has no setting {name!r}")


def _sweep(context: _Context, args: list[str]) -> str:
  _arity("sweep", args, "NAME", 1, 1)
  value = _sweep_row(context, args[0])["cc_cert"]
  if value is None:
    raise ValueError(f"the sweep's {args[0]} has no certified accuracy")
  return f"{100 * value:.1f}"


def _sweepdiff(context: _Context, args: list[str]) -> str:
  _arity("sweepdiff", args, "NAME", 1, 1)
  c = _sweep_row(context, args[0])["vs_base"]
  if c is None:
    raise ValueError(f"{args[0]} is the sweep's centre")
  return (
    f"{_points(c['difference'])} points [{_points(c['low'])}, "
    f"{_points(c['high'])}], McNemar p = {_p(c['p_value'])}"
  )


# --- Parsing ----------------------------------------------------------------

HANDLERS = {
  "halfwidths": _halfwidths,
  "passes": _passes,
  "seedgap": _seedgap,
  "seedgaps": _seedgaps,
  "diff": _diff,
  "only": _only,
  "seeddiff": _seeddiff,
  "seedmetric": _seedmetric,
  "verdict": _verdict,
  "verdicts": _verdicts,
  "agree": _agree,
  "diffs": _diffs,
  "diffwidths": _diffwidths,
  "rel": _rel,
  "headline": _headline,
  "drop": _drop,
  "flatdiff": _flatdiff,
  "flatsigns": _flatsigns,
  "flatmean": _flatmean,
  "records": _records,
  "family": _family,
  "sweep": _sweep,
  "sweepdiff": _sweepdiff,
}


def names() -> list[str]:
  """Every placeholder name.

  Example:
    >>> [n for n in names() if n.startswith("cert")]
    ['cert', 'cert_ci', 'cert_range']
  """
  forms = [f"{m}{suffix}" for m in METRICS for suffix in ("", "_ci", "_range")]
  return forms + list(HANDLERS)


def _expand(words: list[str], context: _Context) -> str:
  if not words:
    raise ValueError("empty placeholder")
  name, args = words[0], words[1:]
  if name in HANDLERS:
    return HANDLERS[name](context, args)
  for suffix, fn in (("_ci", _metric_ci), ("_range", _metric_range)):
    if name.endswith(suffix) and name[: -len(suffix)] in METRICS:
      return fn(context, name[: -len(suffix)], args)
  if name in METRICS:
    return _metric(context, name, args)
  raise ValueError(f"unknown placeholder {name!r}; known: {names()}")


def _arity(name: str, args: list[str], usage: str, low: int, high: int):
  if not low <= len(args) <= high:
    raise ValueError(f"{name} takes {usage}, got {args}")


def _float(s: str) -> float:
  try:
    return float(s)
  except ValueError:
    raise ValueError(f"not a sparsity: {s!r}") from None


def _int(s: str) -> int:
  try:
    return int(s)
  except ValueError:
    raise ValueError(f"not a seed: {s!r}") from None


def _ints(s: str) -> list[int]:
  return [_int(x) for x in s.split(",")]
