"""Monte Carlo robustness certificates: CC-Cert, binomial, randomized smoothing.

* `chernoff_cramer`: `cc_cert` (Pautov et al., AAAI 2022), a
  Chernoff-Cramer bound on ``P(||p(x) - p(T(x))||_inf >= margin)``.
* `binomial`: a Clopper-Pearson lower confidence bound on
  ``P(pred(T(x)) = label)``, rigorous at level ``1 - alpha``.
* `smoothing` (Cohen et al., ICML 2019): CERTIFY and PREDICT.
* `montecarlo`: the chunked, vmapped draws they share (keys, memory,
  determinism); `inputs`: checks of the image batch and labels, and callables
  as pytrees; `accuracy`: certified accuracy at levels eps.

Each certifier runs its draws in one ``jax.jit`` program. ``logits_fn``
(and ``sample_fn``) may be a ``jax.tree_util.Partial``, whose arrays (model
parameters) are traced arguments of that program, or a plain callable,
compiled as a static argument.
"""

from csam_jax._src.certify.accuracy import (
  certified_accuracy as certified_accuracy,
)
from csam_jax._src.certify.binomial import (
  BinomialCertificate as BinomialCertificate,
)
from csam_jax._src.certify.binomial import (
  binomial_certificate as binomial_certificate,
)
from csam_jax._src.certify.binomial import (
  clopper_pearson_lower as clopper_pearson_lower,
)
from csam_jax._src.certify.chernoff_cramer import NOT_DRAWN as NOT_DRAWN
from csam_jax._src.certify.chernoff_cramer import (
  NOT_DRAWN_BOUND as NOT_DRAWN_BOUND,
)
from csam_jax._src.certify.chernoff_cramer import CCCertResult as CCCertResult
from csam_jax._src.certify.chernoff_cramer import cc_bound as cc_bound
from csam_jax._src.certify.chernoff_cramer import cc_cert as cc_cert
from csam_jax._src.certify.smoothing import ABSTAIN as ABSTAIN
from csam_jax._src.certify.smoothing import (
  SmoothingCertificate as SmoothingCertificate,
)
from csam_jax._src.certify.smoothing import (
  smoothing_certify as smoothing_certify,
)
from csam_jax._src.certify.smoothing import (
  smoothing_predict as smoothing_predict,
)
