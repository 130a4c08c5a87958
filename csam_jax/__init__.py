"""csam_jax: C-SAM (Compression-aware Sharpness Minimization) in JAX and Optax.

Sharpness-aware minimization in pruning-mask space as composable Optax
gradient transformations, mask pytrees, the C-SAM objective terms, Monte Carlo
robustness certification and input variations (He & Chen, 2026).
"""

from csam_jax import certify, objectives, variations
from csam_jax._src.apply import apply_masks, sparsity
from csam_jax._src.masks import init_masks, prunable
from csam_jax._src.perturbation import (
  CSAMState,
  csam,
  csam_transform,
  project_unit_interval,
)
from csam_jax._src.structure import (
  RandomDirectionState,
  flip_fraction,
  flip_targeted_radius,
  num_swapped,
  random_direction,
  swap_masks,
  swap_transform,
)
from csam_jax._src.topk import (
  topk_counts,
  topk_masks,
  topk_masks_from_counts,
)

__version__ = "0.1.0"

__all__ = (
  "CSAMState",
  "apply_masks",
  "certify",
  "csam",
  "csam_transform",
  "flip_fraction",
  "flip_targeted_radius",
  "init_masks",
  "num_swapped",
  "objectives",
  "project_unit_interval",
  "prunable",
  "RandomDirectionState",
  "random_direction",
  "sparsity",
  "swap_masks",
  "swap_transform",
  "topk_counts",
  "topk_masks",
  "topk_masks_from_counts",
  "variations",
)
