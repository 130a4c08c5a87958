"""The real data some tests read from ``../shared/data`` (never copied).

The files are present on the development machines and in CI, so a missing
file fails the test that needs it: a silent skip would hide that the test
did not run. Set ``CSAM_ALLOW_MISSING_DATA=1`` to skip those tests instead
(e.g. on a machine without the shared data).
"""

import os

import pytest

CIFAR10_NPZ = os.path.normpath(
  os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10_jpeg.npz"
  )
)
ALLOW_MISSING = "CSAM_ALLOW_MISSING_DATA"


def require(path: str) -> str:
  """``path`` if it exists; else fails (skips with CSAM_ALLOW_MISSING_DATA=1).

  Example:
    >>> require(__file__) == __file__
    True
  """
  if os.path.exists(path):
    return path
  message = (
    f"{path} is missing: this test needs the shared real data (set "
    f"{ALLOW_MISSING}=1 to skip such tests where it is absent)"
  )
  if os.environ.get(ALLOW_MISSING) == "1":
    pytest.skip(message)
  pytest.fail(message)


def cifar10_npz() -> str:
  """Path of the shared CIFAR-10 npz (see `require`)."""
  return require(CIFAR10_NPZ)
