"""Certified accuracy of CC-Cert and binomial certificates at levels eps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from csam_jax._src import validation
from csam_jax._src.certify import inputs
from csam_jax._src.certify.binomial import BinomialCertificate
from csam_jax._src.certify.chernoff_cramer import CCCertResult


def certified_accuracy(
  result: CCCertResult | BinomialCertificate,
  labels: Any,
  eps: float | Sequence[float],
) -> float | list[float]:
  """Fraction of images certified at level ``eps`` (or at each eps).

  One rule for both certificates: an image counts only when its clean
  prediction is the label, and then CC-Cert certifies it iff
  ``bound < eps``, the binomial certificate iff ``lower_bound >= 1 - eps``
  (unreachable below ``eps = 1 - alpha ** (1 / N)``: see
  `BinomialCertificate`).

  Args:
    result: a `CCCertResult` or `BinomialCertificate`.
    labels: (B,) integer labels.
    eps: one level or a sequence of levels, each in (0, 1).

  Returns:
    A float, or a list of floats (one per eps).

  Raises:
    ValueError: for an eps outside (0, 1) or labels of the wrong shape.
    TypeError: for an unknown result type.

  Example:
    >>> import numpy as np
    >>> r = CCCertResult(np.array([0, 1]), np.array([.4, .4]),
    ...                  np.array([0.0, 0.5]), np.array([0, 0]))
    >>> certified_accuracy(r, [0, 1], [1e-2, 0.9])
    [0.5, 1.0]
    >>> b = BinomialCertificate(np.array([0.995, 0.999]), np.array([999, 1000]),
    ...                         1000, pred=np.array([0, 0]))
    >>> certified_accuracy(b, [0, 1], 1e-2)  # image 1 is misclassified
    0.5
  """
  many = not isinstance(eps, int | float | np.floating)
  levels = [
    validation.check_open_unit("eps", e) for e in (eps if many else [eps])
  ]
  if isinstance(result, CCCertResult):
    labels = inputs.check_labels(labels, np.shape(result.pred)[0])
    correct = np.asarray(result.pred) == labels
    bound = np.asarray(result.bound)
    accs = [float(np.mean(correct & (bound < e))) for e in levels]
  elif isinstance(result, BinomialCertificate):
    labels = inputs.check_labels(labels, np.shape(result.lower_bound)[0])
    correct = np.asarray(result.pred) == labels
    lower = np.asarray(result.lower_bound)
    accs = [float(np.mean(correct & (lower >= 1.0 - e))) for e in levels]
  else:
    raise TypeError(
      "result must be a CCCertResult or BinomialCertificate, got "
      f"{type(result).__name__}"
    )
  return accs if many else accs[0]
