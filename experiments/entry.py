"""What every entry point does first (main, study, launch, plan, export,
certify_model): quiet library logs, count compilations, turn on JAX's
persistent compilation cache. Flag-free, so that every entry point can
import it beside its own flags."""

from __future__ import annotations

import os

import jax
from absl import logging

from experiments.training import logging_utils


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


def prepare_process(cache_dir: str | None = None) -> None:
  """What every entry point (main, study, launch, plan, export,
  certify_model) does first: quiet library logs, count compilations from
  here, turn on the persistent compilation cache (``cache_dir`` as
  `setup_compilation_cache` takes it)."""
  logging_utils.quiet_library_logs()
  logging_utils.compile_totals()  # Counts every compilation from here.
  cache = setup_compilation_cache(cache_dir)
  logging.info("Persistent compilation cache: %s", cache or "off")
