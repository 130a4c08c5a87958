"""Aggregates a study's cell records into RESULTS.md, summary.json, plots.

Reads ``<results_dir>/cells/*.json`` (written by `experiments.study`) and
nothing else, so a study can be re-aggregated anywhere from the committed
records. What it reports:

* per variant and sparsity: mean and 95% Student-t interval over seeds of
  clean accuracy, CC-Cert certified accuracy at eps 1e-2 and 1e-3 (per
  distribution), the Clopper-Pearson certificate at 1e-2 (n/a below its
  ``eps_min``), CIFAR-10-C accuracy, wall time;
* paired per-image comparisons of the main variant (C-SAM) with every other
  variant at the same sparsity, on the certified indicator of the main
  distribution at 1e-2: the exact McNemar test pooled over seeds and per
  seed, with the difference and its interval (`experiments.study_stats`);
* the headline: relative improvement in certified accuracy of the main
  variant over the best baseline at the same sparsity (defined in the
  report);
* plots: certified accuracy vs sparsity with interval bands, and certified
  vs clean accuracy per variant.

* the one-seed sweep that set the defaults, when ``study.sweep_dir`` names
  a results directory of sweep records (experiments/configs/
  study_sweep.py): one row per setting, with its paired difference from the
  sweep's centre (`sweep_rows`).

Hand-written text (the interpretation) lives in
``<results_dir>/narrative.md`` and is copied to the top of RESULTS.md;
aggregation never overwrites it.
"""

from __future__ import annotations

import collections
import json
import math
import os
from typing import Any

import ml_collections
import numpy as np

from experiments import (
  markdown,
  methods,
  plots,
  stages,
  storage,
  study_inference,
  study_narrative,
  study_stats,
  study_structure,
  variants,
)

# Baselines of the headline comparison: the pruning methods of the paper and
# their reference-fidelity variants (not the dense models, not ablations).
BASELINES = (
  "sam_prune",
  "prune_sam",
  "gmp",
  "hydra",
  "gmp_layer",
  "hydra_layer",
  "hydra_ref",
  "hydra_aug",
)
LEVELS = ("1e-02", "1e-03")


def load_records(results_dir: str) -> list[dict[str, Any]]:
  """Every cell record, sorted by (sparsity, variant, seed).

  Raises:
    ValueError: a record that is not valid JSON or lacks a field.
  """
  out = []
  cells = storage.path(results_dir, "cells")
  for path in sorted(cells.glob("*.json")) if cells.is_dir() else []:
    try:
      rec = json.loads(path.read_text())
      rec["variant"], rec["sparsity"], rec["seed"]
    except (json.JSONDecodeError, KeyError) as e:
      raise ValueError(f"{path}: not a valid study record ({e})") from e
    out.append(rec)
  return sorted(out, key=lambda r: (r["sparsity"], r["variant"], r["seed"]))


def _metric(rec: dict, dist: str, cert: str, level: str) -> float | None:
  value = ((rec.get("certification") or {}).get(dist) or {}).get(cert, {})
  return value.get(level)


def _interval(values: list[float | None]) -> dict[str, Any] | None:
  values = [v for v in values if v is not None]
  if not values:
    return None
  return study_stats.seed_interval(values)._asdict()


def _distributions(records: list[dict]) -> list[str]:
  names = []
  for rec in records:
    for name, value in (rec.get("certification") or {}).items():
      if isinstance(value, dict) and "cc_cert" in value and name not in names:
        names.append(name)
  return names


def passes_of(rec: dict) -> dict[str, int] | None:
  """The record's model passes per step of each post-pretraining stage
  (recomputed from its config for records written before they were kept;
  None when the config is of an older shape)."""
  if rec.get("passes_per_step"):
    return rec["passes_per_step"]
  try:
    cfg = ml_collections.ConfigDict(rec["config"])
    return {
      spec.name: stages.passes_per_step(cfg, spec)
      for spec in methods.get_recipe(rec["method"])
      if not spec.shared
    }
  except (KeyError, AttributeError, ValueError):
    return None


