"""Mask-space sharpness that changes structure, on five seeds.

  python -m experiments.study --config=experiments/configs/study_structure.py

The setting the one-seed sweep chose on validation images
(experiments/configs/study_structure_sweep.py; `chosen_setting` applies the
rule fixed there to its records) against its twin without the
perturbation (csam_rho0) and the two augmentation-fair variants
(hydra_aug, csam_rho0_aug), then the controls that separate what makes a
mask flat under the structural-flatness diagnostic: HYDRA (none of C-SAM's
ingredients), today's C-SAM (rho 0.05) and csam_nocert_rho0 (the [0, 1]
projection alone; last, because at the sweep's seed it trained HYDRA's
model bit for bit). The grid runs the chosen setting and csam_rho0 on all
five seeds first, then the other variants one by one. Sparsity 0.9, seeds
0-4 (the sweep ran seed 9), the study_cpu model, data and budget with the
sweep's validation carve (the training subsets never hold a validation
image).

The pretraining: the main pair, hydra_aug and csam_rho0_aug ran on one
machine; the controls run on another, whose pretraining of the same seed
and config differs in the last bits of its arithmetic and so trains
another model. RESULTS.md's "Pretraining" line names the cells of each
run. A control paired with a cell of the first four variants pairs two
pretraining runs of its seed: the seed is still the unit of the
seed-level interval, which takes that variation in; the controls pair
among themselves on one run. Today's C-SAM on seeds 0-2 is the peers
study's record (``reuse_dirs``: its config but for the name, from the
same pretraining run), not trained twice.

Every model is certified on one set of 1,000 test images
(``study.image_seed``: the same rows for every variant and seed; N = 10 x
100 draws, the semantic distribution), runs the flatness diagnostic
(swaps of 0.05-10% of every layer's kept entries: the sweep's directed
swaps reached chance accuracy at its smallest fraction, 0.5%; certified at
0.1% and 1% on 100 of the images) and CIFAR-10-C (generated) on 250
images.
"""

from __future__ import annotations

import os

import ml_collections

from experiments.configs import study_structure_sweep
from experiments.study import report as study_report

SWEEP_DIR = "results/study_structure_sweep"
CONTROLS = ("hydra", "csam", "csam_nocert_rho0")
# The flatness diagnostic's swapped fractions. The sweep's directed swaps
# took HYDRA and csam_rho0 to chance accuracy at its smallest fraction
# (0.5%): smaller ones resolve where that happens.
FLATNESS_FRACTIONS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


def chosen_setting(sweep_dir: str = SWEEP_DIR) -> str:
  """The sweep's choice: the candidate (`study_structure_sweep.CANDIDATES`)
  with the highest certified accuracy (CC-Cert at 1e-2, semantic) on the
  validation images.

  Raises:
    ValueError: when a candidate's record is missing or was not certified
      on the validation split (the rule needs all of them).
  """
  records = {
    r["variant"]: r
    for r in study_report.load_records(sweep_dir)
    if r["variant"] in study_structure_sweep.CANDIDATES
  }
  missing = [c for c in study_structure_sweep.CANDIDATES if c not in records]
  if missing:
    raise ValueError(
      f"{sweep_dir}: the sweep has no record of {missing} yet; run "
      "experiments/configs/study_structure_sweep.py to the end first."
    )
  for name, rec in records.items():
    split = rec["certification"]["images"]["split"]
    if split != "validation":
      raise ValueError(f"{name}: certified on {split!r}, not 'validation'")

  def certified(name: str) -> float:
    return records[name]["certification"]["semantic"]["cc_cert"]["1e-02"]

  return max(study_structure_sweep.CANDIDATES, key=certified)


def get_config() -> ml_collections.ConfigDict:
  """Returns the five-seed structure study's config."""
  config = study_structure_sweep.get_config()
  config.name = "study_structure"
  config.evaluation.split = "eval"
  config.certify.num_images = 1000
  config.corruptions.enabled = True
  config.corruptions.num_images = 250
  config.flatness.fractions = FLATNESS_FRACTIONS
  # Certified where the directed swap leaves accuracy to certify.
  config.flatness.certify_fractions = (0.001, 0.01)
  config.flatness.certify_images = 100
  best = chosen_setting(os.environ.get("CSAM_STRUCTURE_SWEEP_DIR", SWEEP_DIR))
  main = (best, "csam_rho0", "hydra_aug", "csam_rho0_aug")
  config.study = ml_collections.ConfigDict(
    dict(
      name="study_structure",
      variants=main + CONTROLS,
      sparsity=0.9,
      extra_sparsities=(),
      # The grid's first tier: the main pair on every seed before anything
      # else (a study stopped part-way has its question answered across
      # training runs first); the rest follow variant by variant.
      extra_variants=main[:2],
      seeds=(0, 1, 2, 3, 4),
      image_seed=2027,
      main_variant=best,
      pairs=(
        ("csam_rho0", "hydra"),  # the hinge and the projection
        ("csam_nocert_rho0", "hydra"),  # the projection alone
        ("csam", "csam_rho0"),  # today's perturbation (~0.3% flips)
        ("csam_rho0_aug", "hydra_aug"),  # the hinge on top of augmentation
        ("hydra_aug", "hydra"),  # augmentation alone
      ),
      main_distribution="semantic",
      sweep_dir=None,
      # A control that study_peers ran from this study's pretraining run
      # of the seed (today's C-SAM, seeds 0-2) is copied, not run again.
      reuse_dirs=("results/study_peers",),
    )
  )
  return config
