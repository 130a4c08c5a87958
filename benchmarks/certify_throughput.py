"""Throughput and memory of csam_jax.certify.cc_cert vs plain forward passes.

  python benchmarks/certify_throughput.py [--model tiny_cnn] [--size 32]

Measured side by side in one run, on the same model (experiments.models,
eval mode) and the same number of images per forward pass:
  * forward: images/s of a jitted lax.map of the model over pre-made
    batches of ``batch_size`` images (no sampling, no statistics);
  * cc_cert[identity]: transformed samples/s of cc_cert with an identity
    transformation (the Monte Carlo machinery only: keys, gathers, scan,
    softmax, discrepancy, bound);
  * cc_cert[semantic]: with the CC-Cert semantic composition of METHOD.md.
Medians over repeats after a warm-up (compilation excluded). Memory: XLA's
temp bytes of the compiled draw program (csam_jax._src.certify._cc_draws)
for N = 1e2, 1e3, 1e4 draws of one image at a fixed batch size, plus the
bytes of its per-draw output (one float32 per draw).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from csam_jax import certify, variations
from csam_jax._src import certify as certify_lib
from experiments import models


def _median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # warm-up / compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _logits_fn(name: str, size: int, num_classes: int = 10):
  model = models.get_model(name, num_classes=num_classes)
  x = jnp.zeros((1, size, size, 3))
  variables = model.init(jax.random.key(0), x, train=False)

  def logits_fn(images):
    return model.apply(variables, images, train=False)

  return logits_fn


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="tiny_cnn")
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--images", type=int, default=4)
  parser.add_argument("--num_samples", type=int, default=100)
  parser.add_argument("--num_bounds", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=500)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  logits_fn = _logits_fn(args.model, args.size)
  shape = (args.size, args.size, 3)
  x = jax.random.uniform(jax.random.key(1), (args.images,) + shape)
  total = args.images * args.num_samples * args.num_bounds
  chunks = -(-total // args.batch_size)
  batches = jax.random.uniform(
    jax.random.key(2), (chunks, args.batch_size) + shape
  )
  forward = jax.jit(lambda b: jax.lax.map(logits_fn, b))
  identity = lambda key, image: image
  semantic = variations.compose(variations.CC_CERT_RANGES)

  def run_cc(sample_fn):
    return lambda: (
      certify.cc_cert(
        jax.random.key(3),
        logits_fn,
        x,
        sample_fn,
        num_samples=args.num_samples,
        num_bounds=args.num_bounds,
        batch_size=args.batch_size,
      ).bound
    )

  print(
    f"backend={jax.default_backend()} devices={jax.device_count()} "
    f"model={args.model} image={shape} images={args.images} "
    f"N={args.num_samples * args.num_bounds} batch_size={args.batch_size}"
  )
  rows = [("forward", lambda: forward(batches), chunks * args.batch_size)]
  rows += [("cc_cert[identity]", run_cc(identity), total)]
  rows += [("cc_cert[semantic]", run_cc(semantic), total)]
  rates = {}
  for name, fn, count in rows:
    seconds = _median_seconds(fn, args.repeats)
    rates[name] = count / seconds
    print(f"{name:20s} median {seconds:8.4f} s  {rates[name]:12.1f} images/s")
  for name in ("cc_cert[identity]", "cc_cert[semantic]"):
    print(f"ratio {name} / forward = {rates[name] / rates['forward']:.3f}")

  print("memory of the draw program (1 image, batch_size 100):")
  for num_draws in (100, 1_000, 10_000):
    compiled = certify_lib._cc_draws.lower(
      jax.random.key(0),
      x[:1],
      logits_fn=logits_fn,
      sample_fn=semantic,
      num_draws=num_draws,
      batch_size=100,
    ).compile()
    mem = compiled.memory_analysis()
    print(
      f"  N={num_draws:6d}  temp={mem.temp_size_in_bytes:10d} B  "
      f"output={mem.output_size_in_bytes:8d} B"
    )


if __name__ == "__main__":
  main()
