"""A short quickstart run shared by export_test and certify_model_test.

C-SAM with ``structure="channel"`` on the embedded digits (tiny CNN, 16 px),
with a small certification. Both test modules call ``channel_run``; the
first to call it trains the run, once per test session (pytest-xdist
workers included); the others find it finished and reuse it.
"""

from __future__ import annotations

import fcntl
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


def _session_dir(tmp_path_factory):
  """The directory every pytest process of this session shares: under
  pytest-xdist each worker's base temp directory is a child of it."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def channel_run(tmp_path_factory) -> str:
  """The work directory of the run, trained once per test session: the
  first process to take the lock trains it, any other waits and reuses it.
  """
  root = _session_dir(tmp_path_factory)
  workdir = str(root / "export_channel_run")
  with open(root / "export_channel_run.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not os.path.exists(os.path.join(workdir, "results.json")):
      experiment.run(channel_config(), workdir)
  return workdir
