"""Robustness certificates from Monte Carlo samples (public API).

CC-Cert (Pautov et al., AAAI 2022), a rigorous Clopper-Pearson binomial
certificate, and Gaussian randomized smoothing (Cohen et al., ICML 2019).

Pass a large model as ``logits_fn = jax.tree_util.Partial(apply_fn,
params)``: its arrays are then traced arguments of the compiled Monte Carlo
program (one compilation for any params), not constants baked into it.
"""

from csam_jax._src.certify import ABSTAIN as ABSTAIN
from csam_jax._src.certify import NOT_DRAWN as NOT_DRAWN
from csam_jax._src.certify import NOT_DRAWN_BOUND as NOT_DRAWN_BOUND
from csam_jax._src.certify import BinomialCertificate as BinomialCertificate
from csam_jax._src.certify import CCCertResult as CCCertResult
from csam_jax._src.certify import SmoothingCertificate as SmoothingCertificate
from csam_jax._src.certify import binomial_certificate as binomial_certificate
from csam_jax._src.certify import cc_bound as cc_bound
from csam_jax._src.certify import cc_cert as cc_cert
from csam_jax._src.certify import certified_accuracy as certified_accuracy
from csam_jax._src.certify import (
  clopper_pearson_lower as clopper_pearson_lower,
)
from csam_jax._src.certify import smoothing_certify as smoothing_certify
from csam_jax._src.certify import smoothing_predict as smoothing_predict

__all__ = (
  "ABSTAIN",
  "NOT_DRAWN",
  "NOT_DRAWN_BOUND",
  "BinomialCertificate",
  "CCCertResult",
  "SmoothingCertificate",
  "binomial_certificate",
  "cc_bound",
  "cc_cert",
  "certified_accuracy",
  "clopper_pearson_lower",
  "smoothing_certify",
  "smoothing_predict",
)
