"""Gaussian randomized smoothing (Cohen et al., ICML 2019): CERTIFY, PREDICT.

Noisy copies are drawn and classified with the chunked Monte Carlo engine
(`montecarlo`); the Clopper-Pearson bound and the binomial test run on the
host with ``scipy.stats`` from the vote counts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src import validation
from csam_jax._src.certify import inputs, montecarlo
from csam_jax._src.certify.binomial import clopper_pearson_lower

Array = jax.Array
LogitsFn = Callable[[Array], Array]

ABSTAIN = -1


class SmoothingCertificate(NamedTuple):
  """Per-image output of `smoothing_certify`.

  Attributes:
    pred: (B,) int64, the smoothed prediction, `ABSTAIN` (-1) to abstain.
    radius: (B,) float64, certified l2 radius (0 where abstaining).
  """

  pred: np.ndarray
  radius: np.ndarray


@functools.partial(
  jax.jit, static_argnames=("num_draws", "batch_size", "num_classes")
)
def _noise_counts(key, x, sigma, logits_fn, num_draws, batch_size, num_classes):
  """(B, num_classes) counts of argmax f(x + sigma * N(0, I)) over draws."""

  def noisy(key, image):
    return image + sigma * jax.random.normal(key, image.shape, image.dtype)

  def update(counts, keys, images, image_index, draw_index):
    del draw_index
    cls = jnp.argmax(logits_fn(jax.vmap(noisy)(keys, images)), axis=-1)
    return counts.at[image_index, cls].add(1, mode="drop")

  init = jnp.zeros((x.shape[0], num_classes), jnp.int32)
  return montecarlo.scan_draws(key, x, num_draws, batch_size, init, update)


def _call(fn: LogitsFn, images: Array) -> Array:
  return fn(images)


def _class_counts(key, logits_fn, x, sigma, num_draws, batch_size):
  logits_fn = inputs.as_pytree_fn("logits_fn", logits_fn)
  # The Partial as an argument of a fixed function: traced once per
  # function and shapes, not once per Partial object.
  out = jax.eval_shape(
    _call, logits_fn, jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype)
  )
  if len(out.shape) != 2:
    raise ValueError(f"logits_fn must return (batch, classes), got {out.shape}")
  counts = _noise_counts(
    key, x, sigma, logits_fn, num_draws, batch_size, out.shape[-1]
  )
  return np.asarray(counts, np.int64)


def smoothing_certify(
  key: Array,
  logits_fn: LogitsFn,
  x: Any,
  *,
  sigma: float,
  n0: int = 100,
  n: int = 10_000,
  alpha: float = 1e-3,
  batch_size: int = 1000,
) -> SmoothingCertificate:
  """CERTIFY of Cohen et al. (2019) for the Gaussian-smoothed classifier.

  ``n0`` noisy samples select the top class ``c``; ``n`` fresh samples give
  ``k`` votes for it; ``pA = clopper_pearson_lower(k, n, alpha)``; abstain if
  ``pA < 0.5``, else the certified l2 radius is ``sigma * Phi^-1(pA)``.
  Noise is added to the input of ``logits_fn`` without clipping.

  Args:
    key: PRNG key (split into the selection and the estimation key).
    logits_fn: ``logits_fn(images) -> logits`` on a batch of images: a
      ``jax.tree_util.Partial(apply_fn, params)`` (params traced, one
      compilation for any params) or a plain hashable callable (compiled
      with what it closes over); see `cc_cert`.
    x: (B, ...) inputs: any batch ``logits_fn`` accepts (images, feature
      vectors); the noise has the shape of one input.
    sigma: noise standard deviation, > 0.
    n0: selection samples per image.
    n: estimation samples per image.
    alpha: error level in (0, 1).
    batch_size: noisy images per forward pass.

  Returns:
    A `SmoothingCertificate` ``(pred, radius)``; ``pred == ABSTAIN`` (-1)
    where abstaining.

  Raises:
    ValueError: for bad shapes or options.
    TypeError: for a non-integer count or a bad ``logits_fn``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> def apply_fn(w, b):
    ...   return jnp.stack([-w * b[:, 0, 0, 0], w * b[:, 0, 0, 0]], -1)
    >>> logits_fn = jax.tree_util.Partial(apply_fn, jnp.array(1.0))
    >>> pred, radius = smoothing_certify(jax.random.key(0), logits_fn,
    ...     jnp.full((1, 1, 1, 1), 10.0), sigma=1.0, n0=10, n=100,
    ...     alpha=0.01, batch_size=64)
    >>> pred.tolist(), round(float(radius[0]), 4)  # sigma * Phi^-1(.01**.01)
    ([1], 1.6953)
  """
  sigma = validation.check_in_range(
    "sigma", sigma, 0, math.inf, low_open=True, high_open=True
  )
  n0, n = validation.check_int("n0", n0), validation.check_int("n", n)
  batch_size = validation.check_int("batch_size", batch_size)
  alpha = validation.check_open_unit("alpha", alpha)
  x = inputs.check_images(x)
  select_key, estimate_key = jax.random.split(key)
  counts0 = _class_counts(select_key, logits_fn, x, sigma, n0, batch_size)
  top = np.argmax(counts0, axis=-1)
  counts = _class_counts(estimate_key, logits_fn, x, sigma, n, batch_size)
  votes = np.take_along_axis(counts, top[:, None], axis=-1)[:, 0]
  p_lower = clopper_pearson_lower(votes, n, alpha)
  abstain = p_lower < 0.5
  pred = np.where(abstain, ABSTAIN, top).astype(np.int64)
  import scipy.stats  # Lazy: a 0.9 s import that only the bound needs.

  radius = np.where(abstain, 0.0, sigma * scipy.stats.norm.ppf(p_lower))
  return SmoothingCertificate(pred, radius.astype(np.float64))


def _binomial_test_pvalue(n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
  """Two-sided binomial test of ``n_a`` of ``n_a + n_b`` against p = 1/2.

  Vectorised closed form for ``n_a >= n_b`` (``scipy.stats.binomtest`` takes
  one count at a time): by symmetry the two tails are equal.
  """
  import scipy.stats  # Lazy, as above.

  return np.minimum(1.0, 2.0 * scipy.stats.binom.cdf(n_b, n_a + n_b, 0.5))


def smoothing_predict(
  key: Array,
  logits_fn: LogitsFn,
  x: Any,
  *,
  sigma: float,
  n: int,
  alpha: float,
  batch_size: int = 1000,
) -> np.ndarray:
  """PREDICT of Cohen et al. (2019): top class or abstain.

  With ``nA >= nB`` the votes of the two most voted classes (ties broken by
  the lower class index), abstain unless the two-sided binomial test of
  ``nA`` out of ``nA + nB`` against p = 1/2 has p-value <= alpha. For
  p = 1/2 that p-value is ``min(1, 2 * binom.cdf(nB, nA + nB, 1/2))``,
  which equals ``scipy.stats.binomtest(nA, nA + nB).pvalue``.

  Args:
    key: PRNG key.
    logits_fn: ``logits_fn(images) -> logits`` on a batch of images: a
      ``jax.tree_util.Partial(apply_fn, params)`` or a plain hashable
      callable; see `cc_cert`.
    x: (B, ...) inputs: any batch ``logits_fn`` accepts (images, feature
      vectors); the noise has the shape of one input.
    sigma: noise standard deviation, > 0.
    n: noisy samples per image.
    alpha: error level in (0, 1).
    batch_size: noisy images per forward pass.

  Returns:
    (B,) int64 predictions, `ABSTAIN` (-1) where abstaining.

  Raises:
    ValueError: for bad shapes or options.
    TypeError: for a non-integer count or a bad ``logits_fn``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> def apply_fn(w, b):
    ...   return jnp.stack([-w * b[:, 0, 0, 0], w * b[:, 0, 0, 0]], -1)
    >>> logits_fn = jax.tree_util.Partial(apply_fn, jnp.array(1.0))
    >>> smoothing_predict(jax.random.key(0), logits_fn,
    ...     jnp.array([10.0, 0.0]).reshape(2, 1, 1, 1), sigma=1.0, n=100,
    ...     alpha=0.01, batch_size=64).tolist()
    [1, -1]
  """
  sigma = validation.check_in_range(
    "sigma", sigma, 0, math.inf, low_open=True, high_open=True
  )
  n = validation.check_int("n", n)
  batch_size = validation.check_int("batch_size", batch_size)
  alpha = validation.check_open_unit("alpha", alpha)
  x = inputs.check_images(x)
  counts = _class_counts(key, logits_fn, x, sigma, n, batch_size)
  order = np.argsort(-counts, axis=-1, kind="stable")
  top = order[:, 0]
  n_a = np.take_along_axis(counts, order[:, :1], axis=-1)[:, 0]
  if counts.shape[-1] > 1:
    n_b = np.take_along_axis(counts, order[:, 1:2], axis=-1)[:, 0]
  else:
    n_b = np.zeros_like(n_a)
  p_value = _binomial_test_pvalue(n_a, n_b)
  return np.where(p_value > alpha, ABSTAIN, top).astype(np.int64)
