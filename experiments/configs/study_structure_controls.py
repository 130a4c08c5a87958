"""The structure sweep's controls, each with its twins, on one pretraining.

  python -m experiments.study \
    --config=experiments/configs/study_structure_controls.py

The one-seed sweep (experiments/configs/study_structure_sweep.py) ran HYDRA,
csam_rho0, its five candidates and csam_nocert_rho0; its controls had not
run when it turned out that a pretraining run does not repeat bit for bit on
another machine (the five-seed study's seed-0 pretraining tests at 63.92%
on the machine that ran it and 64.48% on a later one; HYDRA fine-tuned on
the variations from the two runs certified up to 3.1 points apart). The
sweep's pretraining checkpoint is gone, so a control run now would be paired
with its twin across two pretraining runs: a one-seed comparison would
confound them. This study therefore runs every control together with the
settings it is compared with, all from one pretraining run.

The protocol is the sweep's: the CPU study's model, data and budget at
sparsity 0.9, seed 9 (the same training subset and initialization as the
sweep's), every model evaluated and certified on the sweep's 500 validation
images, never on test images. Only the flatness diagnostic swaps the
five-seed study's finer fractions (0.05-10% of every layer's kept entries,
``study_structure.FLATNESS_FRACTIONS``), because the sweep's smallest
fraction, 0.5%, already took its models to chance accuracy under the
directed swap. Nothing here is chosen: the sweep's rule chose the five-seed
study's setting from the sweep's own records.

The settings run in pairs, so that a study cut short has whole comparisons:
HYDRA and csam_rho0 (the twin of every setting), the flip-targeted radius at
1% and the random direction with the same flip count (sharpness or noise
injection?), the soft forward without and with the perturbation (the CPU
sweep ran it only with the perturbation), no hinge without and with
the 1% radius, the 10% radius with its random-direction and no-hinge
controls, the hard-mask swap at 10% and its random twin, then the 0.3%
radius and today's C-SAM (rho 0.05, about 0.3% flips). Records go to
results/study_structure_controls/cells/.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import study_structure, study_structure_sweep

SETTINGS = (
  "hydra",
  "csam_rho0",
  "csam_f1",
  "csam_rand_f1",
  "csam_soft_rho0",
  "csam_soft",
  "csam_nocert_rho0",
  "csam_nocert_f1",
  "csam_f10",
  "csam_rand_f10",
  "csam_nocert_f10",
  "csam_swap_f10",
  "csam_randswap_f10",
  "csam_f0.3",
  "csam",
)


def get_config() -> ml_collections.ConfigDict:
  """Returns the structure controls' study config."""
  config = study_structure_sweep.get_config()
  config.name = "study_structure_controls"
  config.flatness.fractions = study_structure.FLATNESS_FRACTIONS
  study = config.study
  study.name = "study_structure_controls"
  study.variants = SETTINGS
  study.pairs = study_structure_sweep.CONTROL_PAIRS
  return config
