"""The study runner: grid, shared pretraining, records, resume, report."""

import json
import os

import data_files
import numpy as np
import pytest

from experiments import config_validation, experiment, storage
from experiments.configs import smoke, study_cpu, study_paper
from experiments.study import report as study_report
from experiments.study import runner as study
from experiments.study import stats as study_stats
from experiments.study import variants
from experiments.training import methods


def _tiny_study():
  config = smoke.get_config()
  config.certify.enabled = True
  config.certify.update(
    dict(num_images=16, num_samples=4, num_bounds=2, batch_size=64)
  )
  config.certify.distributions = ("semantic",)
  config.certify.smoothing.enabled = False
  config.study = dict(
    name="tiny",
    variants=("hydra", "csam"),
    sparsity=0.5,
    extra_sparsities=(),
    extra_variants=(),
    seeds=(0,),
    main_variant="csam",
    main_distribution="semantic",
    pairs=(),
  )
  return config


def test_grid_and_cell_configs():
  config = study_cpu.get_config()
  grid = study.cells(config.study)
  assert len(grid) == 3 * (14 + 2 * 3)
  assert grid[0] == study.Cell("csam", 0.9, 0)
  assert len(set(grid)) == len(grid)
  # The main comparison on every seed comes before any ablation.
  first = {(c.variant, c.seed) for c in grid[:9]}
  main = ("csam", "hydra_aug", "hydra")
  assert first == {(v, s) for v in main for s in (0, 1, 2)}
  # Then each other variant on every seed, in study.variants order.
  assert grid[9:12] == [study.Cell("gmp", 0.9, s) for s in (0, 1, 2)]
  assert grid[12:15] == [study.Cell("csam_no_cert", 0.9, s) for s in (0, 1, 2)]
  # The extra sparsities come last, for the main comparison's variants.
  assert grid[-3:] == [study.Cell("hydra", 0.95, s) for s in (0, 1, 2)]
  assert {c.variant for c in grid} >= set(methods.METHODS)
  assert study.Cell("csam", 0.95, 2) in grid
  cfg = study.cell_config(config, study.Cell("csam_car", 0.8, 1))
  assert (cfg.seed, cfg.sparsity, cfg.methods) == (1, 0.8, ("csam",))
  assert cfg.search.csam.forward == "soft" and cfg.certify.per_image
  assert "study" not in cfg
  cfg = study.cell_config(config, study.Cell("csam_aug", 0.9, 0))
  assert cfg.methods == ("csam",) and cfg.finetune.augment_variations
  assert cfg.search.csam.lam_cert == config.search.csam.lam_cert
  cfg = study.cell_config(config, study.Cell("csam_rho0_aug", 0.9, 0))
  assert cfg.search.csam.rho == 0.0 and cfg.finetune.augment_variations
  # Pretraining is shared by every cell of a seed, not across seeds.
  key = lambda v, s, seed: study.pretrain_key(
    study.cell_config(config, study.Cell(v, s, seed))
  )
  assert key("csam_car", 0.8, 1) == key("dense", 0.9, 1)
  assert key("dense", 0.9, 1) != key("dense", 0.9, 2)


def test_study_configs_validate():
  config = study_cpu.get_config()
  config.data.path = data_files.cifar10_npz()
  cfg = study.cell_config(config, study.cells(config.study)[0])
  info = config_validation.validate_config(cfg)
  assert info.num_examples["train"] == 10_000  # the stratified subset
  for arg in ("cifar10c", "flowers102/mobilenet_v2", "celebahq/googlenet"):
    paper = study_paper.get_config(arg)
    study.validate_study(paper.study)
    assert len(study.cells(paper.study)) == 3 * (15 + 2 * 3)
  with pytest.raises(ValueError, match="unknown model 'vgg'"):
    study_paper.get_config("cifar10c/vgg")


def test_bad_study_fields():
  for field, value, match in (
    ("variants", ("csam", "bogus"), "unknown variant 'bogus'"),
    ("seeds", (0, 0), "distinct"),
    ("seeds", (), "distinct"),
    ("extra_sparsities", (1.0,), r"in \(0, 1\)"),
    ("main_variant", "gmp", "main_variant"),
    ("extra_variants", ("gmp",), r"\[.gmp.\] must also be in"),
    ("pairs", (("hydra", "hydra"),), "two different variants"),
    ("pairs", (("hydra", "gmp"),), r"study.pairs: \('hydra', 'gmp'\)"),
    ("baselines", "hydra", "study.baselines must be a tuple"),
    ("guard_reference", 3, "study.guard_reference must be a variant"),
  ):
    config = _tiny_study()
    config.study[field] = value
    with pytest.raises(ValueError, match=match):
      study.validate_study(config.study)
  with pytest.raises(ValueError, match="no field 'search.csam.nope'"):
    variants.VARIANTS["x"] = variants._variant("csam", "", search__csam__nope=1)
    try:
      variants.variant_config(smoke.get_config(), "x")
    finally:
      del variants.VARIANTS["x"]


