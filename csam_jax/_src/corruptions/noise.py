"""Noise corruptions: Gaussian, shot (Poisson), impulse (s&p), speckle.

Each corruption ``fn(key, image, p)`` corrupts one HWC float image in
[0, 1] with the parameters ``p`` of one severity (a dict of possibly traced
scalars, see registry.py) and returns an image in [0, 1].
"""

import jax
import jax.numpy as jnp


def gaussian_noise(key: jax.Array, image: jax.Array, p) -> jax.Array:
  """``clip(x + N(0, sigma^2))`` per pixel and channel."""
  noise = jax.random.normal(key, image.shape, image.dtype)
  return jnp.clip(image + p["sigma"] * noise, 0.0, 1.0)


def shot_noise(key: jax.Array, image: jax.Array, p) -> jax.Array:
  """``clip(Poisson(x * scale) / scale)`` per pixel and channel."""
  counts = jax.random.poisson(key, image * p["scale"], image.shape)
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
