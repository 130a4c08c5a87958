"""Provenance of a result: the code version and the library versions.

A study's records are committed and aggregated long after they were made,
possibly while the code changes: each record says which code made it
(`code_version`: the git commit of the repository and whether its tracked
files differed from it), with which libraries (`library_versions`) and on
which machine (`machine`: XLA's CPU code depends on the instruction-set
extensions, so the same code and seed can train a different model on
another CPU).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess

import jax

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str, cwd: str) -> str | None:
  try:
    out = subprocess.run(
      ("git", *args), cwd=cwd, capture_output=True, text=True, timeout=30
    )
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout if out.returncode == 0 else None


def code_version(root: str = _ROOT) -> dict[str, str | bool | None]:
  """``{"commit": sha or None, "dirty": bool or None}`` of the repository.

  ``dirty`` is True when tracked files outside ``results/`` differ from
  the commit. Untracked files are ignored (work directories live beside
  the code), and so is ``results/``: a study rewrites its own tracked
  reports there as it runs, and a snapshot's results may be edited (a
  record removed to run again) without changing the code that runs.
  Both are None outside a git checkout (e.g. an installed package).

  Example:
    >>> import tempfile
    >>> code_version(tempfile.mkdtemp())
    {'commit': None, 'dirty': None}
  """
  commit = _git("rev-parse", "HEAD", cwd=root)
  if commit is None or not commit.strip():
    return {"commit": None, "dirty": None}
  status = _git(
    "status",
    "--porcelain",
    "--untracked-files=no",
    "--",
    ".",
    ":!results",
    cwd=root,
  )
  return {
    "commit": commit.strip(),
    "dirty": None if status is None else bool(status.strip()),
  }


def library_versions() -> dict[str, str | None]:
  """Installed versions of the libraries that compute the numbers.

  Example:
    >>> sorted(library_versions()) == sorted(LIBRARIES)
    True
  """
  out = {}
  for name in LIBRARIES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


def _cpuinfo(cpuinfo: str) -> dict[str, str | None]:
  r"""The CPU model and a digest of its feature flags from the text of
  ``/proc/cpuinfo`` (Linux; None where a field is missing).

  Example:
    >>> out = _cpuinfo("model name : AMD EPYC\nflags : sse avx2 fma\n")
    >>> out["cpu"], out["cpu_flags_sha256"] == hashlib.sha256(
    ...   b"avx2 fma sse").hexdigest()[:16]
    ('AMD EPYC', True)
  """
  fields = {}
  for line in cpuinfo.splitlines():
    key, sep, value = line.partition(":")
    if sep:
      fields.setdefault(key.strip(), value.strip())
  flags = fields.get("flags")
  return {
    "cpu": fields.get("model name"),
    "cpu_flags_sha256": None
    if flags is None
    else hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[
      :16
    ],
  }


def machine() -> dict[str, str | int | None]:
  """The machine the numbers were computed on: CPU model and a digest of
  its feature flags, architecture, JAX backend, device kind and count.

  Example:
    >>> sorted(machine())
    ['backend', 'cpu', 'cpu_flags_sha256', 'device_count', 'device_kind', 'machine']
  """  # noqa: E501 - a doctest output line.
  try:
    with open("/proc/cpuinfo") as f:
      cpu = _cpuinfo(f.read())
  except OSError:
    cpu = {"cpu": platform.processor() or None, "cpu_flags_sha256": None}
  return dict(
    cpu,
    machine=platform.machine(),
    backend=jax.default_backend(),
    device_kind=jax.devices()[0].device_kind,
    device_count=jax.device_count(),
  )


def provenance() -> dict[str, dict]:
  """``{"code": code_version(), "libraries": library_versions(),
  "machine": machine()}``."""
  return {
    "code": code_version(),
    "libraries": library_versions(),
    "machine": machine(),
  }