def corruption_mean(rec: dict) -> float | None:
  """A record's CIFAR-10-C accuracy: the mean over the corruptions, without
  frost when it was generated (a synthetic texture, not the published
  frost: experiments/corruption_eval.py).

  Example:
    >>> corruption_mean(dict(corruptions=dict(source="generated",
    ...   mean_corruption_accuracy=0.5, mean_without_frost=0.4)))
    0.4
  """
  c = rec.get("corruptions") or {}
  if c.get("source") == "generated":
    return c.get("mean_without_frost")
  return c.get("mean_corruption_accuracy")


def summarize_groups(records: list[dict]) -> list[dict[str, Any]]:
  """Per (variant, sparsity): seed intervals of every reported metric."""
  groups = collections.defaultdict(list)
  for rec in records:
    groups[(rec["variant"], rec["sparsity"])].append(rec)
  dists = _distributions(records)
  out = []
  for (variant, sparsity), recs in groups.items():
    row = dict(
      variant=variant,
      sparsity=sparsity,
      seeds=sorted(r["seed"] for r in recs),
      clean_accuracy=_interval([r["clean_accuracy"] for r in recs]),
      wall_time_s=_interval([r["wall_time_s"] for r in recs]),
      corruption_accuracy=_interval([corruption_mean(r) for r in recs]),
      flip_fraction=_interval([r.get("flip_fraction") for r in recs]),
      passes_per_step=passes_of(recs[0]),
      search_cross_entropy=_interval(
        [r.get("search_cross_entropy") for r in recs]
      ),
      certified={},
    )
    for dist in dists:
      row["certified"][dist] = {
        f"{cert}@{level}": _interval(
          [_metric(r, dist, cert, level) for r in recs]
        )
        for cert in ("cc_cert", "binomial")
        for level in LEVELS
      }
    out.append(row)
  return out


def _bits(rec: dict, dist: str, level: str) -> np.ndarray | None:
  per_image = ((rec.get("certification") or {}).get(dist) or {}).get(
    "per_image"
  )
  if not per_image:
    return None
  return np.frombuffer(per_image["cc_cert"][level].encode(), np.uint8) == 49


def _paired(
  by_key: dict, a: str, b: str, sparsity: float, dist: str, level: str
) -> dict[str, Any] | None:
  """``a`` vs ``b`` at one sparsity, pooled over seeds and per seed (None
  when no seed has both)."""
  pooled_a, pooled_b, per_seed = [], [], {}
  for seed in sorted({k[2] for k in by_key}):
    ra, rb = by_key.get((a, sparsity, seed)), by_key.get((b, sparsity, seed))
    if ra is None or rb is None:
      continue
    bits_a, bits_b = _bits(ra, dist, level), _bits(rb, dist, level)
    if bits_a is None or bits_b is None:
      continue
    if bits_a.shape != bits_b.shape:
      raise ValueError(
        f"{a} and {b} at s={sparsity}, seed {seed} were certified on "
        "different numbers of images: not paired"
      )
    per_seed[seed] = study_stats.paired_comparison(bits_a, bits_b)._asdict()
    pooled_a.append(bits_a)
    pooled_b.append(bits_b)
  if not per_seed:
    return None
  pooled = study_stats.paired_comparison(
    np.concatenate(pooled_a), np.concatenate(pooled_b)
  )
  return dict(
    main=a,
    other=b,
    sparsity=sparsity,
    distribution=dist,
    level=level,
    pooled=pooled._asdict(),
    per_seed=per_seed,
  )


def _compare(records, pairs, dist, level):
  by_key = {(r["variant"], r["sparsity"], r["seed"]): r for r in records}
  out = [_paired(by_key, a, b, s, dist, level) for a, b, s in pairs]
  return [c for c in out if c is not None]


def paired_comparisons(
  records: list[dict], main: str, dist: str, level: str = "1e-02"
) -> list[dict[str, Any]]:
  """The main variant vs every other one, per sparsity: pooled and per seed.

  Pairs are (same sparsity, same seed, same image); seeds present for only
  one of the two variants are left out.
  """
  pairs = []
  for sparsity in sorted({r["sparsity"] for r in records}):
    others = {r["variant"] for r in records if r["sparsity"] == sparsity}
    pairs += [(main, other, sparsity) for other in sorted(others - {main})]
  return _compare(records, pairs, dist, level)


