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
# Temme's expansion serves k + 1 >= _TEMME_MIN; below, F(k) is a pmf sum.
_TEMME_MIN = 10
# Taylor coefficients in eta of Temme's c0, c1, c2 (DLMF 8.12; DiDonato and
# Morris 1986), used for |eta| < 0.3 where the closed forms cancel.
_C0 = (
  -1 / 3,
  1 / 12,
  -2 / 135,
  1 / 864,
  1 / 2835,
  -139 / 777600,
  1 / 25515,
  -571 / 261273600,
)
_C1 = (
  -1.8518518518518519e-03,
  -3.4722222222222222e-03,
  2.6455026455026455e-03,
  -9.9022633744855967e-04,
  2.0576131687242798e-04,
)
_C2 = (4.1335978835978836e-03, -2.6813271604938272e-03, 7.7160493827160494e-04)


def _polyval(coeffs, x):
  """``sum_i coeffs[i] x^i`` (Horner)."""
  out = jnp.zeros_like(x)
  for c in reversed(coeffs):
    out = out * x + c
  return out


def _temme(a: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(Q(a, x), x^(a-1) e^-x / Gamma(a))`` for a >= 10, float32-accurate.

  Temme's uniform expansion (DLMF 8.12.3-8.12.10): with ``lam = x / a`` and
  ``eta = sign(lam - 1) sqrt(2 (lam - 1 - log lam))``, ``Q(a, x) =
  erfc(eta sqrt(a / 2)) / 2 + exp(-a eta^2 / 2) / sqrt(2 pi a) (c0 + c1 / a
  + c2 / a^2)``; truncation error below 1e-7 for a >= 10. The second value
  is the Poisson pmf ``P(X = a - 1)`` for rate x, from the same
  ``exp(-a eta^2 / 2)`` and Stirling's series, without the cancellation of
  ``exp((a - 1) log x - x - lgamma(a))`` in float32.
  """
  d = x / a - 1.0
  series = d * d * _polyval((0.5, -1 / 3, 0.25, -0.2, 1 / 6, -1 / 7, 0.125), d)
  half_eta2 = jnp.where(jnp.abs(d) < 0.1, series, d - jnp.log1p(d))
  eta = jnp.sign(d) * jnp.sqrt(2.0 * half_eta2)
  near = jnp.abs(eta) < 0.3
  sd, se = jnp.where(near, 1.0, d), jnp.where(near, 1.0, eta)
  c0 = jnp.where(near, _polyval(_C0, eta), 1.0 / sd - 1.0 / se)
  c1 = jnp.where(
    near,
    _polyval(_C1, eta),
    1.0 / se**3 - 1.0 / sd**3 - 1.0 / sd**2 - 1.0 / (12.0 * sd),
  )
  c2 = _polyval(_C2, eta)
  gauss = jnp.exp(-a * half_eta2)
  q = 0.5 * special.erfc(eta * jnp.sqrt(a / 2.0)) + gauss / jnp.sqrt(
    2.0 * jnp.pi * a
  ) * (c0 + c1 / a + c2 / (a * a))
  # Gamma(a) = sqrt(2 pi / a) (a / e)^a gamma_star(a), Stirling's series.
  gamma_star = _polyval(
    (1.0, 1 / 12, 1 / 288, -139 / 51840, -571 / 2488320), 1 / a
  )
  pmf = gauss * jnp.sqrt(a / (2.0 * jnp.pi)) / (gamma_star * x)
  return q, pmf


def _small_cdf(k: jax.Array, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(P(X <= k), P(X = k))`` by summing the pmf, for k < _TEMME_MIN - 1."""
  pmf_j = jnp.exp(-lam)
  cdf, pmf = jnp.zeros_like(lam), jnp.zeros_like(lam)
  for j in range(_TEMME_MIN - 1):
    if j:
      pmf_j = pmf_j * lam / j
    cdf = cdf + jnp.where(j <= k, pmf_j, 0.0)
    pmf = jnp.where(j == k, pmf_j, pmf)
  return cdf, pmf


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
  1)`` the count is Poisson(lam) distributed for every ``lam >= 0``,
  including lam near 0, up to float32 rounding. The search starts at a
  Cornish-Fisher guess (`_poisson_start`), evaluates F and the pmf there
  once, by Temme's uniform asymptotic expansion for ``k >= 9`` (`_temme`:
  truncation error < 1e-7) and by summing the pmf from 0 below, then steps
  by one, updating F with the pmf recurrence, until ``F(k - 1) < u <=
  F(k)`` for every element (at most 5 steps, 2 for lam >= 4). One uniform
  per value, no rejection loop: ``jax.random.poisson`` evaluates, under
  ``vmap``, both Knuth's product of uniforms (lam < 10) and transformed
  rejection, drawing dozens of uniforms per value, and
  ``jax.scipy.special.gammaincc`` is slow (iterative) and loses ~4e-7 * lam
  to float32 cancellation.

  Accuracy, measured against ``scipy.stats.poisson.ppf`` for 60 rates in
  [1e-3, 600] and 1e5 float32 uniforms each: the counts are the exact
  quantiles except where u lies within 3.5e-7 of a CDF value (at most 4e-5
  of the draws, then off by one). With float32 uniforms
  (``jax.random.uniform``: multiples of 2^-23) the upper tail beyond
  ``1 - 2^-23`` is not drawn.

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
  large = k + 1.0 >= _TEMME_MIN
  q, pmf_large = _temme(
    jnp.where(large, k + 1.0, 20.0), jnp.where(large, lam, 20.0)
  )
  cdf_small, pmf_small = _small_cdf(k, lam)
  cdf = jnp.where(large, q, cdf_small)
  pmf = jnp.where(large, pmf_large, pmf_small)

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
  inversion of the Poisson CDF (`poisson_inverse`: one uniform per value,
  exact to float32 rounding), not with ``jax.random.poisson``, which is
  about 10x slower on CPU (benchmarks/corruptions.py). So draws for a given
  key differ from those of jax.random.poisson.
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
