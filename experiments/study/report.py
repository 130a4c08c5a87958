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
  seed, with the difference and its interval (`experiments.study.stats`);
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
import os
from typing import Any

import ml_collections
import numpy as np

from experiments import config_validation, storage
from experiments.reports import plots, report_metrics
from experiments.study import inference as study_inference
from experiments.study import pretraining as study_pretraining
from experiments.study import render as study_render
from experiments.study import stats as study_stats
from experiments.study import structure as study_structure
from experiments.study import variants
from experiments.training import methods, stages

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
  (recomputed from its config, read through the upgrade path of older
  runs, for records written before they were kept; None when that fails)."""
  if rec.get("passes_per_step"):
    return rec["passes_per_step"]
  try:
    cfg = ml_collections.ConfigDict(
      config_validation.stored_config(rec["config"])
    )
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
  frost: experiments/robustness/corruption_eval.py).

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
        m.key: _interval(
          [_metric(r, dist, m.certificate, m.level) for r in recs]
        )
        for m in report_metrics.METRICS
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
  records: list[dict],
  main: str,
  dist: str,
  level: str = report_metrics.HEADLINE.level,
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
  records: list[dict],
  pairs: Any,
  dist: str,
  level: str = report_metrics.HEADLINE.level,
) -> list[dict[str, Any]]:
  """Each ``(a, b)`` of ``pairs`` (``study.pairs``: an ablation or control
  against the variant it modifies) at every sparsity both were run at,
  the same statistics as `paired_comparisons`."""
  sparsities = sorted({r["sparsity"] for r in records})
  return _compare(
    records, [(a, b, s) for a, b in pairs for s in sparsities], dist, level
  )


def headline(
  groups: list[dict],
  main: str,
  dist: str,
  level: str = report_metrics.HEADLINE.level,
  baselines: tuple[str, ...] = BASELINES,
) -> list[dict[str, Any]]:
  """Relative improvement of ``main`` over the best of ``baselines``, per
  sparsity.

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
      if v in baselines and g["seeds"] == seeds
    }
    base = {v: iv for v, iv in base.items() if iv is not None}
    left_out = sorted(
      v for v, g in at.items() if v in baselines and g["seeds"] != seeds
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


def search_guard(
  records: list[dict], reference: str = "hydra"
) -> list[dict[str, Any]]:
  """C-SAM variants whose search ended with a cross-entropy above
  `SEARCH_LOSS_RATIO_LIMIT` x the ``reference`` variant's (HYDRA's by
  default; same seed and sparsity: paired batches).

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
    if r["variant"] == reference
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
  sweep_dir: str, dist: str, level: str = report_metrics.HEADLINE.level
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
        # The run report's columns, one per certificate (RUN_COLUMNS).
        **{
          m.certificate: cert.get(m.certificate, {}).get(m.level)
          for m in report_metrics.RUN_COLUMNS
        },
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


def headline_definition(baselines: tuple[str, ...] = BASELINES) -> str:
  """The headline's definition, as the report states it."""
  return (
    "Relative improvement in certified robustness over the best baseline: "
    "(A_main - A_best) / A_best, where A is the CC-Cert certified accuracy "
    "at eps = 1e-2 under the main distribution, averaged over seeds, and "
    "A_best the highest such accuracy among the pruning baselines ("
    + ", ".join(baselines)
    + ") run at the same sparsity on the same seeds. The paper reports "
    "'up to +42%' on this kind of ratio."
  )


def aggregate(results_dir: str, study: Any) -> dict[str, Any]:
  """Writes summary.json, RESULTS.md and the plots; returns the summary.

  The headline's baselines are ``study.baselines`` (default `BASELINES`)
  and the search guard's reference is ``study.guard_reference`` (default
  "hydra").
  """
  records = load_records(results_dir)
  baselines = tuple(study.get("baselines", BASELINES))
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
    pretraining_runs=study_pretraining.runs(records),
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
    headline=headline(
      groups, study.main_variant, main_dist, baselines=baselines
    ),
    search_guard=search_guard(records, study.get("guard_reference", "hydra")),
    headline_definition=headline_definition(baselines),
  )
  storage.write_json(os.path.join(results_dir, "summary.json"), summary)
  storage.path(results_dir, "RESULTS.md").write_text(
    study_render.results_markdown(
      results_dir, summary, dists, records, SEARCH_LOSS_RATIO_LIMIT
    )
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
