"""A tiny study to try the job contract on (a couple of minutes on a CPU).

  python -m experiments.study --config=experiments/configs/study_smoke.py
  python -m experiments.study --config=experiments/configs/study_smoke.py \
    --list
  python -m experiments.study --config=experiments/configs/study_smoke.py \
    --shard=0/2 &   # and --shard=1/2 in another shell or on another worker

The quickstart's data (the embedded digits at 8 px) and tiny CNN, two
variants (HYDRA and C-SAM) on two seeds at sparsity 0.5: two pretraining
jobs and four cells, with a few dozen steps per stage, certification on
16 images (the semantic distribution, 4 x 8 draws) and the structural
flatness diagnostic at one fraction. Checkpoints every 5 steps, so a
worker stopped by SIGTERM mid-stage has one to resume from.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import quickstart


def get_config() -> ml_collections.ConfigDict:
  """Returns the smoke study's config."""
  config = quickstart.get_config()
  config.name = "study_smoke"
  config.data.image_size = 8
  config.batch_size = 32
  config.pretrain.num_steps = 30
  config.search.num_steps = 20
  config.finetune.num_steps = 10
  config.checkpoint.every_steps = 5
  config.logging.log_every_steps = 5
  config.logging.tensorboard = False
  config.evaluation.batch_size = 128
  config.evaluation.max_examples = 128
  config.certify.update(
    dict(num_images=16, num_samples=8, num_bounds=4, batch_size=64)
  )
  config.certify.distributions = ("semantic",)
  config.certify.smoothing.enabled = False
  config.corruptions.enabled = False
  config.flatness.enabled = True
  config.flatness.fractions = (0.05,)
  config.flatness.num_draws = 2
  config.flatness.certify_fractions = ()
  config.study = ml_collections.ConfigDict(
    dict(
      name="study_smoke",
      variants=("csam", "hydra"),
      sparsity=0.5,
      extra_sparsities=(),
      extra_variants=(),
      seeds=(0, 1),
      image_seed=0,
      main_variant="csam",
      main_distribution="semantic",
      pairs=(),
      sweep_dir=None,
    )
  )
  return config
