"""CC-Cert (Pautov et al., AAAI 2022): the Chernoff-Cramer certificate.

A Chernoff-Cramer bound on the probability that the prediction discrepancy
``Z = ||p(x) - p(T(x))||_inf`` exceeds the half top-2 margin ``a``, split
into groups and corrected by the Paley-Zygmund factor ``delta`` (the
certificate as we implement it: docs/method.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from csam_jax._src import validation
from csam_jax._src.certify import inputs, montecarlo

Array = jax.Array
# The bound and flip count of an image `cc_cert` draws nothing for (its clean
# prediction is not its label): a bound that no eps in (0, 1) certifies.
NOT_DRAWN_BOUND = 1.0
NOT_DRAWN = -1
LogitsFn = Callable[[Array], Array]
SampleFn = Callable[[Array, Array], Array]


class CCCertResult(NamedTuple):
  """Per-image output of `cc_cert`.

  Attributes:
    pred: (B,) int32, the clean prediction ``argmax f(x)``.
    margin: (B,) float32, half the clean top-2 probability gap
      ``(p_(1) - p_(2)) / 2``.
    bound: (B,) float32, the CC-Cert bound on ``P(Z >= margin)``, in [0, 1];
      `NOT_DRAWN_BOUND` (1.0, the trivial bound, never certified) for an
      image `cc_cert` drew nothing for.
    num_changed: (B,) int32, transformed samples whose prediction differs
      from ``pred`` (out of ``num_samples * num_bounds``); `NOT_DRAWN`
      (-1) for an image `cc_cert` drew nothing for.
  """

  pred: Array
  margin: Array
  bound: Array
  num_changed: Array


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
    TypeError: for a non-integer ``num_bounds`` or ``t_steps``.

  Example:
    >>> import jax.numpy as jnp
    >>> float(cc_bound(jnp.zeros((1, 20)), jnp.array([0.4]), num_bounds=2)[0])
    0.0
  """
  num_bounds = validation.check_int("num_bounds", num_bounds)
  t_steps = validation.check_int("t_steps", t_steps)
  delta = validation.check_in_range("delta", delta, 0, 1, low_open=True)
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


