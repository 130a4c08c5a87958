"""A short quickstart run shared by export_test and certify_model_test.

C-SAM with ``structure="channel"`` on the embedded digits (tiny CNN, 16 px),
with a small certification. Both test modules call ``channel_run``; the
second call finds the finished method in the session's work directory and
reuses it (the harness's resume).
"""

from __future__ import annotations

import os

from experiments import experiment
from experiments.configs import quickstart


def channel_config():
  """The quickstart, shortened: csam only, channel structure, 16 images
  (700 draws each, as the quickstart: enough for nonzero certificates)."""
  config = quickstart.get_config()
  config.methods = ("csam",)
  config.structure = "channel"
  config.sparsity = 0.3
  config.pretrain.num_steps = 150
  config.search.num_steps = 6
  config.finetune.num_steps = 40
  config.logging.tensorboard = False
  config.evaluation.max_examples = 128
  config.evaluation.every_stage = False
  cert = config.certify
  cert.num_images = 16
  cert.distributions = ("semantic", "brightness")
  cert.smoothing.enabled = False
  config.corruptions.enabled = False
  return config


def channel_run(tmp_path_factory) -> str:
  """The work directory of the run (trained once per pytest worker)."""
  workdir = str(tmp_path_factory.getbasetemp() / "export_channel_run")
  if not os.path.exists(os.path.join(workdir, "results.json")):
    experiment.run(channel_config(), workdir)
  return workdir
