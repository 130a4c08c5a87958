"""Provenance of a result: the code version and the library versions.

A study's records are committed and aggregated long after they were made,
possibly while the code changes: each record says which code made it
(`code_version`: the git commit of the repository and whether its tracked
files differed from it) and with which libraries (`library_versions`).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess

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


def provenance() -> dict[str, dict]:
  """``{"code": code_version(), "libraries": library_versions()}``."""
  return {"code": code_version(), "libraries": library_versions()}
