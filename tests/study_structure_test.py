"""The structure study's report: two-level inference, flatness, perturbation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from experiments import storage
from experiments.configs import smoke
from experiments.study import inference as study_inference
from experiments.study import report as study_report
from experiments.study import stats as study_stats
from experiments.study import structure as study_structure


def _record(variant, seed, certified, sparsity=0.9, flat=None, **more):
  bits = "".join("1" if c else "0" for c in certified)
  rec = dict(
    cell=f"{variant}__s{sparsity:.2f}__seed{seed}",
    variant=variant,
    method=more.pop("method", variant),
    sparsity=sparsity,
    seed=seed,
    clean_accuracy=0.8,
    wall_time_s=10.0,
    certification=dict(
      semantic=dict(
        cc_cert={"1e-02": float(np.mean(certified)), "1e-03": 0.0},
        binomial={"1e-02": None, "1e-03": None},
        per_image=dict(cc_cert={"1e-02": bits, "1e-03": "0" * len(bits)}),
      ),
      images=dict(split="eval", sha256="ab" * 32, indices=list(range(10))),
    ),
    **more,
  )
  if flat is not None:
    rec["flatness"] = flat
  return rec


def _flat(base, random, directed, cert=None):
  """A flatness entry: accuracies at fractions 0.01 and 0.05."""
  names = ("0.01", "0.05")
  return dict(
    base=dict(accuracy=base, cross_entropy=1.0, certified=cert),
    random={
      n: dict(accuracy=a, cross_entropy=1.1, certified=None, draws=[])
      for n, a in zip(names, random, strict=True)
    },
    directed={
      n: dict(accuracy=a, cross_entropy=1.2, certified=None)
      for n, a in zip(names, directed, strict=True)
    },
  )


def _bits(n_one, n=100, start=0):
  out = np.zeros(n, bool)
  out[start : start + n_one] = True
  return out


def test_two_level_inference_hand_case():
  # Seeds: A certifies 30, 32, 34 of 100 images and B 20, 20, 30 (nested:
  # B's images are A's first ones), so d = 0.10, 0.12, 0.04.
  comparison = dict(
    main="a",
    other="b",
    sparsity=0.9,
    pooled=study_stats.paired_comparison(
      np.concatenate([_bits(30), _bits(32), _bits(34)]),
      np.concatenate([_bits(20), _bits(20), _bits(30)]),
    )._asdict(),
    per_seed={
      s: study_stats.paired_comparison(_bits(a), _bits(b))._asdict()
      for s, (a, b) in enumerate([(30, 20), (32, 20), (34, 30)])
    },
  )
  out = study_inference.two_level(comparison)
  expected = study_stats.seed_level_difference([0.10, 0.12, 0.04])
  assert out["seed_level"] == pytest.approx(expected._asdict())
  assert out["seed_level"]["agree"] == 3
  het = study_stats.heterogeneity(comparison["per_seed"])
  assert out["heterogeneity"] == pytest.approx(het._asdict())
  # Holm over a family of two: this one and a null comparison.
  null = dict(
    comparison,
    other="c",
    pooled=dict(comparison["pooled"], p_value=0.5),
    per_seed={
      s: dict(v, difference=d)
      for (s, v), d in zip(
        comparison["per_seed"].items(), [0.01, -0.01, 0.0], strict=True
      )
    },
  )
  adjusted = study_inference.adjust([comparison, null])
  p = comparison["pooled"]["p_value"]
  assert adjusted[0]["holm_image"] == pytest.approx(min(1.0, 2 * p))
  assert adjusted[1]["holm_image"] == pytest.approx(max(0.5, 2 * p))
  seed_p = [expected.p_value, adjusted[1]["seed_level"]["p_value"]]
  assert [c["holm_seed"] for c in adjusted] == pytest.approx(
    study_stats.holm(seed_p).tolist()
  )
  assert adjusted[1]["verdict"] == "none"


def test_family_counts_a_pair_once_and_verdicts_rest_on_seeds():
  c = dict(main="a", other="b", sparsity=0.9)
  assert len(study_inference.family([c], [dict(c, main="b", other="a")])) == 1
  assert study_inference.verdict(1e-9, 0.2) == "images"
  assert study_inference.verdict(0.2, 0.01) == "seeds"
  assert study_inference.verdict(0.01, math.nan) == "images"


def test_two_seeds_with_equal_differences_claim_nothing_across_runs():
  """Two seeds with the same difference (zero spread: t-test p = 0) hold
  for the trained models only; a third seed lets the seed level decide."""

  def comparison(diffs):
    per_seed = {
      s: dict(difference=d, n=1000, only_a=60, only_b=60 - round(1000 * d))
      for s, d in enumerate(diffs)
    }
    pooled = dict(difference=float(np.mean(diffs)), p_value=1e-9)
    return dict(
      main="a", other="b", sparsity=0.9, per_seed=per_seed, pooled=pooled
    )

  (two,) = study_inference.adjust([comparison([0.046, 0.046])])
  assert two["seed_level"]["p_value"] == 0.0 and two["holm_seed"] == 0.0
  assert two["verdict"] == "images"
  (three,) = study_inference.adjust([comparison([0.046, 0.046, 0.046])])
  assert three["verdict"] == "seeds"
  assert study_inference.MIN_SEEDS == 3


def test_flatness_groups_and_comparisons_hand_case():
  records = [
    _record("x", 0, _bits(5, 10), flat=_flat(0.60, (0.58, 0.50), (0.5, 0.3))),
    _record("x", 1, _bits(5, 10), flat=_flat(0.62, (0.61, 0.52), (0.5, 0.4))),
    _record("y", 0, _bits(4, 10), flat=_flat(0.60, (0.55, 0.40), (0.4, 0.2))),
    _record("y", 1, _bits(4, 10), flat=_flat(0.60, (0.56, 0.44), (0.4, 0.2))),
    _record("z", 0, _bits(4, 10)),  # no diagnostic: left out
  ]
  groups = {g["variant"]: g for g in study_structure.flatness_groups(records)}
  assert set(groups) == {"x", "y"}
  drop = groups["x"]["random"]["0.05"]["drop"]
  expected = study_stats.seed_interval([0.60 - 0.50, 0.62 - 0.52])
  assert drop == pytest.approx(expected._asdict())
  assert groups["y"]["directed"]["0.01"]["drop"]["mean"] == pytest.approx(0.2)
  (row,) = study_structure.flatness_comparisons(records, [("x", "y")])
  # x's directed drops at 5%: 0.3, 0.22; y's: 0.4, 0.4.
  d = row["directed"]["0.05"]
  assert d == pytest.approx(
    study_stats.seed_level_difference([0.3 - 0.4, 0.22 - 0.4])._asdict()
  )
  # Over both fractions at once: per seed the mean of x's drop minus y's.
  # Directed drops: x (0.1, 0.3) and (0.12, 0.22), y (0.2, 0.4) on both
  # seeds: seed 0 (0.1 + 0.3) / 2 - (0.2 + 0.4) / 2 = -0.1, seed 1
  # (0.12 + 0.22) / 2 - 0.3 = -0.13.
  overall = row["overall"]["directed"]
  expected = study_stats.seed_level_difference([-0.1, -0.13])._asdict()
  assert {k: overall[k] for k in expected} == pytest.approx(expected)
  # Holm over the row's two tests (one row here), as statsmodels adjusts.
  ps = [row["overall"][w]["p_value"] for w in ("random", "directed")]
  holm = multipletests(ps, method="holm")[1]
  assert [row["overall"][w]["holm"] for w in ("random", "directed")] == (
    pytest.approx(holm.tolist())
  )
  table = study_structure.flatness_overall_table([row])
  assert "| 0.90 | x | y | 2 |" in table and "-11.5 [" in table
  table = study_structure.flatness_table(list(groups.values()))
  assert "| x | 0.90 | 2 | 61.0 ± 12.7 |" in table
  assert study_structure.flatness_comparisons(records, [("x", "z")]) == []


def test_perturbation_rows_and_image_sets():
  pert = dict(perturbation_radius=2.0, loss_increase=0.1, grad_cosine=0.5)
  records = [
    _record("c", 0, _bits(5, 10), method="csam", flip_fraction=0.01,
            perturbation=pert),
    _record("c", 1, _bits(7, 10), method="csam", flip_fraction=0.03,
            perturbation=dict(pert, loss_increase=0.3)),
    _record("h", 0, _bits(5, 10), method="hydra"),
  ]  # fmt: skip
  (row,) = study_structure.perturbation_rows(records, [], "semantic")
  assert row["variant"] == "c" and row["versus"] is None
  assert row["flip_fraction"]["mean"] == pytest.approx(0.02)
  assert row["loss_increase"]["mean"] == pytest.approx(0.2)
  assert row["certified"]["mean"] == pytest.approx(0.6)
  info = study_structure.image_sets(records)
  assert info["digests"] == ["ab" * 32] and info["recorded"] == 3
  records[0]["certification"]["images"]["sha256"] = "cd" * 32
  text = study_structure.describe_image_sets(
    study_structure.image_sets(records)
  )
  assert text.startswith("WARNING: the records were certified on 2")


def test_aggregate_reports_both_levels_flatness_and_frostless_corruptions(
  tmp_path,
):
  rng = np.random.default_rng(1)
  records = []
  for seed in range(3):
    base = rng.random(200) < 0.3
    flat = _flat(0.6, (0.58, 0.5), (0.5, 0.3))
    for variant, bits in (("csam", base | (rng.random(200) < 0.1)),
                          ("hydra", base)):  # fmt: skip
      rec = _record(variant, seed, bits, flat=flat)
      rec["corruptions"] = dict(
        source="generated",
        mean_corruption_accuracy=0.5,
        mean_without_frost=0.4 + 0.01 * seed,
      )
      records.append(rec)
  for r in records:
    storage.write_json(str(tmp_path / "cells" / (r["cell"] + ".json")), r)
  config = smoke.get_config()
  config.study = dict(
    name="tiny",
    variants=("hydra", "csam"),
    sparsity=0.9,
    extra_sparsities=(),
    extra_variants=(),
    seeds=(0, 1, 2),
    main_variant="csam",
    main_distribution="semantic",
    pairs=(),
  )
  summary = study_report.aggregate(str(tmp_path), config.study)
  (inf,) = summary["inference"]
  assert inf["holm_image"] == pytest.approx(inf["pooled"]["p_value"])
  groups = {g["variant"]: g for g in summary["groups"]}
  assert groups["csam"]["corruption_accuracy"]["mean"] == pytest.approx(0.41)
  text = (tmp_path / "RESULTS.md").read_text()
  assert "### Two levels of inference" in text
  assert "adjusted over the 1 comparisons" in text
  assert "CIFAR-10-C (generated) acc. (%)" in text
  assert "### Structural flatness" in text
  # The flatness comparison of the main variant with HYDRA, one row.
  assert text.count("| 0.90 | csam | hydra | +0.0 [+0.0, +0.0] 0/3;") == 1
  assert "Every model was certified on one image set" in text
  assert (tmp_path / "flatness.png").exists()
