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

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import experiment, logging_utils, parallel, state

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


def default_cache_dir() -> str:
  """``$XDG_CACHE_HOME/csam_jax/jax_cache`` (``~/.cache`` when unset)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
    os.path.expanduser("~"), ".cache"
  )
  return os.path.join(base, "csam_jax", "jax_cache")


def setup_compilation_cache(directory: str | None) -> str | None:
  """Turns on JAX's persistent compilation cache; call before compiling.

  Every compiled program (even a fast one) is written to ``directory`` and
  read back by later processes instead of being compiled again. JAX keys
  each entry on the program, the jaxlib version, the backend and its
  version, the XLA flags, the compile options and the devices, so another
  JAX version, machine type or flag set never reads a stale entry; the
  loaded executable is the one a fresh compilation would produce (reruns
  are bitwise identical, tests/startup_test.py).

  Args:
    directory: the cache directory (``~`` expanded; created by JAX),
      None for ``default_cache_dir()``, "" to leave the cache off.

  Returns:
    The absolute directory, or None when the cache is off.

  Raises:
    ValueError: ``directory`` is not a string or None.
  """
  if directory is not None and not isinstance(directory, str):
    raise ValueError(
      'config.compilation_cache_dir must be a directory path, "" (off) or '
      f"None (default {default_cache_dir()}), got {directory!r}."
    )
  if directory == "":
    return None
  path = os.path.abspath(os.path.expanduser(directory or default_cache_dir()))
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return path


def setup(argv: list[str], example: str):
  """The set-up every entry point shares; returns the config.

  Checks the command line (``example``: a config to suggest when --config
  is missing), quiets library logs, starts counting compilations, turns on
  the persistent compilation cache, initialises jax.distributed when asked
  and checks ``config.model.init_prng``.
  """
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError(f"--config is required, e.g. --config={example}")
  logging_utils.quiet_library_logs()
  logging_utils.compile_totals()  # Counts every compilation from here.
  cache_dir = _CONFIG.value.get("compilation_cache_dir")
  if _CPU_COLLECTIVES.value is not None:
    # Multi-process CPU runs (gloo/mpi collectives) timed out in
    # tests/parallel_test.py with the cache on: they always compile.
    cache_dir = ""
  cache = setup_compilation_cache(cache_dir)
  logging.info("Persistent compilation cache: %s", cache or "off")
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