def pair_comparisons(
  records: list[dict], pairs: Any, dist: str, level: str = "1e-02"
) -> list[dict[str, Any]]:
  """Each ``(a, b)`` of ``pairs`` (``study.pairs``: an ablation or control
  against the variant it modifies) at every sparsity both were run at,
  the same statistics as `paired_comparisons`."""
  sparsities = sorted({r["sparsity"] for r in records})
  return _compare(
    records, [(a, b, s) for a, b in pairs for s in sparsities], dist, level
  )


def headline(
  groups: list[dict], main: str, dist: str, level: str = "1e-02"
) -> list[dict[str, Any]]:
  """Relative improvement of ``main`` over the best baseline, per sparsity.

  Only baselines run on the same seeds as ``main`` compete (means over
  different seeds are not comparable: seeds move certified accuracy more
  than methods do); the others are listed in ``left_out``.
  """
  out = []
  for sparsity in sorted({g["sparsity"] for g in groups}):
    at = {g["variant"]: g for g in groups if g["sparsity"] == sparsity}
    mine = (at.get(main) or {}).get("certified", {}).get(dist, {})
    mine = mine.get(f"cc_cert@{level}")
    seeds = (at.get(main) or {}).get("seeds")
    base = {
      v: g["certified"].get(dist, {}).get(f"cc_cert@{level}")
      for v, g in at.items()
      if v in BASELINES and g["seeds"] == seeds
    }
    base = {v: iv for v, iv in base.items() if iv is not None}
    left_out = sorted(
      v for v, g in at.items() if v in BASELINES and g["seeds"] != seeds
    )
    if mine is None or not base:
      continue
    best = max(base, key=lambda v: base[v]["mean"])
    out.append(
      dict(
        sparsity=sparsity,
        main=main,
        main_certified=mine["mean"],
        best_baseline=best,
        best_certified=base[best]["mean"],
        relative_improvement=study_stats.relative_improvement(
          mine["mean"], base[best]["mean"]
        ),
        left_out=left_out,
      )
    )
  return out


# The guard: a C-SAM search whose final training cross-entropy exceeds
# HYDRA's on the same batches by this factor did not learn (the layerwise
# radius at width 0.25 once ended at 1.54 vs HYDRA's 0.88).
SEARCH_LOSS_RATIO_LIMIT = 1.25


def search_guard(records: list[dict]) -> list[dict[str, Any]]:
  """C-SAM variants whose search ended with a cross-entropy above
  `SEARCH_LOSS_RATIO_LIMIT` x HYDRA's (same seed and sparsity: paired
  batches).

  Example:
    >>> rec = lambda v, ce: dict(variant=v, method=v.split("_")[0],
    ...   sparsity=0.9, seed=0, search_cross_entropy=ce)
    >>> [w["variant"] for w in search_guard([rec("hydra", 0.88),
    ...   rec("csam", 1.54), rec("csam_global", 0.9)])]
    ['csam']
  """
  hydra = {
    (r["sparsity"], r["seed"]): r.get("search_cross_entropy")
    for r in records
    if r["variant"] == "hydra"
  }
  out = []
  for r in records:
    ref = hydra.get((r["sparsity"], r["seed"]))
    ce = r.get("search_cross_entropy")
    if r.get("method") != "csam" or ref is None or ce is None:
      continue
    if ce > SEARCH_LOSS_RATIO_LIMIT * ref:
      out.append(
        dict(
          variant=r["variant"],
          sparsity=r["sparsity"],
          seed=r["seed"],
          cross_entropy=ce,
          hydra_cross_entropy=ref,
        )
      )
  return out


