"""The ``config.certify`` section: certification of each trained model.

Consumed by `experiments.robustness.certification.certify`. Defaults are the
full counts of the CC-Cert protocol: N = num_samples * num_bounds = 1,000 draws
per image, delta = 0.9, eps in {1e-10, ..., 1e-2}, the CC-Cert suggested
semantic ranges, certified composed and one family at a time (as the CC-Cert
reference does), with the reference's contrast convention; a rigorous
Clopper-Pearson certificate on the same draws; Gaussian randomized smoothing
(Cohen et al. 2019) for reference.
"""

from __future__ import annotations

import ml_collections

from csam_jax import variations as csam_variations
from experiments.robustness import certification, samplers

EPS = tuple(10.0**-k for k in range(10, 1, -1))  # 1e-10, ..., 1e-2


def get_certify_config() -> ml_collections.ConfigDict:
  """Returns the default certification section.

  Fields:
    enabled: run the certification stage.
    num_images: test images certified: a seeded random subset of the
      evaluation split, the same for every method.
    batch_size: transformed images per forward pass (bounds memory).
    num_samples, num_bounds, delta: CC-Cert (N = num_samples * num_bounds).
    skip_misclassified: draw nothing for the images whose clean prediction
      is wrong (no certificate certifies them): the same accuracies and
      per-image records, bit for bit, for ``clean_accuracy`` of the Monte
      Carlo work; ``mean_changed_fraction`` is then over the images drawn
      for. False draws for every image, as runs before this field did.
    eps: certification levels reported.
    distributions: the distributions (experiments/robustness/samplers.py) to
      certify under, from `experiments.robustness.certification.DISTRIBUTIONS`:
      "semantic" (every family of ``variations.ranges`` composed in each draw),
      a family name (that family alone at its ``variations.ranges`` range,
      the CC-Cert range when absent there) or "corruptions" (CIFAR-10-C).
      Default: "semantic" and the six families alone.
    variations: the samplers' parameters
      (`experiments.robustness.samplers.get_config`, the section C-SAM's
      training variations have too): ``ranges`` (the CC-Cert suggested ranges by
      default), ``border_mode``, ``cval``, ``contrast_center`` ("zero": ``x *
      c``, kornia's ``adjust_contrast`` that the CC-Cert reference calls; the
      default), ``corruption_names`` and ``corruption_severities``.
    binomial: ``enabled`` and ``alpha`` of the Clopper-Pearson certificate
      computed from the same draws.
    smoothing: ``enabled``, ``sigma`` (pixel units of [0, 1] images),
      ``n0``, ``n``, ``alpha``, ``radii`` reported, ``num_images``.
    per_image: also record, per distribution, which images each
      certificate certifies at each eps (0/1 strings, image order of the
      certified subset), for paired comparisons between models.
    seed_offsets: fold_in offsets of the per-purpose keys (one per
      distribution and for smoothing, all different).

  Example:
    >>> get_certify_config().num_samples * get_certify_config().num_bounds
    1000
  """
  return ml_collections.ConfigDict(
    dict(
      enabled=True,
      num_images=500,
      batch_size=1000,
      num_samples=100,
      num_bounds=10,
      delta=0.9,
      skip_misclassified=True,
      eps=EPS,
      distributions=("semantic", *certification.FAMILIES),
      variations=samplers.get_config(),
      binomial=dict(enabled=True, alpha=1e-3),
      per_image=False,
      smoothing=dict(
        enabled=True,
        sigma=0.25,
        n0=100,
        n=10_000,
        alpha=1e-3,
        radii=(0.0, 0.25, 0.5, 0.75),
        num_images=100,
      ),
      seed_offsets=dict(
        semantic=0,
        corruptions=1,
        smoothing=2,
        # Each family's own, fixed in csam_jax.variations.REGISTRY.
        **csam_variations.SEED_OFFSETS,
      ),
    )
  )
