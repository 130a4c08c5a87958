"""The paper setting for CIFAR-10-C: ResNet-18, sparsity 0.9, all methods.

Train on CIFAR-10, evaluate clean accuracy, CIFAR-10-C corruption accuracy
(15 corruptions x 5 severities) and certified accuracy.

  python -m experiments.main --config=experiments/configs/cifar10c.py

Offline, on the local copy of CIFAR-10 (JPEG bytes in an npz):

  python -m experiments.main --config=experiments/configs/cifar10c.py \
    --config.data.source=npz --config.data.path=../shared/data/cifar10_jpeg.npz
"""

from __future__ import annotations

import ml_collections

from experiments.configs import default
from experiments.robustness import certification


def get_config() -> ml_collections.ConfigDict:
  """Returns the CIFAR-10-C config (the defaults are this setting)."""
  config = default.get_config()
  config.name = "cifar10c"
  config.model.name = "resnet18"
  config.model.stem = "cifar"
  config.data.update(
    dict(
      source="tfds",
      name="cifar10",
      image_size=32,
      channels=3,
      train_split="train",
      eval_split="test",
      augment="cifar",
      num_classes=10,
    )
  )
  config.sparsity = 0.9
  config.batch_size = 128
  config.pretrain.epochs = 100.0
  config.search.epochs = 20.0
  config.finetune.epochs = 20.0
  config.checkpoint.every_steps = 2000
  config.corruptions.enabled = True
  # Certify under the CC-Cert semantic transformations (composed, and each
  # of the six families alone, as the CC-Cert reference reports them) and,
  # alongside, under the CIFAR-10-C corruptions (15 names x 5 severities
  # drawn uniformly, csam_jax.variations.corruption_sampler).
  config.certify.distributions = (
    "semantic",
    *certification.FAMILIES,
    "corruptions",
  )
  return config
