"""csam_jax: C-SAM (Compression-aware Sharpness Minimization) in JAX and Optax.

Sharpness-aware minimization in pruning-mask space as composable Optax
gradient transformations, mask pytrees, the C-SAM objective terms, Monte Carlo
robustness certification and input variations (He & Chen, 2026).
"""

from csam_jax import certify, objectives, variations
from csam_jax._src.apply import apply_masks, sparsity
from csam_jax._src.cram import CrAMState, cram_transform
from csam_jax._src.masks import init_masks, prunable
from csam_jax._src.perturbation import (
  CSAMState,
  csam,
  csam_transform,
  project_unit_interval,
)
from csam_jax._src.safe import SAFEState, penalty_schedule, safe_transform
from csam_jax._src.structure import (
  RandomDirectionState,
  flip_fraction,
  flip_targeted_radius,
  num_swapped,
  random_direction,
  swap_masks,
  swap_transform,
)
from csam_jax._src.threshold import (
  threshold_masks,
  threshold_masks_at,
  threshold_rank,
)
from csam_jax._src.topk import (
  topk_counts,
  topk_masks,
  topk_masks_from_counts,
)

__version__ = "0.1.0"

__all__ = (
  "CrAMState",
  "CSAMState",
  "apply_masks",
  "certify",
  "cram_transform",
  "csam",
  "csam_transform",
  "flip_fraction",
  "flip_targeted_radius",
  "init_masks",
  "num_swapped",
  "objectives",
  "penalty_schedule",
  "project_unit_interval",
  "prunable",
  "RandomDirectionState",
  "SAFEState",
  "safe_transform",
  "random_direction",
  "sparsity",
  "swap_masks",
  "swap_transform",
  "threshold_masks",
  "threshold_masks_at",
  "threshold_rank",
  "topk_counts",
  "topk_masks",
  "topk_masks_from_counts",
  "variations",
)
