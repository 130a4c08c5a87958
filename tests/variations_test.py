"""Tests of the semantic transformations of csam_jax.variations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from csam_jax import variations as v

IMAGE = jax.random.uniform(jax.random.key(0), (9, 9, 3))

IDENTITY_PARAMS = {
  "brightness": 0.0,
  "contrast": 1.0,
  "gamma": 1.0,
  "rotation": 0.0,
  "scale": 1.0,
  "translation": jnp.zeros(2),
  "gaussian_blur": 0.0,
}


@pytest.mark.parametrize("name", sorted(IDENTITY_PARAMS))
def test_identity_parameter(name):
  fn = getattr(v, name)
  np.testing.assert_allclose(fn(IMAGE, IDENTITY_PARAMS[name]), IMAGE, atol=1e-6)
  if name == "gaussian_blur":  # traced sigma needs a static radius
    fn = lambda x, s: v.gaussian_blur(x, s, radius=3)
  jitted = jax.jit(fn)(IMAGE, jnp.asarray(IDENTITY_PARAMS[name]))
  np.testing.assert_allclose(jitted, IMAGE, atol=1e-6)


def test_noise_zero_sigma_and_compose_identity():
  np.testing.assert_array_equal(
    v.gaussian_noise(jax.random.key(1), IMAGE, 0.0), IMAGE
  )
  identity = v.compose(
    {
      "brightness": 0.0,
      "contrast": 1.0,
      "gamma": 1.0,
      "rotation": 0.0,
      "scale": 0.0,
      "translation": 0.0,
      "gaussian_blur": 0.0,
      "gaussian_noise": 0.0,
    }
  )
  np.testing.assert_allclose(
    identity(jax.random.key(2), IMAGE), IMAGE, atol=1e-6
  )


def test_photometric_hand_cases():
  x = jnp.array([0.0, 0.25, 0.5, 1.0]).reshape(2, 2, 1)
  np.testing.assert_allclose(
    v.brightness(x, 0.25).ravel(), [0.25, 0.5, 0.75, 1.0]
  )
  # contrast about the mean 0.4375 with factor 0.5
  np.testing.assert_allclose(
    v.contrast(x, 0.5).ravel(), 0.4375 + 0.5 * (x.ravel() - 0.4375), rtol=1e-6
  )
  np.testing.assert_allclose(
    v.contrast(x, 0.5, center="zero").ravel(), 0.5 * x.ravel()
  )
  np.testing.assert_allclose(v.gamma(x, 2.0).ravel(), x.ravel() ** 2)
  # The mean of an unclipped contrast change is unchanged.
  y = 0.25 + 0.5 * IMAGE
  np.testing.assert_allclose(v.contrast(y, 1.5).mean(), y.mean(), rtol=1e-6)


def test_rotation_90_equals_rot90_and_translation_integer_shift():
  x = jax.random.uniform(jax.random.key(3), (8, 8, 2))
  inner = (slice(1, -1), slice(1, -1))
  for degrees, k in ((90.0, 1), (-90.0, -1), (180.0, 2)):
    np.testing.assert_allclose(
      v.rotation(x, degrees)[inner], jnp.rot90(x, k)[inner], atol=1e-5
    )
  shifted = v.translation(x, (0.25, -0.125))  # (2, -1) pixels
  expected = np.zeros_like(x)
  expected[2:, :-1] = np.asarray(x)[:-2, 1:]
  np.testing.assert_allclose(shifted, expected, atol=1e-6)


def test_scale_matches_scipy_zoom_about_centre():
  x = np.asarray(IMAGE)
  got = v.scale(IMAGE, 1.5)
  c = 4.0  # centre of a 9 x 9 image
  matrix = np.diag([1 / 1.5, 1 / 1.5, 1.0])
  offset = np.array([c - c / 1.5, c - c / 1.5, 0.0])
  expected = scipy.ndimage.affine_transform(
    x, matrix, offset, order=1, mode="constant", cval=0.0
  )
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_blur_matches_scipy_and_keeps_the_mean():
  x = np.asarray(IMAGE)
  for sigma in (0.5, 1.3):
    expected = scipy.ndimage.gaussian_filter(
      x, (sigma, sigma, 0), mode="reflect"
    )
    np.testing.assert_allclose(
      v.gaussian_blur(IMAGE, sigma), expected, atol=1e-6
    )
    # Circular (wrap) padding preserves the mean exactly; with reflect the
    # mean changes only through the border, so compare interiors there.
    wrapped = v.gaussian_blur(IMAGE, sigma, mode="wrap")
    np.testing.assert_allclose(wrapped.mean(), IMAGE.mean(), rtol=1e-6)
  assert float(jnp.abs(v.gaussian_blur(IMAGE, 1.3) - IMAGE).max()) > 0.05


@pytest.mark.parametrize(
  "name,spec,expected",
  [
    ("brightness", 0.2, (-0.2, 0.2)),
    ("contrast", 1.3, (0.7, 1.3)),
    ("contrast", 0.6, (0.6, 1.4)),
    ("gamma", 0.7, (0.7, 1 / 0.7)),
    ("rotation", 10.0, (-10.0, 10.0)),
    ("scale", 0.1, (0.9, 1.1)),
    ("gaussian_blur", 1.0, (0.0, 1.0)),
    ("gaussian_noise", 0.1, (0.1, 0.1)),
    ("brightness", (0.1, 0.3), (0.1, 0.3)),
    ("translation", 0.1, ((-0.1, -0.1), (0.1, 0.1))),
    ("translation", (0.1, 0.2), ((-0.1, -0.2), (0.1, 0.2))),
  ],
)
def test_ranges_and_samplers(name, spec, expected):
  lo, hi = v.parameter_range(name, spec)
  np.testing.assert_allclose(lo, expected[0], rtol=1e-9)
  np.testing.assert_allclose(hi, expected[1], rtol=1e-9)
  keys = jax.random.split(jax.random.key(4), 2000)
  params = jax.vmap(v.parameter_sampler(name, spec))(keys)
  lo32 = np.asarray(lo, np.float32)
  hi32 = np.asarray(hi, np.float32)
  assert np.all(params >= lo32) and np.all(params <= hi32)
  # Uniform: the sample range fills the interval.
  np.testing.assert_allclose(
    params.min(0), lo32, atol=0.01 * (1 + float(np.max(hi32)))
  )
  np.testing.assert_allclose(
    params.max(0), hi32, atol=0.01 * (1 + float(np.max(hi32)))
  )


def test_compose_vmapped_equals_looped_and_stays_in_range():
  sample_fn = v.compose(
    dict(v.CC_CERT_RANGES, scale=0.2, gaussian_noise=0.3, brightness=0.8)
  )
  images = jax.random.uniform(jax.random.key(5), (4, 9, 9, 3))
  keys = jax.random.split(jax.random.key(6), 4)
  batched = jax.jit(jax.vmap(sample_fn))(keys, images)
  looped = jnp.stack(
    [jax.jit(sample_fn)(k, x) for k, x in zip(keys, images, strict=True)]
  )
  np.testing.assert_allclose(batched, looped, atol=1e-6)
  assert batched.shape == images.shape and batched.dtype == jnp.float32
  assert float(batched.min()) >= 0.0 and float(batched.max()) <= 1.0
  assert not np.allclose(batched[0], batched[1])  # i.i.d. per key
  again = jax.jit(jax.vmap(sample_fn))(keys, images)
  np.testing.assert_array_equal(batched, again)  # deterministic for a key


def test_compose_order_is_canonical():
  # Brightness (photometric) is applied before translation (geometric), so
  # the filled-in border stays at cval = 0 whatever the dict order.
  a = v.compose({"translation": (0.0, 0.5), "brightness": (0.5, 0.5)})
  b = v.compose({"brightness": (0.5, 0.5), "translation": (0.0, 0.5)})
  key = jax.random.key(7)
  x = jnp.full((4, 4, 1), 0.25)
  np.testing.assert_array_equal(a(key, x), b(key, x))


@pytest.mark.parametrize(
  "degrees, shift, shape",
  [
    (90.0, (0.25, -0.125), (8, 8, 3)),
    (180.0, (-0.5, 0.25), (6, 8, 2)),
    (270.0, (0.0, 0.375), (8, 8, 1)),
    (0.0, (0.125, 0.5), (6, 8, 3)),
  ],
)
def test_fused_geometric_equals_chain_on_the_pixel_grid(degrees, shift, shape):
  # Quarter turns and whole-pixel shifts sample every intermediate image at
  # pixels, so one resampling equals the chain (up to cos/sin rounding).
  x = jax.random.uniform(jax.random.key(8), shape)
  chain = v.translation(v.scale(v.rotation(x, degrees), 1.0), shift)
  fused = v.rotate_scale_translate(x, degrees=degrees, factor=1.0, shift=shift)
  np.testing.assert_allclose(fused, chain, atol=1e-5)
  assert float(jnp.abs(chain).sum()) > 0 and float((chain == 0).mean()) > 0.1


def _smooth(rows, cols):
  """A smooth test image as a function of continuous pixel coordinates."""
  return jnp.stack(
    [
      0.5 + 0.3 * jnp.sin(2 * jnp.pi * rows / 16) * jnp.cos(cols / 5),
      0.5 + 0.2 * jnp.cos(2 * jnp.pi * (rows + cols) / 20),
    ],
    -1,
  )


def test_fused_geometric_is_the_chain_map_interpolated_once():
  n, c = 32, 15.5
  grid = jnp.arange(n, dtype=jnp.float32)
  rows, cols = jnp.meshgrid(grid, grid, indexing="ij")
  x = _smooth(rows, cols)
  degrees, factor, shift = 12.0, 1.15, (0.06, -0.09)
  chain = v.translation(v.scale(v.rotation(x, degrees), factor), shift)
  fused = v.rotate_scale_translate(
    x, degrees=degrees, factor=factor, shift=shift
  )
  # Exact image: the source of output p is rotation(scale(translation(p))).
  th = np.deg2rad(degrees)
  r1, c1 = rows - shift[0] * n, cols - shift[1] * n  # undo the translation
  r2, c2 = c + (r1 - c) / factor, c + (c1 - c) / factor  # undo the scale
  r3 = c + np.cos(th) * (r2 - c) + np.sin(th) * (c2 - c)  # undo the rotation
  c3 = c - np.sin(th) * (r2 - c) + np.cos(th) * (c2 - c)
  exact = _smooth(r3, c3)
  inside = (slice(9, 23), slice(9, 23))  # far from any filled border
  err_fused = np.abs(fused - exact)[inside].max()
  err_chain = np.abs(chain - exact)[inside].max()
  # Bilinear error bound (h = 1): (|f_rr| + |f_cc|) / 8 <= 0.0074 here
  # (channel 0: 0.3 (2 pi / 16)^2 + 0.3 / 25); the chain interpolates three
  # times, so it may be up to three such errors away.
  bound = (0.3 * (2 * np.pi / 16) ** 2 + 0.3 / 25) / 8
  assert err_fused <= bound < err_chain
  np.testing.assert_allclose(fused[inside], chain[inside], atol=3 * bound)


def test_compose_fuses_geometric_steps_in_the_documented_order():
  n = 24
  grid = jnp.arange(n, dtype=jnp.float32)
  x = _smooth(*jnp.meshgrid(grid, grid, indexing="ij"))
  ranges = dict(v.CC_CERT_RANGES, scale=0.15)
  fused = jax.jit(jax.vmap(v.compose(ranges)))
  chain = jax.jit(jax.vmap(v.compose(ranges, fuse_geometric=False)))
  keys = jax.random.split(jax.random.key(9), 8)
  images = jnp.broadcast_to(x, (8,) + x.shape)
  a, b = fused(keys, images), chain(keys, images)
  inside = (slice(None), slice(7, 17), slice(7, 17))
  bound = (0.3 * (2 * np.pi / 16) ** 2 + 0.3 / 25) / 8  # as above
  np.testing.assert_allclose(a[inside], b[inside], atol=3 * bound)
  assert float(jnp.abs(a - b).max()) > 1e-4  # the chain interpolates 3x
  # With one geometric variation there is nothing to fuse: equal.
  one = dict(gamma=0.7, rotation=10.0, gaussian_blur=1.0)
  np.testing.assert_array_equal(
    jax.vmap(v.compose(one))(keys, images),
    jax.vmap(v.compose(one, fuse_geometric=False))(keys, images),
  )


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="unknown variation"):
    v.compose({"rotate": 10.0})
  with pytest.raises(ValueError, match="unknown variation"):
    v.parameter_range("blur", 1.0)
  with pytest.raises(ValueError, match="at least one"):
    v.compose({})
  with pytest.raises(ValueError, match="sigma"):
    v.gaussian_blur(IMAGE, -1.0)
  with pytest.raises(ValueError, match="sigma"):
    v.gaussian_noise(jax.random.key(0), IMAGE, -0.1)
  with pytest.raises(ValueError, match="gaussian_blur"):
    v.compose({"gaussian_blur": -1.0})
  with pytest.raises(ValueError, match="gamma"):
    v.parameter_range("gamma", 0.0)
  with pytest.raises(ValueError, match="lo <= hi"):
    v.parameter_range("rotation", (5.0, -5.0))
  with pytest.raises(TypeError, match="number or a"):
    v.parameter_range("rotation", "ten")
  with pytest.raises(ValueError, match="HWC"):
    v.rotation(IMAGE[None], 10.0)
  with pytest.raises(ValueError, match="mode"):
    v.rotation(IMAGE, 10.0, mode="bogus")
  with pytest.raises(ValueError, match="radius"):
    jax.jit(v.gaussian_blur)(IMAGE, 1.0)
  with pytest.raises(ValueError, match="border_mode"):
    v.compose({"rotation": 5.0}, border_mode="bogus")
  with pytest.raises(ValueError, match="exponent"):
    v.gamma(IMAGE, -1.0)


def test_one_family_registry_that_every_list_derives_from():
  from csam_jax._src.variations import registry as registry_lib
  from experiments.configs import certify_config
  from experiments.robustness import samplers

  registry = v.REGISTRY
  names = [f.name for f in registry]
  assert tuple(names) == v.VARIATIONS and len(set(names)) == 8
  # compose's canonical order: the groups in order, each family once.
  groups = [registry_lib.GROUPS.index(f.group) for f in registry]
  assert groups == sorted(groups)
  assert v.CC_CERT_RANGES == {
    "gamma": 0.7,
    "contrast": 1.3,
    "brightness": 0.2,
    "rotation": 10.0,
    "translation": 0.1,
    "gaussian_blur": 1.0,
  }
  # The offsets every published certificate was drawn with.
  assert v.SEED_OFFSETS == dict(
    gamma=3,
    contrast=4,
    brightness=5,
    rotation=6,
    translation=7,
    gaussian_blur=8,
  )
  assert samplers.FAMILIES == v.CERTIFIABLE
  # Each family carries its transform and range reading; the geometric ones
  # their keyword in the one resampling.
  for f in registry:
    assert f.make_op is not None
    assert (f.from_number is None) == (f.name == "translation")
    assert (f.fused is not None) == (f.group == "geometric")
  cert = certify_config.get_certify_config()
  offsets = dict(cert.seed_offsets)
  assert len(set(offsets.values())) == len(offsets)
  assert cert.distributions == ("semantic", *v.CERTIFIABLE)
