"""The one-seed sweep that sets C-SAM's defaults for the CPU study.

  python -m experiments.study --config=experiments/configs/study_sweep.py

The CPU study's setting (experiments/configs/study_cpu.py) on a seed the
study's grid does not use (9), so choosing the defaults here does not bias
the grid's seeds: C-SAM at sparsity 0.9 with one field changed at a time
around `experiments.study.variants.SWEEP_BASE` (radius, rho, init, forward,
lam_cert, mask learning rate, the hinge's BatchNorm statistics), and HYDRA
as the reference. To fit the budget each model is certified on 500 test
images (not the grid's 1,000; N = 10 x 100 draws as the grid) and corruption
accuracy is not measured (certified accuracy under the semantic
distribution decides). Records go to results/study_sweep/cells/.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import study_cpu
from experiments.study import variants


def get_config() -> ml_collections.ConfigDict:
  """Returns the sweep's study config."""
  config = study_cpu.get_config()
  config.name = "study_sweep"
  config.corruptions.enabled = False
  config.certify.num_images = 500
  config.study.update(
    dict(
      name="study_sweep",
      variants=("hydra", *variants.SWEEP),
      extra_sparsities=(),
      extra_variants=(),
      seeds=(9,),
      main_variant="sweep_base",
      pairs=(),  # study_cpu's pairs name variants the sweep did not run
      sweep_dir=None,  # this is the sweep
    )
  )
  return config
