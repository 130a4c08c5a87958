"""The ``config.corruptions`` section: CIFAR-10-C corrupted-data evaluation.

Every method's final model is evaluated on ``num_images`` test images (a
seeded random subset of the evaluation split, the same for every method and
for both sources) under each corruption x severity
(experiments/robustness/corruption_eval.py).
"""

import ml_collections

from csam_jax.variations import CORRUPTIONS


def get_corruptions_config() -> ml_collections.ConfigDict:
  """Returns the corruption-evaluation section with its defaults.

  Fields:
    enabled: run the evaluation after each method.
    names: corruptions to evaluate (``csam_jax.variations.CORRUPTIONS`` and
      optionally ``EXTRA_CORRUPTIONS``).
    severities: severities in 1..5.
    num_images: test images evaluated per (corruption, severity).
    batch_size: images per forward pass (and per corruption call).
    tfds: read TFDS ``cifar10_corrupted/<name>_<severity>`` instead of
      generating the corruptions, when every needed config is prepared
      under ``data_dir``; otherwise (or when False) generate them with
      ``csam_jax.variations.corrupt``. The result records the source.
    data_dir: TFDS data directory (None: the TFDS default).
  """
  return ml_collections.ConfigDict(
    dict(
      enabled=True,
      names=tuple(CORRUPTIONS),
      severities=(1, 2, 3, 4, 5),
      num_images=1000,
      batch_size=250,
      tfds=True,
      data_dir=ml_collections.FieldReference(None, field_type=str),
    )
  )
