"""One sampler builder for training and certification (robustness.samplers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csam_jax import variations
from experiments.robustness import samplers


def _images(n=6, size=8):
  return jax.random.uniform(jax.random.key(0), (n, size, size, 3))


def test_kinds_build_the_library_samplers():
  cfg = samplers.get_config(ranges=dict(brightness=0.2, contrast=1.3))
  keys = jax.random.split(jax.random.key(1), 6)
  x = _images()
  got = jax.vmap(samplers.make_sampler("semantic", cfg))(keys, x)
  want = jax.vmap(variations.compose(dict(brightness=0.2, contrast=1.3)))(
    keys, x
  )
  np.testing.assert_array_equal(got, want)
  # A family alone: its range in cfg.ranges, else CC-Cert's.
  got = jax.vmap(samplers.make_sampler("brightness", cfg))(keys, x)
  want = jax.vmap(variations.compose(dict(brightness=0.2)))(keys, x)
  np.testing.assert_array_equal(got, want)
  got = jax.vmap(samplers.make_sampler("gamma", cfg))(keys, x)
  gamma = variations.CC_CERT_RANGES["gamma"]
  want = jax.vmap(variations.compose(dict(gamma=gamma)))(keys, x)
  np.testing.assert_array_equal(got, want)
  assert samplers.make_sampler("none", cfg) is None
  with pytest.raises(ValueError, match="must be one of"):
    samplers.check_distribution("config.search.csam.distribution", "fog")


def test_sample_batch_uses_the_bucketed_corruption_path_bit_for_bit():
  cfg = samplers.get_config(
    corruption_names=("gaussian_noise", "contrast", "brightness"),
    corruption_severities=(1, 3),
  )
  sampler = samplers.make_sampler("corruptions", cfg)
  assert hasattr(sampler, "sample_batch")
  keys = jax.random.split(jax.random.key(2), 6)
  x = _images(size=32)
  batched = variations.sample_batch(sampler, keys, x)
  # The same draws (the library pins this at 1e-6: XLA fuses the bucketed
  # programs differently), and not the identity.
  np.testing.assert_allclose(batched, jax.vmap(sampler)(keys, x), atol=1e-6)
  assert float(jnp.abs(batched - x).max()) > 0.01
  # A plain function falls back to vmap.
  shift = lambda key, im: jnp.clip(im + jax.random.uniform(key), 0, 1)
  np.testing.assert_array_equal(
    variations.sample_batch(shift, keys, x), jax.vmap(shift)(keys, x)
  )


def test_a_family_without_a_range_gets_a_named_error(monkeypatch):
  # A registered family with no CC-Cert range (none today) and none given.
  ranges = dict(variations.CC_CERT_RANGES)
  del ranges["gamma"]
  monkeypatch.setattr(samplers.csam_variations, "CC_CERT_RANGES", ranges)
  cfg = samplers.get_config()  # its ranges: the patched CC-Cert ones
  assert "gamma" not in cfg.ranges
  with pytest.raises(ValueError, match="'gamma' has no range"):
    samplers.make_sampler("gamma", cfg)
  cfg.ranges["gamma"] = 0.7  # a range given in the config is used
  assert samplers.make_sampler("gamma", cfg) is not None
