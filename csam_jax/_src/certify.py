"""Monte Carlo robustness certificates: CC-Cert, binomial, randomized smoothing.

* CC-Cert (Pautov et al., AAAI 2022): a Chernoff-Cramer bound on the
  probability that the prediction discrepancy ``Z = ||p(x) - p(T(x))||_inf``
  exceeds the half top-2 margin ``a``, split into groups and corrected by the
  Paley-Zygmund factor ``delta`` (METHOD.md, "Certification").
* Binomial: a Clopper-Pearson lower confidence bound on
  ``P(pred(T(x)) = label)``, rigorous at level ``1 - alpha``.
* Randomized smoothing (Cohen et al., ICML 2019): CERTIFY and PREDICT.

Monte Carlo draws. For a batch ``x`` of ``B`` images, image ``i`` gets the
key ``k_i = jax.random.split(key, B)[i]`` and its draw ``j`` the key
``jax.random.fold_in(k_i, j)`` (fold_in rather than a split of ``k_i`` into N
keys, so that no key array of size N is ever built). The ``B * N`` draws are
enumerated image-major and processed ``batch_size`` at a time by a
``lax.scan`` over chunks; inside a chunk the transformation and the model
are ``jax.vmap``-ed / batched. So peak memory is set by ``batch_size`` (plus
one float per draw for the CC-Cert statistic, and the per-class counts for
smoothing), results are deterministic for a key and do not depend on
``batch_size``. Everything runs in one ``jax.jit`` (the callables are
static arguments), so inputs may be ``jax.Array``s sharded across devices.

Clopper-Pearson bounds and the binomial test are computed on the host with
``scipy.stats`` from the integer counts: JAX has no inverse regularized
incomplete beta function (``jax.scipy.stats.beta`` lacks ``ppf``), and these
statistics cost nothing next to the forward passes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

Array = jax.Array
LogitsFn = Callable[[Array], Array]
SampleFn = Callable[[Array, Array], Array]

ABSTAIN = -1


class CCCertResult(NamedTuple):
  """Per-image output of `cc_cert`.

  Attributes:
    pred: (B,) int32, the clean prediction ``argmax f(x)``.
    margin: (B,) float32, half the clean top-2 probability gap
      ``(p_(1) - p_(2)) / 2``.
    bound: (B,) float32, the CC-Cert bound on ``P(Z >= margin)``, in [0, 1].
    num_changed: (B,) int32, transformed samples whose prediction differs
      from ``pred`` (out of ``num_samples * num_bounds``).
  """

  pred: Array
  margin: Array
  bound: Array
  num_changed: Array


class BinomialCertificate(NamedTuple):
  """Per-image output of `binomial_certificate`.

  Attributes:
    lower_bound: (B,) float64, Clopper-Pearson lower bound (level
      ``1 - alpha``) on ``P(pred(T(x)) = label)``.
    num_correct: (B,) int64, transformed samples predicted as the label.
    num_samples: the number of transformed samples per image.
  """

  lower_bound: np.ndarray
  num_correct: np.ndarray
  num_samples: int


class SmoothingCertificate(NamedTuple):
  """Per-image output of `smoothing_certify`.

  Attributes:
    pred: (B,) int64, the smoothed prediction, `ABSTAIN` (-1) to abstain.
    radius: (B,) float64, certified l2 radius (0 where abstaining).
  """

  pred: np.ndarray
  radius: np.ndarray


# ---------------------------------------------------------------- checks --


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, int | np.integer):
    raise TypeError(f"{name} must be an int, got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def _check_open_unit(name: str, value: Any) -> float:
  value = float(value)
  if not 0.0 < value < 1.0:
    raise ValueError(f"{name} must be in (0, 1), got {value}")
  return value


def _check_images(x: Any) -> Array:
  if not isinstance(x, jax.Array):
    x = jnp.asarray(x)
  if x.ndim != 4:
    raise ValueError(f"x must be a batch NHWC (rank 4), got shape {x.shape}")
  if x.shape[0] == 0:
    raise ValueError("x must hold at least one image")
  return x


def _check_labels(labels: Any, num_images: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.shape != (num_images,):
    raise ValueError(
      f"labels must have shape ({num_images},), got {labels.shape}"
    )
  return labels


# --------------------------------------------------------------- CC bound --


def _cc_log_ratios(z: Array, margin: Array, t: Array, num_bounds: int) -> Array:
  """``log R_g(t)`` of every group and t, shape (..., num_bounds, len(t)).

  ``R_g(t) = mean_j exp(t z_j) / exp(t a) = mean_j exp(t (z_j - a))``; the
  second form, in log space via logsumexp, is exact for t up to 1e4 where
  the first overflows.
  """
  lead = z.shape[:-1]
  num = z.shape[-1] // num_bounds
  groups = z.reshape(lead + (num_bounds, num))
  shifted = groups - margin[..., None, None]
  flat = shifted.reshape((-1, num_bounds, num))

  def one_image(s):  # (G, n) -> (G, T); memory n * T per image.
    return jax.nn.logsumexp(s[..., None] * t, axis=-2) - math.log(num)

  out = jax.lax.map(one_image, flat)
  return out.reshape(lead + (num_bounds, t.shape[0]))


def cc_bound(
  z: Any,
  margin: Any,
  *,
  num_bounds: int = 10,
  delta: float = 0.9,
  t_min: float = 1e-4,
  t_max: float = 1e4,
  t_steps: int = 500,
) -> Array:
  """The CC-Cert bound ``min(1, max_g min_t R_g(t) / delta)``.

  With ``t = linspace(t_min, t_max, t_steps)`` and the N samples of ``z``
  split into ``num_bounds`` consecutive groups of ``n = N / num_bounds``,
  ``R_g(t) = (1/n) sum_{j in g} exp(t z_j) / exp(t margin)`` (Pautov et al.
  2022, reference ``estimates/code/bounds.py``), evaluated in log space.

  Args:
    z: (..., N) prediction discrepancies ``||p(x) - p(T_j(x))||_inf``.
    margin: (...) half top-2 margins ``a`` of the clean predictions.
    num_bounds: number of groups; must divide N.
    delta: Paley-Zygmund factor in (0, 1].
    t_min: smallest t of the grid, > 0.
    t_max: largest t of the grid, >= t_min.
    t_steps: number of grid points, >= 1.

  Returns:
    (...) bounds in [0, 1] with the floating dtype of ``z``.

  Raises:
    ValueError: if N is not divisible by ``num_bounds``, shapes disagree,
      or an option is out of range.

  Example:
    >>> import jax.numpy as jnp
    >>> float(cc_bound(jnp.zeros((1, 20)), jnp.array([0.4]), num_bounds=2)[0])
    0.0
  """
  num_bounds = _check_int("num_bounds", num_bounds)
  t_steps = _check_int("t_steps", t_steps)
  if not 0.0 < delta <= 1.0:
    raise ValueError(f"delta must be in (0, 1], got {delta}")
  if not 0.0 < t_min <= t_max:
    raise ValueError(f"need 0 < t_min <= t_max, got {t_min}, {t_max}")
  z = jnp.asarray(z)
  if not jnp.issubdtype(z.dtype, jnp.floating):
    z = z.astype(jnp.float32)
  margin = jnp.asarray(margin, z.dtype)
  if z.ndim < 1 or z.shape[:-1] != margin.shape:
    raise ValueError(
      f"z must have shape margin.shape + (N,), got z {z.shape} and "
      f"margin {margin.shape}"
    )
  if z.shape[-1] == 0 or z.shape[-1] % num_bounds:
    raise ValueError(
      f"N = z.shape[-1] = {z.shape[-1]} must be a positive multiple of "
      f"num_bounds = {num_bounds}"
    )
  return _cc_bound_jit(z, margin, num_bounds, delta, t_min, t_max, t_steps)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _cc_bound_jit(z, margin, num_bounds, delta, t_min, t_max, t_steps):
  t = jnp.linspace(t_min, t_max, t_steps, dtype=z.dtype)
  log_r = _cc_log_ratios(z, margin, t, num_bounds)
  log_bound = jnp.max(jnp.min(log_r, axis=-1), axis=-1) - math.log(delta)
  return jnp.exp(jnp.minimum(log_bound, 0.0))


# ------------------------------------------------------ Monte Carlo engine --


def _map_images(fn: Callable, x: Array, batch_size: int) -> Any:
  """``fn`` on ``x`` in chunks of ``batch_size`` images (padded, scanned)."""
  num = x.shape[0]
  size = min(batch_size, num)
  chunks = -(-num // size)
  padded = jnp.concatenate(
    [x, jnp.zeros((chunks * size - num,) + x.shape[1:], x.dtype)]
  )
  out = jax.lax.map(fn, padded.reshape((chunks, size) + x.shape[1:]))
  return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[:num], out)


def _scan_draws(
  key: Array,
  x: Array,
  num_draws: int,
  batch_size: int,
  carry: Any,
  update: Callable,
) -> Any:
  """Scans ``update`` over the ``B * num_draws`` draws, ``batch_size`` each.

  ``update(carry, keys, images, image_index, draw_index)`` gets, per chunk,
  the draw keys, the images to transform and their indices; padding draws
  of the last chunk have ``image_index == B`` so that scatters with
  ``mode="drop"`` ignore them.
  """
  num_images = x.shape[0]
  total = num_images * num_draws
  size = min(batch_size, total)
  image_keys = jax.random.split(key, num_images)

  def body(carry, chunk):
    flat = chunk * size + jnp.arange(size)
    valid = flat < total
    flat = jnp.minimum(flat, total - 1)
    image_index, draw_index = flat // num_draws, flat % num_draws
    keys = jax.vmap(jax.random.fold_in)(image_keys[image_index], draw_index)
    image_index_or_drop = jnp.where(valid, image_index, num_images)
    carry = update(carry, keys, x[image_index], image_index_or_drop, draw_index)
    return carry, None

  carry, _ = jax.lax.scan(body, carry, jnp.arange(-(-total // size)))
  return carry


def _probs(logits_fn: LogitsFn, images: Array) -> Array:
  return jax.nn.softmax(jnp.asarray(logits_fn(images), jnp.float32), axis=-1)


@functools.partial(
  jax.jit,
  static_argnames=("logits_fn", "sample_fn", "num_draws", "batch_size"),
)
def _cc_draws(key, x, logits_fn, sample_fn, num_draws, batch_size):
  probs0 = _map_images(lambda b: _probs(logits_fn, b), x, batch_size)
  pred = jnp.argmax(probs0, axis=-1)
  top2 = jax.lax.top_k(probs0, 2)[0]
  margin = (top2[:, 0] - top2[:, 1]) / 2.0

  def update(carry, keys, images, image_index, draw_index):
    z, changed = carry
    probs = _probs(logits_fn, jax.vmap(sample_fn)(keys, images))
    safe = jnp.minimum(image_index, x.shape[0] - 1)
    dist = jnp.max(jnp.abs(probs - probs0[safe]), axis=-1)
    flip = (jnp.argmax(probs, axis=-1) != pred[safe]).astype(jnp.int32)
    z = z.at[image_index, draw_index].set(dist, mode="drop")
    changed = changed.at[image_index].add(flip, mode="drop")
    return z, changed

  init = (
    jnp.zeros((x.shape[0], num_draws), jnp.float32),
    jnp.zeros((x.shape[0],), jnp.int32),
  )
  z, changed = _scan_draws(key, x, num_draws, batch_size, init, update)
  return pred.astype(jnp.int32), margin, z, changed


def cc_cert(
  key: Array,
  logits_fn: LogitsFn,
  x: Any,
  sample_fn: SampleFn,
  *,
  num_samples: int = 100,
  num_bounds: int = 10,
  delta: float = 0.9,
  batch_size: int = 1000,
) -> CCCertResult:
  """CC-Cert (Pautov et al. 2022) for every image of a batch.

  Draws ``N = num_samples * num_bounds`` transformed copies of each image
  (see the module docstring for the keys and chunking), computes
  ``Z_j = ||p(x) - p(T_j(x))||_inf`` with ``p = softmax(logits_fn(.))`` and
  returns `cc_bound` of the groups. The image is certified at level eps iff
  ``pred == label`` and ``bound < eps`` (`certified_accuracy`).

  Args:
    key: PRNG key.
    logits_fn: ``logits_fn(images) -> logits`` on a batch (NHWC) of images;
      must be hashable (a function, not a fresh lambda per call, to reuse
      the compiled program).
    x: (B, H, W, C) images (float, [0, 1] for the variations).
    sample_fn: ``sample_fn(key, image) -> image``, one random
      transformation of one HWC image (e.g. `csam_jax.variations.compose`).
    num_samples: samples per group (CC-Cert ``nsamples``).
    num_bounds: number of groups (CC-Cert ``nbounds``).
    delta: Paley-Zygmund factor in (0, 1].
    batch_size: transformed images per forward pass.

  Returns:
    A `CCCertResult` of per-image arrays.

  Raises:
    ValueError: for a bad shape or option.
    TypeError: for a non-integer count.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> logits_fn = lambda b: jnp.stack([b.mean((1, 2, 3)) * 0, b[:, 0, 0, 0]
    ...                                  * 0 + 3.0], -1)
    >>> shift = lambda key, im: jnp.clip(im + jax.random.normal(key), 0, 1)
    >>> res = cc_cert(jax.random.key(0), logits_fn, jnp.ones((2, 4, 4, 1)),
    ...               shift, num_samples=10, num_bounds=2, batch_size=8)
    >>> res.pred.tolist(), res.num_changed.tolist()
    ([1, 1], [0, 0])
  """
  num_samples = _check_int("num_samples", num_samples)
  num_bounds = _check_int("num_bounds", num_bounds)
  batch_size = _check_int("batch_size", batch_size)
  if not 0.0 < delta <= 1.0:
    raise ValueError(f"delta must be in (0, 1], got {delta}")
  x = _check_images(x)
  pred, margin, z, changed = _cc_draws(
    key, x, logits_fn, sample_fn, num_samples * num_bounds, batch_size
  )
  bound = cc_bound(z, margin, num_bounds=num_bounds, delta=delta)
  return CCCertResult(pred, margin, bound, changed)


def certified_accuracy(
  result: CCCertResult | BinomialCertificate,
  labels: Any,
  eps: float | Sequence[float],
) -> float | list[float]:
  """Fraction of images certified at level ``eps`` (or at each eps).

  CC-Cert: certified iff ``pred == label`` and ``bound < eps``. Binomial:
  certified iff ``lower_bound >= 1 - eps`` (the bound already refers to the
  label).

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
  """
  many = not isinstance(eps, int | float | np.floating)
  levels = [_check_open_unit("eps", e) for e in (eps if many else [eps])]
  if isinstance(result, CCCertResult):
    labels = _check_labels(labels, np.shape(result.pred)[0])
    correct = np.asarray(result.pred) == labels
    bound = np.asarray(result.bound)
    accs = [float(np.mean(correct & (bound < e))) for e in levels]
  elif isinstance(result, BinomialCertificate):
    _check_labels(labels, np.shape(result.lower_bound)[0])
    lower = np.asarray(result.lower_bound)
    accs = [float(np.mean(lower >= 1.0 - e)) for e in levels]
  else:
    raise TypeError(
      "result must be a CCCertResult or BinomialCertificate, got "
      f"{type(result).__name__}"
    )
  return accs if many else accs[0]


# ------------------------------------------------------ binomial bounds --


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
  alpha = _check_open_unit("alpha", alpha)
  k, n = np.broadcast_arrays(np.asarray(k), np.asarray(n))
  if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
    raise ValueError(f"need n >= 1 and 0 <= k <= n, got k={k}, n={n}")
  safe_k = np.maximum(k, 1)
  lower = scipy.stats.beta.ppf(alpha, safe_k, n - safe_k + 1)
  return np.where(k == 0, 0.0, lower).astype(np.float64)


@functools.partial(
  jax.jit,
  static_argnames=("logits_fn", "sample_fn", "num_draws", "batch_size"),
)
def _count_correct(key, x, labels, logits_fn, sample_fn, num_draws, batch_size):
  def update(count, keys, images, image_index, draw_index):
    del draw_index
    logits = logits_fn(jax.vmap(sample_fn)(keys, images))
    safe = jnp.minimum(image_index, x.shape[0] - 1)
    hit = (jnp.argmax(logits, axis=-1) == labels[safe]).astype(jnp.int32)
    return count.at[image_index].add(hit, mode="drop")

  init = jnp.zeros((x.shape[0],), jnp.int32)
  return _scan_draws(key, x, num_draws, batch_size, init, update)


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

  Args:
    key: PRNG key.
    logits_fn: ``logits_fn(images) -> logits`` on a batch of images.
    x: (B, H, W, C) images.
    labels: (B,) integer labels.
    sample_fn: ``sample_fn(key, image) -> image``.
    num_samples: transformed samples per image.
    alpha: error level in (0, 1).
    batch_size: transformed images per forward pass.

  Returns:
    A `BinomialCertificate`.

  Raises:
    ValueError / TypeError: for bad shapes or options.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> logits_fn = lambda b: jnp.stack([-b[:, 0, 0, 0], b[:, 0, 0, 0]], -1)
    >>> same = lambda key, im: im
    >>> cert = binomial_certificate(jax.random.key(0), logits_fn,
    ...     jnp.ones((1, 2, 2, 1)), [1], same, num_samples=10, alpha=0.05)
    >>> cert.num_correct.tolist(), round(float(cert.lower_bound[0]), 4)
    ([10], 0.7411)
  """
  num_samples = _check_int("num_samples", num_samples)
  batch_size = _check_int("batch_size", batch_size)
  alpha = _check_open_unit("alpha", alpha)
  x = _check_images(x)
  labels = _check_labels(labels, x.shape[0])
  count = _count_correct(
    key,
    x,
    jnp.asarray(labels),
    logits_fn,
    sample_fn,
    num_samples,
    batch_size,
  )
  count = np.asarray(count, np.int64)
  lower = clopper_pearson_lower(count, num_samples, alpha)
  return BinomialCertificate(lower, count, num_samples)


