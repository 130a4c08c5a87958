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
      channels=1,
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
  cert = config.certify
  cert.num_images = 100
  cert.num_samples = 20
  cert.num_bounds = 5
  cert.batch_size = 500
  cert.smoothing.num_images = 50
  cert.smoothing.n0 = 20
  cert.smoothing.n = 200
  # TODO(harness): small corruption-evaluation counts once
  # corruptions_config.py exists.
