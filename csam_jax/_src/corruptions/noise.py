"""Noise corruptions: Gaussian, shot (Poisson), impulse (s&p), speckle.

Each corruption ``fn(key, image, p)`` corrupts one HWC float image in
[0, 1] with the parameters ``p`` of one severity (a dict of possibly traced
scalars, see registry.py) and returns an image in [0, 1].
"""

import jax
import jax.numpy as jnp
from jax.scipy import special

# Correction steps of `poisson_inverse` beyond which the loop stops. The
# Cornish-Fisher start is within 5 of the answer for float32 uniforms in
# (0, 1) and rates up to 1e4 (within 2 for rates >= 4; checked against
# scipy.stats.poisson.ppf on a grid), so the bound is never reached; it
# only keeps the loop finite.
_MAX_STEPS = 64


def gaussian_noise(key: jax.Array, image: jax.Array, p) -> jax.Array:
  """``clip(x + N(0, sigma^2))`` per pixel and channel."""
  noise = jax.random.normal(key, image.shape, image.dtype)
  return jnp.clip(image + p["sigma"] * noise, 0.0, 1.0)


def _poisson_start(lam: jax.Array, u: jax.Array) -> jax.Array:
  """Cornish-Fisher guess of the Poisson(lam) quantile at level ``u``.

  ``lam + sqrt(lam) z + (z^2 - 1) / 6 + (z^3 - 7 z) / (72 sqrt(lam))`` with
  ``z = Phi^-1(u)`` (the last term only for lam >= 2, where it helps), plus
  1/2 and floored (continuity correction), clipped to >= 0; 0 at u = 0.
  """
  z = jnp.clip(special.ndtri(u), -6.0, 6.0)
  root = jnp.sqrt(lam)
  third = jnp.where(
    lam >= 2.0, (z**3 - 7.0 * z) / (72.0 * jnp.maximum(root, 1.0)), 0.0
  )
  guess = lam + root * z + (z * z - 1.0) / 6.0 + third
  return jnp.where(u > 0, jnp.maximum(jnp.floor(guess + 0.5), 0.0), 0.0)


def poisson_inverse(lam: jax.Array, u: jax.Array) -> jax.Array:
  """The Poisson(lam) quantile ``min{k >= 0 : F(k) >= u}``, elementwise.

  Inversion of the Poisson CDF ``F(k) = P(X <= k) = Q(k + 1, lam)`` (the
  regularised upper incomplete gamma function), so with ``U ~ Uniform(0,
  1)`` the count is Poisson(lam) distributed, up to the float32 evaluation
  of F. The search starts at a Cornish-Fisher guess (`_poisson_start`),
  evaluates F there once (``jax.scipy.special.gammaincc``) and steps by one,
  updating F with the pmf, until ``F(k - 1) < u <= F(k)`` for every element
  (at most 5 steps, 2 for lam >= 4). One uniform per value, no rejection
  loop; ``jax.random.poisson`` evaluates, under ``vmap``, both Knuth's
  product of uniforms (lam < 10) and transformed rejection, and draws
  dozens of uniforms per value.

  Accuracy (measured against ``scipy.special.gammaincc`` for lam in
  [1e-4, 500], all k up to lam + 8 sqrt(lam)): the float32 F is within
  ``4.2e-7 * max(lam, 1)`` of the exact CDF, so the sampled CDF is within
  that of Poisson(lam)'s: exact to float32 rounding (1.5e-6) for small lam,
  within 2.1e-4 at lam = 500, where counts differ from exact inversion by
  at most one for u within that distance of a CDF value (0.3% of the draws
  at lam = 500). One count is at most 0.51 uint8 levels for CIFAR-10-C's
  shot-noise scales c >= 50 (x * 255 / c), so within the uint8 quantisation.
  With float32 uniforms (``jax.random.uniform``: multiples of 2^-23) the
  upper tail beyond ``1 - 2^-23`` is not drawn.

  Args:
    lam: float32 rates >= 0.
    u: float32 uniforms in [0, 1) of the same shape.

  Returns:
    float32 counts (integer values) of the shape of ``lam``.

  Example:
    >>> import jax.numpy as jnp
    >>> poisson_inverse(jnp.array([0.0, 1.0, 1.0]),
    ...                 jnp.array([0.9, 0.36, 0.37])).tolist()  # e^-1 = .3679
    [0.0, 0.0, 1.0]
  """
  lam = jnp.asarray(lam, jnp.float32)
  u = jnp.asarray(u, jnp.float32)
  k = _poisson_start(lam, u)
  pmf = jnp.exp(special.xlogy(k, lam) - lam - special.gammaln(k + 1.0))
  cdf = special.gammaincc(k + 1.0, lam)

  def moves(state):
    k, pmf, cdf = state
    up = u > cdf
    down = (k > 0) & (u <= cdf - pmf)
    return up, down

  def cond(carry):
    step, state = carry
    up, down = moves(state)
    return (step < _MAX_STEPS) & jnp.any(up | down)

  def body(carry):
    step, (k, pmf, cdf) = carry
    up, down = moves((k, pmf, cdf))
    pmf_up = pmf * lam / (k + 1.0)
    pmf_down = jnp.where(lam > 0, pmf * k / jnp.maximum(lam, 1e-30), 0.0)
    new_k = jnp.where(up, k + 1.0, jnp.where(down, k - 1.0, k))
    new_cdf = jnp.where(up, cdf + pmf_up, jnp.where(down, cdf - pmf, cdf))
    new_pmf = jnp.where(up, pmf_up, jnp.where(down, pmf_down, pmf))
    return step + 1, (new_k, new_pmf, new_cdf)

  _, (k, _, _) = jax.lax.while_loop(cond, body, (0, (k, pmf, cdf)))
  return k


def shot_noise(key: jax.Array, image: jax.Array, p) -> jax.Array:
  """``clip(Poisson(x * scale) / scale)`` per pixel and channel.

  As CIFAR-10-C's ``np.random.poisson(x * c) / c``; the counts are drawn by
  inversion of the Poisson CDF (`poisson_inverse`: one uniform per value;
  CDF within ``4.2e-7 * max(lam, 1)`` of Poisson's), not with
  ``jax.random.poisson``, which is several times slower under ``vmap`` on
  CPU. So draws for a given key differ from those of jax.random.poisson.
  """
  u = jax.random.uniform(key, image.shape, jnp.float32)
  counts = poisson_inverse(image.astype(jnp.float32) * p["scale"], u)
  return jnp.clip(counts.astype(image.dtype) / p["scale"], 0.0, 1.0)


def impulse_noise(key: jax.Array, image: jax.Array, p) -> jax.Array:
  """Salt and pepper as ``skimage.util.random_noise(mode="s&p")``.

  Each pixel and channel independently flips with probability ``amount``;
  a flipped value becomes 1 or 0 with probability 1/2 each.
  """
  flip_key, salt_key = jax.random.split(key)
  flipped = jax.random.uniform(flip_key, image.shape) < p["amount"]
  salted = jax.random.bernoulli(salt_key, 0.5, image.shape)
  return jnp.where(flipped, salted.astype(image.dtype), image)


def speckle_noise(key: jax.Array, image: jax.Array, p) -> jax.Array:
  """``clip(x + x * N(0, sigma^2))`` per pixel and channel."""
  noise = jax.random.normal(key, image.shape, image.dtype)
  return jnp.clip(image + image * p["sigma"] * noise, 0.0, 1.0)
