r"""Runs an experiment: ``python -m experiments.main --config=CONFIG``.

Examples::

  # The embedded quickstart (sklearn digits, all seven methods, < 3 min CPU).
  python -m experiments.main --config=experiments/configs/quickstart.py

  # The paper setting offline, on the local CIFAR-10 copy.
  python -m experiments.main --config=experiments/configs/cifar10c.py \
    --config.data.source=npz --config.data.path=../shared/data/cifar10_jpeg.npz

  # Two hosts (run on each, with its own --process_id); TPU VMs: --distributed.
  python -m experiments.main --config=... --coordinator_address=10.0.0.1:1234 \
    --num_processes=2 --process_id=0

The work directory defaults to ``./workdir/<config.name>``; see
experiments/experiment.py for its layout. A rerun with the same config
resumes; a different config is refused unless ``--config.overwrite=True``.

Compiled programs are kept in JAX's persistent compilation cache
(``config.compilation_cache_dir``; by default
``$XDG_CACHE_HOME/csam_jax/jax_cache``, else ``~/.cache/csam_jax/jax_cache``;
"" turns it off), so a rerun, a resume or another work directory of the same
config skips compilation.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import entry, experiment
from experiments.training import parallel, state

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Path to a config file (experiments/configs/*.py).",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Output directory; default ./workdir/<config.name>."
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 (multi-process)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", None, "Number of processes (multi-process)."
)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  False,
  "Call jax.distributed.initialize() with auto-detection (TPU VMs, SLURM).",
)
_CPU_COLLECTIVES = flags.DEFINE_enum(
  "cpu_collectives",
  None,
  ["gloo", "mpi"],
  "CPU collectives (multi-process CPU).",
)


def default_workdir(config_name: str) -> str:
  """``./workdir/<config name>``."""
  return os.path.join("workdir", config_name)


def setup(argv: list[str], example: str):
  """The set-up of the entry points that take --config; returns the config.

  Checks the command line (``example``: a config to suggest when --config
  is missing), `prepare_process` with the config's cache directory,
  initialises jax.distributed when asked and checks
  ``config.model.init_prng``.
  """
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError(f"--config is required, e.g. --config={example}")
  cache_dir = _CONFIG.value.get("compilation_cache_dir")
  if _CPU_COLLECTIVES.value is not None:
    # Multi-process CPU runs (gloo/mpi collectives) timed out in
    # tests/parallel_test.py with the cache on: they always compile.
    cache_dir = ""
  entry.prepare_process(cache_dir)
  parallel.initialize_distributed(
    coordinator_address=_COORDINATOR.value,
    num_processes=_NUM_PROCESSES.value,
    process_id=_PROCESS_ID.value,
    auto=_DISTRIBUTED.value,
    cpu_collectives=_CPU_COLLECTIVES.value,
  )
  config = _CONFIG.value
  if config.model.get("init_prng", "threefry") not in state.INIT_PRNGS:
    raise ValueError(
      f"config.model.init_prng must be one of {state.INIT_PRNGS}, got "
      f"{config.model.init_prng!r}."
    )
  return config


def main(argv: list[str]) -> None:
  config = setup(argv, "experiments/configs/quickstart.py")
  workdir = _WORKDIR.value or default_workdir(config.name)
  logging.info("Config %s, work directory %s", config.name, workdir)
  results = experiment.run(config, workdir)
  logging.info("Wrote %s/results.json (%d runs)", workdir, len(results["runs"]))


if __name__ == "__main__":
  app.run(main)
