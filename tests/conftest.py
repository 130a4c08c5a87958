"""Shared test fixtures: the main job (or another module) in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Faster CPU compiles than XLA's defaults, for the tests' subprocesses and
# for the test processes themselves (compilation is most of the suite's
# time): backend optimisation level 1 (level 0 miscompiles the C-SAM step
# to NaN on this XLA version) and LLVM without its expensive passes. Every
# comparison a test makes is between programs compiled with the same flags,
# or against hand-computed values within a stated tolerance.
XLA_FLAGS = (
  "--xla_backend_optimization_level=1 --xla_llvm_disable_expensive_passes=true"
)
if "jax" in sys.modules:  # the flags are read when XLA's backend starts
  raise RuntimeError("tests/conftest.py must be imported before jax")
_INHERITED = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = f"{_INHERITED} {XLA_FLAGS}".strip()


@pytest.fixture(scope="session")
def run_main():
  """Runs ``python -m experiments.main`` in a subprocess on the CPU.

  The subprocess starts in the repository root with ``JAX_PLATFORMS=cpu`` and
  ``XLA_FLAGS`` set from ``xla_flags`` and ``devices``.

  Returns a function ``run(*args, module="experiments.main", program=None,
  xla_flags=XLA_FLAGS, devices=None, background=False, timeout=400)``:

  - ``args``: the command-line arguments;
  - ``module``: the module run with ``-m``; ``program``, when given, is run
    with ``-c`` instead (e.g. main inside ``tfds.testing.mock_data``);
  - ``xla_flags``: the XLA flags; ``None`` keeps the inherited ``XLA_FLAGS``
    (unless ``devices`` is given);
  - ``devices``: adds ``--xla_force_host_platform_device_count=devices``;
  - ``background``: start and return at once;
  - ``timeout``: seconds before the run is killed (foreground runs only).

  ``run`` returns the ``subprocess.CompletedProcess`` of the finished run,
  its ``stdout`` and ``stderr`` captured as text; with ``background=True``
  the running ``subprocess.Popen``, stderr merged into its ``stdout`` pipe
  (text), for the caller to ``communicate`` with, kill or run beside
  another. Background processes still running at the end of the session are
  killed.
  """
  started = []

  def run(
    *args,
    module: str = "experiments.main",
    program: str | None = None,
    xla_flags: str | None = XLA_FLAGS,
    devices: int | None = None,
    background: bool = False,
    timeout: float = 400,
  ):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    if devices is not None:
      force = f"--xla_force_host_platform_device_count={devices}"
      xla_flags = f"{xla_flags} {force}" if xla_flags else force
    if xla_flags is not None:
      env["XLA_FLAGS"] = xla_flags
    if program is not None:
      command = [sys.executable, "-c", program, *args]
    else:
      command = [sys.executable, "-m", module, *args]
    if background:
      proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
      started.append(proc)
      return proc
    return subprocess.run(
      command,
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
    )

  yield run
  for proc in started:
    if proc.poll() is None:
      proc.kill()
      proc.communicate()
