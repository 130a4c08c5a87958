"""Throughput and memory of csam_jax.certify.cc_cert vs plain forward passes.

  python benchmarks/certify_throughput.py [--model tiny_cnn] [--width 1.0]
      [--size 32] [--rounds 7]
  python benchmarks/certify_throughput.py --model resnet18 --width 0.25

Measured side by side in one run, on the same model (experiments.models,
eval mode, its variables passed as a jax.tree_util.Partial) and the same
number of images per forward pass:
  * forward: images/s of a jitted lax.map of the model over pre-made
    batches of ``batch_size`` images (no sampling, no statistics);
  * transform: images/s of the CC-Cert semantic transformation alone
    (jax.vmap of csam_jax.variations.compose, no model);
  * cc_cert[identity]: transformed samples/s of cc_cert with an identity
    transformation (the Monte Carlo machinery only: keys, gathers, scan,
    softmax, discrepancy, bound);
  * cc_cert[semantic]: with the CC-Cert semantic composition
    (csam_jax.variations.compose(CC_CERT_RANGES));
  * corruptions: images/s of csam_jax.variations.corruption_sampler() alone
    (the 15 CIFAR-10-C corruptions x 5 severities, no model, buckets of
    --bucket_size), applied to each chunk of ``batch_size`` draws as the
    certifiers apply it (its sample_batch method);
  * cc_cert[corruptions]: cc_cert with that sampler.
The rows are timed round-robin (one call of each per round, after a warm-up
that compiles), so that load on a shared machine hits all of them alike;
the script prints median times and the median, min and max over rounds of
the per-round ratio to forward. It also prints the compile time of the
draw program with the model as a Partial (variables traced arguments) and
as a closure (variables baked into the program as constants).
Memory: XLA's temp bytes of the compiled draw program
(csam_jax._src.certify.chernoff_cramer._cc_draws) for N = 1e2, 1e3, 1e4
draws of one image at a fixed batch size, plus the bytes of its per-draw
output (one float32 per draw).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from csam_jax import certify, variations
from csam_jax._src.certify import chernoff_cramer, montecarlo
from experiments import models


def _model_fns(name: str, width: float, size: int, num_classes: int = 10):
  """(apply_fn(variables, images), variables) of an eval-mode model."""
  model = models.get_model(name, num_classes=num_classes, width=width)
  x = jnp.zeros((1, size, size, 3))
  variables = model.init(jax.random.key(0), x, train=False)

  def apply_fn(variables, images):
    return model.apply(variables, images, train=False)

  return apply_fn, variables


def _round_robin(rows, rounds: int) -> dict[str, list[float]]:
  """Seconds of each row's call per round; rows are (name, fn) pairs."""
  for _, fn in rows:
    jax.block_until_ready(fn())  # warm-up / compile
  times = {name: [] for name, _ in rows}
  for _ in range(rounds):
    for name, fn in rows:
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
  return times


def _apply_chunk(sample_fn, keys, images):
  """One chunk of draws transformed as the certifiers transform it."""
  return montecarlo.transform(jax.tree_util.Partial(sample_fn), keys, images)


def _compile_seconds(x, logits_fn, sample_fn, batch_size: int) -> float:
  """Seconds to lower and compile the draw program (1 image, 1 chunk)."""
  t0 = time.perf_counter()
  chernoff_cramer._cc_draws.lower(
    jax.random.key(0),
    x[:1],
    logits_fn,
    jax.tree_util.Partial(sample_fn),
    num_draws=batch_size,
    batch_size=batch_size,
  ).compile()
  return time.perf_counter() - t0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="tiny_cnn", choices=models.MODELS)
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--images", type=int, default=4)
  parser.add_argument("--num_samples", type=int, default=100)
  parser.add_argument("--num_bounds", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=500)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument(
    "--bucket_size", type=int, default=16, help="corruption_sampler buckets"
  )
  args = parser.parse_args()

  apply_fn, variables = _model_fns(args.model, args.width, args.size)
  logits_fn = jax.tree_util.Partial(apply_fn, variables)
  shape = (args.size, args.size, 3)
  x = jax.random.uniform(jax.random.key(1), (args.images,) + shape)
  total = args.images * args.num_samples * args.num_bounds
  chunks = -(-total // args.batch_size)
  batches = jax.random.uniform(
    jax.random.key(2), (chunks, args.batch_size) + shape
  )
  forward = jax.jit(lambda f, b: jax.lax.map(f, b))
  identity = lambda key, image: image
  semantic = variations.compose(variations.CC_CERT_RANGES)
  keys = jax.random.split(jax.random.key(4), chunks * args.batch_size)
  keys = keys.reshape(chunks, args.batch_size)
  transform = jax.jit(
    lambda k, b: jax.lax.map(lambda a: jax.vmap(semantic)(*a), (k, b))
  )
  corruptions = variations.corruption_sampler(bucket_size=args.bucket_size)
  corrupt_chunks = jax.jit(
    lambda k, b: jax.lax.map(lambda a: _apply_chunk(corruptions, *a), (k, b))
  )

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
    f"model={args.model} width={args.width} image={shape} "
    f"images={args.images} N={args.num_samples * args.num_bounds} "
    f"batch_size={args.batch_size} rounds={args.rounds} "
    f"bucket_size={args.bucket_size}"
  )
  # The closure's variables become constants of the program.
  closure = jax.tree_util.Partial(lambda images: apply_fn(variables, images))
  _compile_seconds(x, logits_fn, identity, args.batch_size)  # warm-up
  compile_s = {  # each once: a second compile would hit the jit cache
    kind: _compile_seconds(x, fn, semantic, args.batch_size)
    for kind, fn in (("closure", closure), ("Partial", logits_fn))
  }
  print(
    "compile the draw program: variables as arguments (Partial) "
    f"{compile_s['Partial']:.2f} s, as constants (closure) "
    f"{compile_s['closure']:.2f} s"
  )
  counts = {
    "forward": chunks * args.batch_size,
    "transform": chunks * args.batch_size,
    "cc_cert[identity]": total,
    "cc_cert[semantic]": total,
    "corruptions": chunks * args.batch_size,
    "cc_cert[corruptions]": total,
  }
  rows = [
    ("forward", lambda: forward(logits_fn, batches)),
    ("transform", lambda: transform(keys, batches)),
    ("cc_cert[identity]", run_cc(identity)),
    ("cc_cert[semantic]", run_cc(semantic)),
    ("corruptions", lambda: corrupt_chunks(keys, batches)),
    ("cc_cert[corruptions]", run_cc(corruptions)),
  ]
  times = _round_robin(rows, args.rounds)
  for name, seconds in times.items():
    median = statistics.median(seconds)
    print(
      f"{name:20s} median {median:8.4f} s  "
      f"{counts[name] / median:12.1f} images/s"
    )
  for name in (
    "cc_cert[identity]",
    "cc_cert[semantic]",
    "corruptions",
    "cc_cert[corruptions]",
  ):
    ratios = [
      (counts[name] / t) / (counts["forward"] / f)
      for t, f in zip(times[name], times["forward"], strict=True)
    ]
    print(
      f"ratio {name} / forward: median {statistics.median(ratios):.3f} "
      f"(min {min(ratios):.3f}, max {max(ratios):.3f} over rounds)"
    )

  print("memory of the draw program (1 image, batch_size 100):")
  for num_draws in (100, 1_000, 10_000):
    compiled = chernoff_cramer._cc_draws.lower(
      jax.random.key(0),
      x[:1],
      logits_fn,
      jax.tree_util.Partial(semantic),
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