@functools.partial(jax.jit, static_argnames=("num_draws", "batch_size"))
def _cc_draws(key, x, logits_fn, sample_fn, num_draws, batch_size, labels=None):
  """Clean pred / margin, discrepancies z (B, num_draws) and flip counts.

  ``logits_fn`` and ``sample_fn`` are `jax.tree_util.Partial` pytrees
  (`inputs.as_pytree_fn`): their arrays are traced arguments. With
  ``labels``, only the images whose clean prediction is the label get draws
  (`montecarlo.scan_draws` ``select``); the others keep z = 0 and flip
  count 0.
  """
  probs0 = montecarlo.map_images(
    lambda b: montecarlo.probs(logits_fn, b), x, batch_size
  )
  pred = jnp.argmax(probs0, axis=-1)
  top2 = jax.lax.top_k(probs0, 2)[0]
  margin = (top2[:, 0] - top2[:, 1]) / 2.0

  def update(carry, keys, images, image_index, draw_index):
    z, changed = carry
    images = montecarlo.transform(sample_fn, keys, images)
    probs = montecarlo.probs(logits_fn, images)
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
  select = None if labels is None else pred == labels
  z, changed = montecarlo.scan_draws(
    key, x, num_draws, batch_size, init, update, select=select
  )
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
  labels: Any = None,
) -> CCCertResult:
  """CC-Cert (Pautov et al. 2022) for every image of a batch.

  Draws ``N = num_samples * num_bounds`` transformed copies of each image
  (keys and chunking: `csam_jax._src.certify.montecarlo`), computes
  ``Z_j = ||p(x) - p(T_j(x))||_inf`` with ``p = softmax(logits_fn(.))`` and
  returns `cc_bound` of the groups. The image is certified at level eps iff
  ``pred == label`` and ``bound < eps`` (`certified_accuracy`). The draws
  run in one ``jax.jit`` program, so ``x`` may be sharded across devices.

  With ``labels``, an image whose clean prediction is not its label, which
  no eps certifies, gets no draws: its ``bound`` is `NOT_DRAWN_BOUND` (1.0)
  and its ``num_changed`` `NOT_DRAWN` (-1); ``pred`` and ``margin`` are
  computed for every image. The other images get exactly the draws, bounds
  and flip counts of the call without ``labels`` (same keys, same chunk
  size), so `certified_accuracy` and which images are certified do not
  change, and the draws cost ``num_drawn / B`` of theirs.

  Args:
    key: PRNG key.
    logits_fn: ``logits_fn(inputs) -> logits`` on a batch of inputs.
      Either ``jax.tree_util.Partial(apply_fn, params)``: the params are
      traced arguments of the compiled program (fast to compile, no copy
      of the weights in the program, one compilation for any params of the
      same structure), the way to pass a large model; or a plain hashable
      callable, compiled into the program with whatever it closes over
      (one compilation per callable: reuse the same function object).
    x: (B, ...) inputs: any batch ``logits_fn`` accepts, e.g. (B, H, W, C)
      images (float, [0, 1] for the variations) or (B, D) feature vectors.
    sample_fn: ``sample_fn(key, input) -> input``, one random
      transformation of one input (e.g. `csam_jax.variations.compose` on
      an HWC image); a plain callable or a Partial, as ``logits_fn``. A
      batched sampler (a ``sample_batch(keys, inputs)`` method, e.g.
      `csam_jax.variations.corruption_sampler`) transforms each chunk of
      draws at once (`csam_jax._src.certify.montecarlo.transform`).
    num_samples: samples per group (CC-Cert ``nsamples``).
    num_bounds: number of groups (CC-Cert ``nbounds``).
    delta: Paley-Zygmund factor in (0, 1].
    batch_size: transformed images per forward pass.
    labels: optional (B,) integer labels: draw only for the images whose
      clean prediction is the label.

  Returns:
    A `CCCertResult` of per-image arrays.

  Raises:
    ValueError: for a bad shape or option.
    TypeError: for a non-integer count, or a ``logits_fn`` / ``sample_fn``
      that is not a callable or a Partial of arrays.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> def apply_fn(weights, images):  # a linear model on mean colours
    ...   return images.mean((1, 2)) @ weights
    >>> logits_fn = jax.tree_util.Partial(apply_fn, jnp.array([[-1.0, 1.0]]))
    >>> shift = lambda key, im: jnp.clip(im + 0.1 * jax.random.normal(key),
    ...                                  0, 1)
    >>> res = cc_cert(jax.random.key(0), logits_fn, jnp.ones((2, 4, 4, 1)),
    ...               shift, num_samples=10, num_bounds=2, batch_size=8)
    >>> res.pred.tolist(), res.num_changed.tolist()
    ([1, 1], [0, 0])
    >>> res = cc_cert(jax.random.key(0), logits_fn, jnp.ones((2, 4, 4, 1)),
    ...               shift, num_samples=10, num_bounds=2, batch_size=8,
    ...               labels=[1, 0])  # image 1 is misclassified: no draws
    >>> res.num_changed.tolist(), float(res.bound[1])
    ([0, -1], 1.0)
  """
  num_samples = validation.check_int("num_samples", num_samples)
  num_bounds = validation.check_int("num_bounds", num_bounds)
  batch_size = validation.check_int("batch_size", batch_size)
  delta = validation.check_in_range("delta", delta, 0, 1, low_open=True)
  x = inputs.check_images(x)
  if labels is not None:
    labels = jnp.asarray(inputs.check_labels(labels, x.shape[0]))
  pred, margin, z, changed = _cc_draws(
    key,
    x,
    inputs.as_pytree_fn("logits_fn", logits_fn),
    inputs.as_pytree_fn("sample_fn", sample_fn),
    num_samples * num_bounds,
    batch_size,
    labels,
  )
  bound = cc_bound(z, margin, num_bounds=num_bounds, delta=delta)
  if labels is not None:
    drawn = pred == labels
    bound = jnp.where(drawn, bound, jnp.asarray(NOT_DRAWN_BOUND, bound.dtype))
    changed = jnp.where(drawn, changed, NOT_DRAWN)
  return CCCertResult(pred, margin, bound, changed)
