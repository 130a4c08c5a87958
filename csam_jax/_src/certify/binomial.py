"""Binomial certificate: a Clopper-Pearson bound on P(pred(T(x)) = label).

The bound is computed on the host with ``scipy.stats`` from the integer
counts: JAX has no inverse regularized incomplete beta function
(``jax.scipy.stats.beta`` lacks ``ppf``), and the statistic costs nothing
next to the forward passes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src import validation
from csam_jax._src.certify import inputs, montecarlo

Array = jax.Array
LogitsFn = Callable[[Array], Array]
SampleFn = Callable[[Array, Array], Array]


class BinomialCertificate(NamedTuple):
  """Per-image output of `binomial_certificate`.

  An image is certified at level eps iff its clean prediction is the label
  and ``lower_bound >= 1 - eps`` (`certified_accuracy`), the rule of
  CC-Cert and of the certification stage.

  Attributes:
    lower_bound: (B,) float64, Clopper-Pearson lower bound (level
      ``1 - alpha``) on ``P(pred(T(x)) = label)``.
    num_correct: (B,) int64, transformed samples predicted as the label.
    num_samples: the number of transformed samples per image.
    pred: (B,) int, the prediction on the untransformed image.
  """

  lower_bound: np.ndarray
  num_correct: np.ndarray
  num_samples: int
  pred: np.ndarray


def clopper_pearson_lower(k: Any, n: Any, alpha: float) -> np.ndarray:
  """One-sided Clopper-Pearson lower bound at level ``1 - alpha``.

  ``beta.ppf(alpha, k, n - k + 1)``, and 0 when ``k = 0`` (the lower end of
  ``statsmodels.proportion_confint(k, n, 2 * alpha, method="beta")``).

  Args:
    k: successes (int array-like), ``0 <= k <= n``.
    n: trials (int array-like, broadcastable with k), ``n >= 1``.
    alpha: error level in (0, 1).

  Returns:
    float64 array of lower bounds, the broadcast shape of k and n.

  Raises:
    ValueError: for alpha outside (0, 1) or k, n out of range.

  Example:
    >>> float(clopper_pearson_lower(10, 10, 0.05))  # 0.05 ** (1 / 10)
    0.7411344491069477
  """
  alpha = validation.check_open_unit("alpha", alpha)
  k, n = np.broadcast_arrays(np.asarray(k), np.asarray(n))
  if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
    raise ValueError(f"need n >= 1 and 0 <= k <= n, got k={k}, n={n}")
  safe_k = np.maximum(k, 1)
  import scipy.stats  # Lazy: a 0.9 s import that only the bound needs.

  lower = scipy.stats.beta.ppf(alpha, safe_k, n - safe_k + 1)
  return np.where(k == 0, 0.0, lower).astype(np.float64)


@functools.partial(jax.jit, static_argnames=("num_draws", "batch_size"))
def _count_correct(key, x, labels, logits_fn, sample_fn, num_draws, batch_size):
  """(B,) draws predicted as the label, (B,) clean predictions."""

  def update(count, keys, images, image_index, draw_index):
    del draw_index
    logits = logits_fn(montecarlo.transform(sample_fn, keys, images))
    safe = jnp.minimum(image_index, x.shape[0] - 1)
    hit = (jnp.argmax(logits, axis=-1) == labels[safe]).astype(jnp.int32)
    return count.at[image_index].add(hit, mode="drop")

  init = jnp.zeros((x.shape[0],), jnp.int32)
  count = montecarlo.scan_draws(key, x, num_draws, batch_size, init, update)
  clean = montecarlo.map_images(
    lambda b: jnp.argmax(logits_fn(b), axis=-1), x, batch_size
  )
  return count, clean.astype(jnp.int32)


def binomial_certificate(
  key: Array,
  logits_fn: LogitsFn,
  x: Any,
  labels: Any,
  sample_fn: SampleFn,
  *,
  num_samples: int,
  alpha: float = 1e-3,
  batch_size: int = 1000,
) -> BinomialCertificate:
  """Clopper-Pearson lower bound on ``P(pred(T(x)) = label)`` per image.

  With probability at least ``1 - alpha`` (over the draws) the bound is
  below the true probability, so "certified at eps iff
  ``lower_bound >= 1 - eps``" is a rigorous claim at level ``1 - alpha``.
  Draws, chunking and jit as `cc_cert`.

  Args:
    key: PRNG key.
    logits_fn: ``logits_fn(images) -> logits`` on a batch of images: a
      ``jax.tree_util.Partial(apply_fn, params)`` (params traced, one
      compilation for any params) or a plain hashable callable (compiled
      with what it closes over); see `cc_cert`.
    x: (B, ...) inputs: any batch ``logits_fn`` accepts (images, feature
      vectors).
    labels: (B,) integer labels.
    sample_fn: ``sample_fn(key, input) -> input`` for one input (callable
      or Partial).
    num_samples: transformed samples per image.
    alpha: error level in (0, 1).
    batch_size: transformed images per forward pass.

  Returns:
    A `BinomialCertificate`.

  Raises:
    ValueError: for bad shapes or options.
    TypeError: for a non-integer count or a bad callable.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> def apply_fn(w, b):
    ...   return jnp.stack([-w * b[:, 0, 0, 0], w * b[:, 0, 0, 0]], -1)
    >>> logits_fn = jax.tree_util.Partial(apply_fn, jnp.array(1.0))
    >>> same = lambda key, im: im
    >>> cert = binomial_certificate(jax.random.key(0), logits_fn,
    ...     jnp.ones((1, 2, 2, 1)), [1], same, num_samples=10, alpha=0.05)
    >>> cert.num_correct.tolist(), round(float(cert.lower_bound[0]), 4)
    ([10], 0.7411)
    >>> cert.pred.tolist()
    [1]
  """
  num_samples = validation.check_int("num_samples", num_samples)
  batch_size = validation.check_int("batch_size", batch_size)
  alpha = validation.check_open_unit("alpha", alpha)
  x = inputs.check_images(x)
  labels = inputs.check_labels(labels, x.shape[0])
  count, pred = _count_correct(
    key,
    x,
    jnp.asarray(labels),
    inputs.as_pytree_fn("logits_fn", logits_fn),
    inputs.as_pytree_fn("sample_fn", sample_fn),
    num_samples,
    batch_size,
  )
  count = np.asarray(count, np.int64)
  lower = clopper_pearson_lower(count, num_samples, alpha)
  return BinomialCertificate(lower, count, num_samples, np.asarray(pred))