def sweep_rows(
  sweep_dir: str, dist: str, level: str = "1e-02"
) -> list[dict[str, Any]]:
  """One row per setting of a sweep: what it changes and what it measured.

  The centre is the variant called ``sweep_base`` (else the first record);
  each other setting is compared with it image by image (exact McNemar on
  the CC-Cert certified indicator of ``dist`` at ``level``; same seed, same
  images).

  Returns:
    Rows sorted by certified accuracy, highest first, each with variant,
    description, clean, cc_cert, binomial, search_cross_entropy,
    flip_fraction, wall_time_s, num_images and ``vs_base``: the paired
    comparison of the setting with the centre (``difference`` = setting's
    certified accuracy minus the centre's, ``low``/``high`` its interval,
    ``only_setting``/``only_centre`` the discordant counts, ``p_value``);
    None for the centre.
  """
  records = load_records(sweep_dir)
  if not records:
    return []
  names = {r["variant"] for r in records}
  base = "sweep_base" if "sweep_base" in names else records[0]["variant"]
  comparisons = {
    c["other"]: _setting_minus_centre(c["pooled"])
    for c in paired_comparisons(records, base, dist, level)
  }
  rows = []
  for r in records:
    cert = (r.get("certification") or {}).get(dist) or {}
    name = r["variant"]
    rows.append(
      dict(
        variant=name,
        description=variants.VARIANTS[name].description
        if name in variants.VARIANTS
        else "",
        clean=r["clean_accuracy"],
        cc_cert=cert.get("cc_cert", {}).get(level),
        binomial=cert.get("binomial", {}).get(level),
        search_cross_entropy=r.get("search_cross_entropy"),
        flip_fraction=r.get("flip_fraction"),
        wall_time_s=r.get("wall_time_s"),
        num_images=(r.get("certification") or {}).get("num_images"),
        vs_base=comparisons.get(name),
      )
    )
  return sorted(rows, key=lambda row: -(row["cc_cert"] or 0.0))


def _setting_minus_centre(pooled: dict) -> dict:
  """A centre-vs-setting comparison seen from the setting."""
  return dict(
    difference=-pooled["difference"],
    low=-pooled["high"],
    high=-pooled["low"],
    only_setting=pooled["only_b"],
    only_centre=pooled["only_a"],
    p_value=pooled["p_value"],
  )