# ------------------------------------------------- randomized smoothing --


def _check_sigma(sigma: Any) -> float:
  sigma = float(sigma)
  if not (math.isfinite(sigma) and sigma > 0):
    raise ValueError(f"sigma must be a finite float > 0, got {sigma}")
  return sigma


@functools.partial(
  jax.jit,
  static_argnames=("logits_fn", "num_draws", "batch_size", "num_classes"),
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
  return _scan_draws(key, x, num_draws, batch_size, init, update)


def _class_counts(key, logits_fn, x, sigma, num_draws, batch_size):
  out = jax.eval_shape(
    logits_fn, jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype)
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
    logits_fn: ``logits_fn(images) -> logits`` on a batch of images.
    x: (B, H, W, C) images.
    sigma: noise standard deviation, > 0.
    n0: selection samples per image.
    n: estimation samples per image.
    alpha: error level in (0, 1).
    batch_size: noisy images per forward pass.

  Returns:
    A `SmoothingCertificate` ``(pred, radius)``; ``pred == ABSTAIN`` (-1)
    where abstaining.

  Raises:
    ValueError / TypeError: for bad shapes or options.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> logits_fn = lambda b: jnp.stack([-b[:, 0, 0, 0], b[:, 0, 0, 0]], -1)
    >>> pred, radius = smoothing_certify(jax.random.key(0), logits_fn,
    ...     jnp.full((1, 1, 1, 1), 10.0), sigma=1.0, n0=10, n=100,
    ...     alpha=0.01, batch_size=64)
    >>> pred.tolist(), round(float(radius[0]), 4)  # sigma * Phi^-1(.01**.01)
    ([1], 1.6953)
  """
  sigma = _check_sigma(sigma)
  n0, n = _check_int("n0", n0), _check_int("n", n)
  batch_size = _check_int("batch_size", batch_size)
  alpha = _check_open_unit("alpha", alpha)
  x = _check_images(x)
  select_key, estimate_key = jax.random.split(key)
  counts0 = _class_counts(select_key, logits_fn, x, sigma, n0, batch_size)
  top = np.argmax(counts0, axis=-1)
  counts = _class_counts(estimate_key, logits_fn, x, sigma, n, batch_size)
  votes = np.take_along_axis(counts, top[:, None], axis=-1)[:, 0]
  p_lower = clopper_pearson_lower(votes, n, alpha)
  abstain = p_lower < 0.5
  pred = np.where(abstain, ABSTAIN, top).astype(np.int64)
  radius = np.where(abstain, 0.0, sigma * scipy.stats.norm.ppf(p_lower))
  return SmoothingCertificate(pred, radius.astype(np.float64))


def _binomial_test_pvalue(n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
  """Two-sided binomial test of ``n_a`` of ``n_a + n_b`` against p = 1/2.

  Vectorised closed form for ``n_a >= n_b`` (``scipy.stats.binomtest`` takes
  one count at a time): by symmetry the two tails are equal.
  """
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
    logits_fn: ``logits_fn(images) -> logits`` on a batch of images.
    x: (B, H, W, C) images.
    sigma: noise standard deviation, > 0.
    n: noisy samples per image.
    alpha: error level in (0, 1).
    batch_size: noisy images per forward pass.

  Returns:
    (B,) int64 predictions, `ABSTAIN` (-1) where abstaining.

  Raises:
    ValueError / TypeError: for bad shapes or options.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> logits_fn = lambda b: jnp.stack([-b[:, 0, 0, 0], b[:, 0, 0, 0]], -1)
    >>> smoothing_predict(jax.random.key(0), logits_fn,
    ...     jnp.array([10.0, 0.0]).reshape(2, 1, 1, 1), sigma=1.0, n=100,
    ...     alpha=0.01, batch_size=64).tolist()
    [1, -1]
  """
  sigma = _check_sigma(sigma)
  n = _check_int("n", n)
  batch_size = _check_int("batch_size", batch_size)
  alpha = _check_open_unit("alpha", alpha)
  x = _check_images(x)
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