def test_study_runs_shares_pretraining_resumes_and_reports(
  tmp_path, monkeypatch
):
  config = _tiny_study()
  workdir, results = str(tmp_path / "work"), str(tmp_path / "results")
  calls = []
  real_run = experiment.run
  monkeypatch.setattr(
    experiment,
    "run",
    lambda cfg, d, shared: calls.append(d) or real_run(cfg, d, shared),
  )
  summary = study.run_study(config, workdir, results)
  assert len(calls) == 2 and summary["num_records"] == 2
  # One pretraining directory, shared by both variants.
  assert len(os.listdir(os.path.join(workdir, "pretrain"))) == 1
  recs = {r["cell"]: r for r in study_report.load_records(results)}
  hydra, csam = recs["hydra__s0.50__seed0"], recs["csam__s0.50__seed0"]
  assert hydra["stages"][0] == csam["stages"][0]  # the same pretraining run
  assert csam["sparsity_reached"] == pytest.approx(0.5, abs=0.01)
  assert len(csam["certification"]["semantic"]["per_image"]["correct"]) == 16
  assert 0.0 <= csam["flip_fraction"] <= 1.0 and "flip_fraction" in hydra
  assert csam["search_cross_entropy"] > 0 and hydra["search_cross_entropy"] > 0
  # Resume: a missing record reruns only its cell (from its work directory).
  os.remove(os.path.join(results, "cells", "csam__s0.50__seed0.json"))
  calls.clear()
  study.run_study(config, workdir, results)
  assert [os.path.basename(c) for c in calls] == ["csam__s0.50__seed0"]
  assert study_report.load_records(results)[0] == csam
  with open(os.path.join(results, "summary.json")) as f:
    summary = json.load(f)
  (comparison,) = summary["comparisons"]
  assert comparison["other"] == "hydra" and list(comparison["per_seed"]) == [
    "0"
  ]
  text = open(os.path.join(results, "RESULTS.md")).read()
  assert "Paired comparisons" in text and "| hydra |" in text


def _record(variant, seed, certified, clean=0.8, sparsity=0.9, ce=0.9):
  bits = "".join("1" if c else "0" for c in certified)
  return dict(
    cell=f"{variant}__s{sparsity:.2f}__seed{seed}",
    variant=variant,
    method=variant,
    search_cross_entropy=ce,
    sparsity=sparsity,
    seed=seed,
    clean_accuracy=clean,
    wall_time_s=10.0,
    certification=dict(
      semantic=dict(
        cc_cert={"1e-02": float(np.mean(certified)), "1e-03": 0.0},
        binomial={"1e-02": None, "1e-03": None},
        per_image=dict(cc_cert={"1e-02": bits, "1e-03": "0" * len(bits)}),
      )
    ),
  )


def test_aggregate_hand_made_records(tmp_path):
  rng = np.random.default_rng(0)
  records = []
  for seed in range(3):
    base = rng.random(200) < 0.3
    extra = rng.random(200) < 0.1
    records += [
      _record(
        "csam", seed, base | extra, clean=0.81 + 0.01 * seed, ce=1.0 + seed
      ),
      _record("hydra", seed, base),
      _record("gmp", seed, base & (rng.random(200) < 0.8)),
    ]
  for r in records:
    storage.write_json(str(tmp_path / "cells" / (r["cell"] + ".json")), r)
  config = _tiny_study()
  summary = study_report.aggregate(str(tmp_path), config.study)
  groups = {g["variant"]: g for g in summary["groups"]}
  clean = study_stats.seed_interval([0.81, 0.82, 0.83])
  assert groups["csam"]["clean_accuracy"]["low"] == pytest.approx(clean.low)
  bits = lambda v: np.concatenate(
    [
      np.array(
        list(r["certification"]["semantic"]["per_image"]["cc_cert"]["1e-02"])
      )
      == "1"
      for r in records
      if r["variant"] == v
    ]
  )
  expected = study_stats.paired_comparison(bits("csam"), bits("hydra"))
  comp = {c["other"]: c for c in summary["comparisons"]}
  assert comp["hydra"]["pooled"] == pytest.approx(expected._asdict())
  assert comp["hydra"]["pooled"]["only_b"] == 0  # C-SAM adds images only
  assert summary["pair_comparisons"] == []  # the tiny study has no pairs
  config.study.pairs = (("hydra", "gmp"),)
  summary = study_report.aggregate(str(tmp_path), config.study)
  (pair,) = summary["pair_comparisons"]
  expected = study_stats.paired_comparison(bits("hydra"), bits("gmp"))
  assert (pair["main"], pair["other"]) == ("hydra", "gmp")
  assert pair["pooled"] == pytest.approx(expected._asdict())
  assert pair["pooled"]["only_b"] == 0  # gmp certifies a subset of base
  assert "| 0.90 | hydra | gmp | +" in (tmp_path / "RESULTS.md").read_text()
  (h,) = summary["headline"]
  assert h["best_baseline"] == "hydra"
  cert = lambda v: groups[v]["certified"]["semantic"]["cc_cert@1e-02"]["mean"]
  assert h["relative_improvement"] == pytest.approx(
    (cert("csam") - cert("hydra")) / cert("hydra")
  )
  text = (tmp_path / "RESULTS.md").read_text()
  assert "(A_main - A_best) / A_best" in text
  # The guard: seeds 1 and 2 end the C-SAM search at 2.0 and 3.0 > 1.25 x
  # HYDRA's 0.9; seed 0 (1.0) does not.
  assert [w["seed"] for w in summary["search_guard"]] == [1, 2]
  assert "WARNING: C-SAM searches that did not learn" in text
  assert (tmp_path / "vs_clean.png").exists()
  # A hand-written narrative stays on top; a corrupt record is named.
  (tmp_path / "narrative.md").write_text("# Our study\n\nWhat we found.")
  study_report.aggregate(str(tmp_path), config.study)
  assert (tmp_path / "RESULTS.md").read_text().startswith("# Our study")
  (tmp_path / "cells" / "bad.json").write_text("{")
  with pytest.raises(ValueError, match="bad.json: not a valid study record"):
    study_report.aggregate(str(tmp_path), config.study)


