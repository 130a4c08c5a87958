"""Quickstart: all seven methods on the embedded sklearn digits, < 3 min CPU.

  python -m experiments.main --config=experiments/configs/quickstart.py

Real data that ships with scikit-learn (1,797 8x8 digits resized to 16 px,
80/20 stratified split), the tiny CNN, sparsity 0.8; small certification
and corruption sample counts.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the quickstart config."""
  config = default.get_config()
  config.name = "quickstart"
  config.model.name = "tiny_cnn"
  config.data.update(
    dict(
      source="sklearn_digits",
      name="",
      image_size=16,
      channels=3,  # gray digits as RGB, for the CIFAR-10-C corruptions
      train_split="",
      eval_split="",
      augment="none",
      num_classes=10,
    )
  )
  config.batch_size = 64
  config.sparsity = 0.8
  config.pretrain.epochs = 6.0
  config.search.epochs = 3.0
  config.finetune.epochs = 3.0
  config.pretrain.optimizer.learning_rate = 0.05
  config.gmp.update_every = 5
  config.checkpoint.every_steps = 50
  config.logging.log_every_steps = 20
  config.evaluation.batch_size = 256
  _small_robustness(config)
  return config


def _small_robustness(config: ml_collections.ConfigDict) -> None:
  """Small sample counts so certification fits the quickstart budget."""
  # Photometric variations only: 10-degree rotations and 10% shifts of
  # 16-pixel digits change the class evidence itself. Training (C-SAM
  # hinge) and certification use the same distribution.
  ranges = dict(brightness=0.1, contrast=1.2, gamma=0.8)
  config.search.csam.variations.ranges = ranges
  cert = config.certify
  cert.variations.ranges = ranges
  cert.num_images = 64
  # 700 draws: the least for which the Clopper-Pearson bound (alpha 1e-3)
  # of an all-correct image exceeds 1 - eps = 0.99.
  cert.num_samples = 70
  cert.num_bounds = 10
  cert.batch_size = 500
  cert.smoothing.num_images = 32
  cert.smoothing.n0 = 20
  cert.smoothing.n = 200
  corr = config.corruptions
  corr.num_images = 64
  corr.severities = [3]  # each (corruption, severity) compiles once
  corr.batch_size = 64
  corr.tfds = False
