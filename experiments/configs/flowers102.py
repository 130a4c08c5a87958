"""Flowers-102: ResNet-18 (ImageNet stem) at 128 px, sparsity 0.9.

TFDS oxford_flowers102 trains on train+validation (2,040 images; the
official train split is smaller than test) and evaluates on test (6,149).
"""

from __future__ import annotations

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the Flowers-102 config."""
  config = default.get_config()
  config.name = "flowers102"
  config.model.name = "resnet18"
  config.model.stem = "imagenet"
  config.data.update(
    dict(
      source="tfds",
      name="oxford_flowers102",
      image_size=128,
      channels=3,
      train_split="",  # the pipeline's default: train+validation
      eval_split="",  # test
      augment="imagenet",
      num_classes=102,
      shuffle_buffer=2_040,
    )
  )
  config.batch_size = 64
  config.sparsity = 0.9
  # Small training set: more epochs for the same number of steps.
  config.pretrain.epochs = 200.0
  config.search.epochs = 40.0
  config.finetune.epochs = 40.0
  config.pretrain.optimizer.learning_rate = 0.05
  config.checkpoint.every_steps = 1000
  config.evaluation.batch_size = 200
  config.certify.batch_size = 200
  config.corruptions.enabled = False
  return config