def _num(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
  return "n/a" if value is None else f"{scale * value:.{digits}f}"


def _sweep_table(rows: list[dict]) -> str:
  header = [
    "setting",
    "what it changes",
    "clean acc. (%)",
    "CC-Cert@1e-2 (%)",
    "CP@1e-2 (%)",
    "setting - centre (points) [95% CI], McNemar p",
    "search CE",
    "flips (%)",
    "wall time (s)",
  ]
  cells = []
  for r in rows:
    c = r["vs_base"]
    versus = (
      "centre"
      if c is None
      else f"{100 * c['difference']:+.1f} [{100 * c['low']:+.1f}, "
      f"{100 * c['high']:+.1f}], p = {c['p_value']:.3g}"
    )
    cells.append(
      [
        r["variant"],
        r["description"],
        _num(r["clean"]),
        _num(r["cc_cert"]),
        _num(r["binomial"]),
        versus,
        _num(r["search_cross_entropy"], 1.0, 3),
        _num(r["flip_fraction"], 100.0, 2),
        _num(r["wall_time_s"], 1.0, 0),
      ]
    )
  return markdown.table(header, cells)


def _pct(iv: dict | None) -> str:
  if iv is None:
    return "n/a"
  if math.isnan(iv["low"]):
    return f"{100 * iv['mean']:.1f}"
  half = (iv["high"] - iv["low"]) / 2
  return f"{100 * iv['mean']:.1f} ± {100 * half:.1f}"


def _groups_table(groups: list[dict], dists: list[str]) -> str:
  header = ["variant", "sparsity", "seeds", "clean acc. (%)"]
  for d in dists:
    header += [f"{d} CC-Cert@1e-2", f"{d} CC-Cert@1e-3", f"{d} CP@1e-2"]
  header += [
    "CIFAR-10-C (generated) acc. (%)",
    "wall time (s)",
    "passes / step",
  ]
  rows = []
  for g in groups:
    cells = [
      g["variant"],
      f"{g['sparsity']:.2f}",
      str(len(g["seeds"])),
      _pct(g["clean_accuracy"]),
    ]
    for d in dists:
      c = g["certified"].get(d, {})
      cells += [
        _pct(c.get("cc_cert@1e-02")),
        _pct(c.get("cc_cert@1e-03")),
        _pct(c.get("binomial@1e-02")),
      ]
    wall = g["wall_time_s"]
    passes = g.get("passes_per_step") or {}
    cells += [
      _pct(g["corruption_accuracy"]),
      f"{wall['mean']:.0f}" if wall else "n/a",
      ", ".join(f"{k} {v}" for k, v in passes.items()) or "n/a",
    ]
    rows.append(cells)
  return markdown.table(header, rows)


def _comparisons_table(comparisons: list[dict], named: bool = False) -> str:
  if named:
    first = ["A", "B", "A minus B (points) [95% CI]", "only A / only B"]
  else:
    first = [
      "C-SAM vs",
      "difference (points) [95% CI]",
      "only C-SAM / only other",
    ]
  header = ["sparsity", *first, "McNemar p (pooled)", "p per seed"]
  rows = []
  for c in comparisons:
    p = c["pooled"]
    seeds = ", ".join(
      f"{s}: {v['p_value']:.3g}" for s, v in c["per_seed"].items()
    )
    names = [c["main"], c["other"]] if named else [c["other"]]
    rows.append(
      [
        f"{c['sparsity']:.2f}",
        *names,
        f"{100 * p['difference']:+.1f} [{100 * p['low']:+.1f}, "
        f"{100 * p['high']:+.1f}]",
        f"{p['only_a']} / {p['only_b']}",
        f"{p['p_value']:.3g}",
        seeds,
      ]
    )
  return markdown.table(header, rows)


HEADLINE_DEFINITION = (
  "Relative improvement in certified robustness over the best baseline: "
  "(A_main - A_best) / A_best, where A is the CC-Cert certified accuracy "
  "at eps = 1e-2 under the main distribution, averaged over seeds, and "
  "A_best the highest such accuracy among the pruning baselines ("
  + ", ".join(BASELINES)
  + ") run at the same sparsity on the same seeds. The paper reports "
  "'up to +42%' on this kind of ratio."
)


def aggregate(results_dir: str, study: Any) -> dict[str, Any]:
  """Writes summary.json, RESULTS.md and the plots; returns the summary."""
  records = load_records(results_dir)
  dists = _distributions(records)
  main_dist = study.main_distribution
  groups = summarize_groups(records)
  comparisons = (
    paired_comparisons(records, study.main_variant, main_dist)
    if main_dist in dists
    else []
  )
  pairs = (
    pair_comparisons(records, study.get("pairs", ()), main_dist)
    if main_dist in dists
    else []
  )
  sweep_dir = study.get("sweep_dir")
  sweep = (
    sweep_rows(sweep_dir, main_dist)
    if sweep_dir and storage.path(sweep_dir, "cells").is_dir()
    else []
  )
  inference = study_inference.adjust(study_inference.family(comparisons, pairs))
  flatness_pairs = [(c["main"], c["other"]) for c in comparisons] + [
    tuple(p) for p in study.get("pairs", ())
  ]
  summary = dict(
    study=study.name,
    image_sets=study_structure.image_sets(records),
    inference=inference,
    sign_agreement=study_inference.sign_agreement(inference),
    flatness=study_structure.flatness_groups(records),
    flatness_comparisons=study_structure.flatness_comparisons(
      records, list(dict.fromkeys(flatness_pairs))
    ),
    perturbation=study_structure.perturbation_rows(
      records, comparisons, main_dist
    ),
    sweep=sweep,
    sweep_dir=sweep_dir,
    num_records=len(records),
    main_variant=study.main_variant,
    main_distribution=main_dist,
    groups=groups,
    comparisons=comparisons,
    pair_comparisons=pairs,
    headline=headline(groups, study.main_variant, main_dist),
    search_guard=search_guard(records),
    headline_definition=HEADLINE_DEFINITION,
  )
  storage.write_json(os.path.join(results_dir, "summary.json"), summary)
  storage.path(results_dir, "RESULTS.md").write_text(
    results_markdown(results_dir, summary, dists, records)
  )
  plots.plot_study_vs_sparsity(
    groups, main_dist, os.path.join(results_dir, "vs_sparsity.png")
  )
  plots.plot_study_vs_clean(
    groups, main_dist, os.path.join(results_dir, "vs_clean.png")
  )
  plots.plot_flatness(
    summary["flatness"], os.path.join(results_dir, "flatness.png")
  )
  return summary


def results_markdown(
  results_dir: str, summary: dict, dists: list[str], records: list[dict]
) -> str:
  """RESULTS.md: the narrative (if any), then the measured tables."""
  parts = []
  narrative = storage.path(results_dir, "narrative.md")
  if narrative.exists():
    # Its numbers are placeholders filled from the records.
    text = narrative.read_text()
    parts.append(study_narrative.render(text, summary, records).strip())
  else:
    parts.append(f"# Study {summary['study']}")
  parts.append(
    f"## Measured ({summary['num_records']} cells; generated by "
    "`python -m experiments.study --aggregate`)\n\n"
    "Mean ± half-width of the 95% Student-t interval over seeds, in "
    "percent. CC-Cert = certified accuracy at the given eps; CP = the "
    "Clopper-Pearson certificate from the same draws (n/a where it cannot "
    "reach eps). Wall time: training after the shared pretraining (search "
    "and fine-tuning), certification not included. passes / step: forward "
    "and backward passes of the model in one step of each stage."
  )
  parts.append(_groups_table(summary["groups"], dists))
  parts.append(
    study_structure.describe_image_sets(summary["image_sets"])
    + " CIFAR-10-C (generated): the mean accuracy over the corruptions "
    "generated in JAX without frost (a synthetic texture standing in for "
    "the published frost photographs)."
  )
  if summary["comparisons"]:
    parts.append(
      f"### Paired comparisons ({summary['main_distribution']}, CC-Cert "
      "@1e-2, per image)\n\nExact McNemar test on the images only one of "
      "the two models certifies; pooled over seeds (the pairs of every seed "
      "concatenated) and per seed. Difference = certified accuracy of "
      f"{summary['main_variant']} minus the other's, with its Wald 95% "
      "interval for paired proportions.\n\n"
      + _comparisons_table(summary["comparisons"])
    )
  if summary.get("pair_comparisons"):
    parts.append(
      "### What each ablation and control changes (paired, "
      f"{summary['main_distribution']}, CC-Cert @1e-2)\n\nEach variant "
      "against the one it modifies (`study.pairs`), the same test: A minus "
      "B, pooled over the seeds both were run on.\n\n"
      + _comparisons_table(summary["pair_comparisons"], named=True)
    )
  parts.extend(_structure_sections(summary))
  lines = [f"### Headline\n\n{summary['headline_definition']}\n"]
  for h in summary["headline"]:
    lines.append(
      f"- sparsity {h['sparsity']:.2f}: {h['main']} "
      f"{100 * h['main_certified']:.1f}% vs best baseline "
      f"{h['best_baseline']} {100 * h['best_certified']:.1f}%: "
      f"{100 * h['relative_improvement']:+.1f}% relative"
      + (
        f" (not yet on the same seeds, left out: {', '.join(h['left_out'])})"
        if h.get("left_out")
        else ""
      )
    )
  if not summary["headline"]:
    lines.append("- not computable yet (no main variant or baseline cells).")
  parts.append("\n".join(lines))
  if summary["search_guard"]:
    rows = "\n".join(
      f"- {w['variant']} (s={w['sparsity']:.2f}, seed {w['seed']}): final "
      f"search cross-entropy {w['cross_entropy']:.3f} vs HYDRA "
      f"{w['hydra_cross_entropy']:.3f} on the same batches"
      for w in summary["search_guard"]
    )
    parts.insert(
      1,
      "## WARNING: C-SAM searches that did not learn\n\nFinal search "
      f"cross-entropy above {SEARCH_LOSS_RATIO_LIMIT}x HYDRA's:\n\n" + rows,
    )
  flips = [
    (g["variant"], g["sparsity"], g["flip_fraction"])
    for g in summary["groups"]
    if g.get("flip_fraction")
  ]
  if flips:
    parts.append(
      "### What the mask perturbation flips\n\nMean over the search "
      "steps of the fraction of kept mask entries that TopK(C + e) drops "
      "(under the STE forward, 0 means the perturbed gradient is the "
      "plain one):\n\n"
      + "\n".join(
        f"- {v} (s={s:.2f}): {100 * iv['mean']:.2f}%" for v, s, iv in flips
      )
    )
  if summary.get("sweep"):
    n = {r["num_images"] for r in summary["sweep"]}
    parts.append(
      "### The one-seed sweep that set C-SAM's defaults\n\n"
      f"From the records in `{summary['sweep_dir']}` (one seed, "
      f"{', '.join(str(x) for x in sorted(n))} certified images per model, "
      f"{summary['main_distribution']} distribution), sorted by CC-Cert "
      "certified accuracy at 1e-2. Each setting changes one field of the "
      "centre (`sweep_base`); the paired difference and McNemar test are "
      "against it on the same images. search CE = cross-entropy of the "
      "search's last logged interval; flips = fraction of kept mask "
      "entries the perturbation flips.\n\n" + _sweep_table(summary["sweep"])
    )
  conv = next(
    ((r.get("certification") or {}).get("conventions") for r in records), None
  )
  if conv:
    parts.append(f"Certification conventions: {json.dumps(conv)}.")
  return "\n\n".join(parts) + "\n"


INFERENCE_NOTE = (
  "Every comparison of this report at two levels. Per image: the exact "
  "McNemar test on the images only one model certifies, pooled over "
  "seeds; it is conditional on the trained models (it measures the noise "
  "of the test images and of the Monte Carlo draws, not of training). Per "
  "seed: the mean of the per-seed differences with its Student-t 95% "
  "interval and one-sample t-test, the seeds whose difference has the "
  "sign of the mean, and Cochran's Q of whether the difference varies "
  "across seeds beyond its within-seed noise (I² its share). Holm: the "
  "p-values of each level adjusted over the {n} comparisons of the "
  "report. Verdict: a difference holds across training runs when the "
  "seed-level Holm p < 0.05; a per-image Holm p < 0.05 alone supports a "
  "claim about these trained models only."
)


def _structure_sections(summary: dict) -> list[str]:
  """The two-level inference, flatness and perturbation sections."""
  out = []
  if summary.get("inference"):
    out.append(
      "### Two levels of inference\n\n"
      + INFERENCE_NOTE.format(n=len(summary["inference"]))
      + "\n\n"
      + study_inference.table(summary["inference"])
    )
  if summary.get("flatness"):
    out.append(
      "### Structural flatness (experiments/flatness.py)\n\nThe final "
      "hard mask of each model with a fraction of every layer's kept "
      "entries swapped for pruned ones (sparsity kept): the clean accuracy "
      "lost (points; mean ± 95% t half-width over seeds) under random "
      "swaps (mean of the draws) and under the gradient-directed swap of "
      "the same size (the first-order worst case), on the certified "
      "images; certified accuracy on a strided subset of them. "
      "![flatness](flatness.png)\n\n"
      + study_structure.flatness_table(summary["flatness"])
    )
  if summary.get("flatness_comparisons"):
    out.append(
      "#### Is one structure flatter than another? (A's drop minus B's, "
      "points; seed-level mean [95% t CI] and seeds of that sign; negative: "
      "A loses less)\n\n"
      + study_structure.flatness_comparison_table(
        summary["flatness_comparisons"]
      )
    )
  if summary.get("perturbation"):
    out.append(
      "### What each C-SAM search's perturbation did\n\nMeans over the "
      "search steps (then over seeds) of the fraction of kept entries the "
      "ascent point's hard mask drops, its distance (norm of e) from the "
      "scores, the loss increase L(C+e) - L(C) and the cosine between the "
      "gradients at C+e and at C; certified accuracy and the per-image "
      "comparison with the main variant.\n\n"
      + study_structure.perturbation_table(
        summary["perturbation"], summary["main_variant"]
      )
    )
  return out
