"""Smoke config for tests: tiny CNN on sklearn digits at 8 px, one step per
stage, no TensorBoard, robustness evaluation off."""

from __future__ import annotations

import ml_collections

from experiments.configs import quickstart


def get_config() -> ml_collections.ConfigDict:
  """Returns the smoke-test config."""
  config = quickstart.get_config()
  config.name = "smoke"
  config.data.image_size = 8
  config.batch_size = 16
  config.evaluation.batch_size = 128
  config.evaluation.max_examples = 128
  for section in ("pretrain", "search", "finetune"):
    config[section].num_steps = 1
  config.gmp.update_every = 1
  config.checkpoint.every_steps = 1
  config.logging.log_every_steps = 1
  config.logging.tensorboard = False
  config.certify.enabled = False
  config.corruptions.enabled = False
  return config
