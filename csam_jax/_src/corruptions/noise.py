"""Noise corruptions: Gaussian, shot (Poisson), impulse (s&p), speckle.

Each function corrupts one HWC float image in [0, 1] with the severity
parameters of the CIFAR-10-C script (``make_cifar_c.py``) and returns an
image in [0, 1].
"""

import jax
import jax.numpy as jnp


def gaussian_noise(key: jax.Array, image: jax.Array, sigma: float):
  """``clip(x + N(0, sigma^2))`` per pixel and channel."""
  noise = sigma * jax.random.normal(key, image.shape, image.dtype)
  return jnp.clip(image + noise, 0.0, 1.0)


def shot_noise(key: jax.Array, image: jax.Array, scale: float):
  """``clip(Poisson(x * scale) / scale)`` per pixel and channel."""
  counts = jax.random.poisson(key, image * scale, image.shape)
  return jnp.clip(counts.astype(image.dtype) / scale, 0.0, 1.0)


def impulse_noise(key: jax.Array, image: jax.Array, amount: float):
  """Salt and pepper as ``skimage.util.random_noise(mode="s&p")``.

  Each pixel and channel independently flips with probability ``amount``;
  a flipped value becomes 1 or 0 with probability 1/2 each.
  """
  flip_key, salt_key = jax.random.split(key)
  flipped = jax.random.bernoulli(flip_key, amount, image.shape)
  salted = jax.random.bernoulli(salt_key, 0.5, image.shape)
  salt_or_pepper = salted.astype(image.dtype)
  return jnp.where(flipped, salt_or_pepper, image)


def speckle_noise(key: jax.Array, image: jax.Array, sigma: float):
  """``clip(x + x * N(0, sigma^2))`` per pixel and channel."""
  noise = sigma * jax.random.normal(key, image.shape, image.dtype)
  return jnp.clip(image + image * noise, 0.0, 1.0)
