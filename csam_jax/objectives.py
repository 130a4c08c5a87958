"""C-SAM objective terms: Z, d, the certification hinge, mask consistency."""

from csam_jax._src.objectives import (
  certification_hinge,
  mask_consistency,
  prediction_discrepancy,
  top2_margin,
)

__all__ = (
  "certification_hinge",
  "mask_consistency",
  "prediction_discrepancy",
  "top2_margin",
)
