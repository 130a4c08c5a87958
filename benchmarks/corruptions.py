"""Throughput of the JAX CIFAR-10-C corruptions vs the numpy reference.

For a batch of real CIFAR-10 test images (default 256), each corruption at
one severity is jitted, warmed up and timed (median of several runs); the
numpy/OpenCV/scikit-image package ``imagecorruptions`` (ImageNet-C
severities; one image per call, as its API works) is timed in the same run
on a subset of the images when it is installed. Prints images/s and the
ratio. Run from the repository root:

  python benchmarks/corruptions.py [--batch 256] [--severity 3]
      [--names shot_noise,contrast]

Also times, in the same run, shot noise drawn with ``jax.random.poisson``
(the previous implementation; the library inverts the Poisson CDF) and the
corruption sampler through ``jax.vmap`` (a ``lax.switch`` evaluating every
corruption) and through its ``sample_batch`` (each corruption on its draws).
"""

import argparse
import io
import os
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from csam_jax import variations
from csam_jax.variations import corruptions as corr

CIFAR = os.path.join("..", "shared", "data", "cifar10_jpeg.npz")


def load_images(n: int) -> np.ndarray:
  with np.load(CIFAR) as data:
    offsets, blob = data["test_offsets"], data["test_jpeg"]
  rows = np.random.default_rng(0).permutation(10000)[:n]
  return np.stack(
    [
      np.asarray(Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]])))
      for i in rows
    ]
  )


def _poisson_shot_noise(key, images, severity: int):
  """Shot noise with jax.random.poisson, as before the CDF inversion."""
  scale = corr.severity_parameters("shot_noise", severity)[0]
  counts = jax.random.poisson(key, images * scale, images.shape)
  return jnp.clip(counts.astype(images.dtype) / scale, 0.0, 1.0)


def time_jax(name: str, severity: int, x, repeats: int, fn=None) -> float:
  if fn is None:
    fn = jax.jit(lambda k, im: variations.corrupt(k, im, name, severity))
  key = jax.random.key(0)
  fn(key, x).block_until_ready()  # compile + warm up
  fn(jax.random.key(1), x).block_until_ready()
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    fn(jax.random.key(2 + i), x).block_until_ready()
    times.append(time.perf_counter() - t0)
  return x.shape[0] / statistics.median(times)


def time_numpy(corrupt_fn, name, severity, images, repeats) -> float:
  corrupt_fn(images[0], corruption_name=name, severity=severity)  # warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for image in images:
      corrupt_fn(image, corruption_name=name, severity=severity)
    times.append(time.perf_counter() - t0)
  return len(images) / statistics.median(times)


def time_sampler(x, repeats: int, batched: bool) -> float:
  """images/s of corruption_sampler() on the batch, one draw per image.

  ``batched``: its ``sample_batch`` (draws grouped by corruption, as the
  certifiers apply it); else ``jax.vmap`` of the per-image ``sample_fn``
  (a ``lax.switch`` that runs every corruption under vmap).
  """
  sample_fn = variations.corruption_sampler()
  fn = jax.jit(sample_fn.sample_batch if batched else jax.vmap(sample_fn))
  keys = jax.random.split(jax.random.key(0), x.shape[0])
  fn(keys, x).block_until_ready()
  times = []
  for i in range(repeats):
    keys = jax.random.split(jax.random.key(i + 1), x.shape[0])
    t0 = time.perf_counter()
    fn(keys, x).block_until_ready()
    times.append(time.perf_counter() - t0)
  return x.shape[0] / statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--severity", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--numpy_images", type=int, default=32)
  parser.add_argument(
    "--names", default="", help="comma-separated corruptions (default: all)"
  )
  args = parser.parse_args()
  images = load_images(args.batch)
  x = jax.device_put(images.astype(np.float32) / 255.0)
  try:
    from imagecorruptions import corrupt as numpy_corrupt
  except ImportError as e:
    numpy_corrupt = None
    print(f"imagecorruptions not installed ({e}); JAX only.")
  print(
    f"device: {jax.devices()[0].device_kind}, batch {args.batch} CIFAR-10 "
    f"test images 32x32, severity {args.severity}, median of "
    f"{args.repeats} runs after warm-up; numpy on {args.numpy_images} images"
  )
  print(
    f"{'corruption':<18} {'jax img/s':>11} {'numpy img/s':>12} {'ratio':>8}"
  )
  names = variations.CORRUPTIONS + variations.EXTRA_CORRUPTIONS
  if args.names:
    names = tuple(args.names.split(","))
  for name in names:
    jax_rate = time_jax(name, args.severity, x, args.repeats)
    numpy_cell, ratio_cell = "-", "-"
    if numpy_corrupt is not None:
      try:
        with warnings.catch_warnings():
          warnings.simplefilter("ignore")
          rate = time_numpy(
            numpy_corrupt,
            name,
            args.severity,
            images[: args.numpy_images],
            max(1, args.repeats // 2),
          )
        numpy_cell, ratio_cell = f"{rate:.0f}", f"{jax_rate / rate:.1f}x"
      except Exception as e:  # noqa: BLE001 - report broken references.
        numpy_cell = f"FAILS: {type(e).__name__}: {str(e)[:60]}"
    print(f"{name:<18} {jax_rate:>11.0f} {numpy_cell:>12} {ratio_cell:>8}")
    if name == "shot_noise":
      poisson = jax.jit(lambda k, im: _poisson_shot_noise(k, im, args.severity))
      rate = time_jax(name, args.severity, x, args.repeats, poisson)
      print(
        f"  shot_noise with jax.random.poisson: {rate:.0f} img/s "
        f"(CDF inversion / poisson: {jax_rate / rate:.2f}x)"
      )
  for batched, how in ((False, "jax.vmap"), (True, "sample_batch")):
    rate = time_sampler(x, args.repeats, batched)
    print(
      f"corruption_sampler (15 names x 5 severities, {how}): {rate:.0f} img/s"
    )


if __name__ == "__main__":
  main()