def test_sweep_table_in_the_grid_report(tmp_path):
  # Sweep records: the centre certifies images 0-39 of 100, rho 0.2 adds
  # 40-49, the layerwise radius drops 30-39 (an exact McNemar on 10 vs 0).
  idx = np.arange(100)
  sweep = tmp_path / "sweep"
  for variant, certified in (
    ("sweep_base", idx < 40),
    ("sweep_rho0.2", idx < 50),
    ("sweep_layerwise", idx < 30),
  ):
    rec = _record(variant, 9, certified, ce=1.0)
    rec["certification"]["num_images"] = 100
    storage.write_json(str(sweep / "cells" / (rec["cell"] + ".json")), rec)
  rows = study_report.sweep_rows(str(sweep), "semantic")
  assert [r["variant"] for r in rows] == [
    "sweep_rho0.2",
    "sweep_base",
    "sweep_layerwise",
  ]
  by = {r["variant"]: r for r in rows}
  assert by["sweep_base"]["vs_base"] is None
  up, down = by["sweep_rho0.2"]["vs_base"], by["sweep_layerwise"]["vs_base"]
  assert (up["only_setting"], up["only_centre"]) == (10, 0)
  assert up["difference"] == pytest.approx(0.10)  # rho 0.2 minus the centre
  assert up["low"] > 0 and up["p_value"] == pytest.approx(2 * 0.5**10)
  assert down["difference"] == pytest.approx(-0.10)
  assert by["sweep_rho0.2"]["description"] == "rho 0.2"
  # The grid's report carries the table when study.sweep_dir names it.
  grid = tmp_path / "grid"
  rec = _record("csam", 0, idx < 20)
  storage.write_json(str(grid / "cells" / (rec["cell"] + ".json")), rec)
  config = _tiny_study()
  config.study.sweep_dir = str(sweep)
  summary = study_report.aggregate(str(grid), config.study)
  assert [r["variant"] for r in summary["sweep"]][0] == "sweep_rho0.2"
  text = (grid / "RESULTS.md").read_text()
  assert "### The one-seed sweep that set C-SAM's defaults" in text
  assert "| sweep_rho0.2 | rho 0.2 | 80.0 | 50.0 | n/a |" in text


def test_headline_compares_baselines_on_the_main_variant_seeds():
  def group(variant, seeds, mean):
    cert = {"semantic": {"cc_cert@1e-02": {"mean": mean}}}
    return dict(variant=variant, sparsity=0.9, seeds=seeds, certified=cert)

  groups = [
    group("csam", [0, 1, 2], 0.21),
    group("hydra", [0, 1, 2], 0.16),
    group("gmp", [0, 1, 2], 0.14),
    group("hydra_aug", [0], 0.26),  # higher, but one seed only
  ]
  (h,) = study_report.headline(groups, "csam", "semantic")
  assert h["best_baseline"] == "hydra" and h["left_out"] == ["hydra_aug"]
  assert h["relative_improvement"] == pytest.approx((0.21 - 0.16) / 0.16)
  groups[3]["seeds"] = [0, 1, 2]
  (h,) = study_report.headline(groups, "csam", "semantic")
  assert h["best_baseline"] == "hydra_aug" and h["left_out"] == []
  assert h["relative_improvement"] == pytest.approx((0.21 - 0.26) / 0.26)
  # The study config names its own baselines (and the guard's reference).
  (h,) = study_report.headline(groups, "csam", "semantic", baselines=("gmp",))
  assert h["best_baseline"] == "gmp"
  assert "(gmp)" in study_report.headline_definition(("gmp",))
  rec = lambda v, ce: dict(
    variant=v,
    method=v.split("_")[0],
    sparsity=0.9,
    seed=0,
    search_cross_entropy=ce,
  )
  records = [rec("hydra", 0.88), rec("hydra_ref", 1.5), rec("csam", 1.54)]
  assert [w["variant"] for w in study_report.search_guard(records)] == ["csam"]
  assert study_report.search_guard(records, "hydra_ref") == []
