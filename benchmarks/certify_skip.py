"""Certification time with and without skipping misclassified images.

  python benchmarks/certify_skip.py [--images 16] [--rounds 2]
  python benchmarks/certify_skip.py --images 1000 --rounds 1  # the study

The study's setting (experiments/configs/study_cpu.py): ResNet-18 width
0.125 with the CIFAR stem (experiments.models, eval mode, its variables as
a jax.tree_util.Partial), 32x32x3 images, N = 10 x 100 draws of the
composed brightness (+-0.2) and contrast ([0.7, 1.3], x * c) variations,
batch_size 1000, the binomial certificate and per-image records, through
experiments.robustness.certification.certify with ``certify.skip_misclassified``
off and on. The model has random weights and the images are uniform noise (the
cost of a draw does not depend on either); the labels are chosen so that
the clean accuracy is --accuracy (0.62, about the study's models): the
clean prediction for that fraction of the images (a seeded choice), another
class for the rest.

The two runs are timed round-robin (one call of each per round, after a
warm-up that compiles), so that load on a shared machine hits both alike;
the script prints median times, the median, min and max over rounds of the
per-round time ratio skip / full next to the fraction of draws the skip
keeps (the clean accuracy), and whether the two results agree: every
certified accuracy and per-image bit equal (they must), and the bounds and
flip counts of the images drawn for equal bit for bit (checked with
csam_jax.certify.cc_cert on the same key). It also prints how many draw
programs were compiled: one per mode, as the harness builds its sampler
once (experiments.robustness.certification.sampler_for); before, every certify
call traced and compiled the program again (seconds per call).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax import certify as certify_lib
from csam_jax._src.certify import chernoff_cramer
from experiments import models
from experiments.configs import study_cpu
from experiments.robustness import certification


def _logits_fn(width: float, size: int) -> jax.tree_util.Partial:
  """``logits_fn(images)`` of an eval-mode ResNet-18, variables as args."""
  model = models.get_model("resnet18", num_classes=10, width=width)
  x = jnp.zeros((1, size, size, 3))
  variables = model.init(jax.random.key(0), x, train=False)

  def apply_fn(variables, images):
    return model.apply(variables, images, train=False)

  return jax.tree_util.Partial(apply_fn, variables)


def _labels(pred: np.ndarray, accuracy: float, seed: int = 0) -> np.ndarray:
  """Labels equal to ``pred`` on ``round(accuracy * B)`` seeded images."""
  num = pred.shape[0]
  rng = np.random.default_rng(seed)
  wrong = rng.permutation(num)[: num - round(accuracy * num)]
  labels = pred.copy()
  labels[wrong] = (pred[wrong] + 1 + rng.integers(0, 9, wrong.size)) % 10
  return labels


def _round_robin(rows, rounds: int):
  """Warm-up outputs and seconds, seconds per round of (name, fn) rows."""
  outs, warm, times = {}, {}, {name: [] for name, _ in rows}
  for name, fn in rows:
    t0 = time.perf_counter()
    outs[name] = fn()
    warm[name] = time.perf_counter() - t0
  for _ in range(rounds):
    for name, fn in rows:
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return outs, warm, times


def _same_draws(cfg, key, logits_fn, images, labels) -> bool:
  """cc_cert with and without labels: equal on the images drawn for."""
  kw = dict(
    num_samples=cfg.num_samples,
    num_bounds=cfg.num_bounds,
    delta=cfg.delta,
    batch_size=cfg.batch_size,
  )
  sampler = certification.sampler_for("semantic", cfg.variations)
  full = certify_lib.cc_cert(key, logits_fn, images, sampler, **kw)
  skip = certify_lib.cc_cert(
    key, logits_fn, images, sampler, labels=labels, **kw
  )
  drawn = np.asarray(skip.num_changed) != certify_lib.NOT_DRAWN
  return bool(
    np.array_equal(drawn, np.asarray(full.pred) == labels)
    and np.array_equal(full.pred, skip.pred)
    and np.array_equal(full.margin, skip.margin)
    and np.array_equal(np.asarray(full.bound)[drawn], skip.bound[drawn])
    and np.array_equal(
      np.asarray(full.num_changed)[drawn], skip.num_changed[drawn]
    )
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=16)
  parser.add_argument("--accuracy", type=float, default=0.62)
  parser.add_argument("--width", type=float, default=0.125)
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()

  cfg = study_cpu.get_config().certify
  cfg.num_images = args.images
  cfg.per_image = True  # as the study records them
  logits_fn = _logits_fn(args.width, 32)
  images = np.asarray(
    jax.random.uniform(jax.random.key(1), (args.images, 32, 32, 3))
  )
  pred = np.asarray(jnp.argmax(logits_fn(jnp.asarray(images)), -1))
  labels = _labels(pred, args.accuracy)
  key = jax.random.key(2)
  num_draws = cfg.num_samples * cfg.num_bounds
  print(
    f"backend={jax.default_backend()} model=resnet18 width={args.width} "
    f"image=(32, 32, 3) images={args.images} N={num_draws} "
    f"batch_size={cfg.batch_size} ranges={dict(cfg.variations.ranges)} "
    f"rounds={args.rounds}"
  )
  print(
    f"random weights, uniform images; labels = clean prediction on "
    f"{int(np.sum(pred == labels))} of {args.images} images (clean "
    f"accuracy {np.mean(pred == labels):.3f}), another class elsewhere"
  )

  def run(skip: bool):
    def fn():
      cfg.skip_misclassified = skip
      return certification.certify(cfg, key, logits_fn, images, labels)

    return fn

  rows = [("full", run(False)), ("skip", run(True))]
  outs, warm, times = _round_robin(rows, args.rounds)
  compiled = chernoff_cramer._cc_draws._cache_size()
  for name, seconds in times.items():
    print(
      f"{name:5s} median {statistics.median(seconds):8.2f} s  "
      f"(warm-up with compile {warm[name]:.2f} s)"
    )
  ratios = [s / f for s, f in zip(times["skip"], times["full"], strict=True)]
  kept = 1 - outs["skip"]["semantic"]["num_skipped"] / args.images
  print(
    f"ratio skip / full: median {statistics.median(ratios):.3f} (min "
    f"{min(ratios):.3f}, max {max(ratios):.3f} over rounds); draws kept "
    f"{kept:.3f}; speed-up {1 / statistics.median(ratios):.2f}x"
  )
  full, skip = (dict(outs[n]["semantic"]) for n in ("full", "skip"))
  for out in (full, skip):
    del out["mean_changed_fraction"], out["num_skipped"]
  sub = jax.random.fold_in(key, cfg.seed_offsets.semantic)
  same = _same_draws(cfg, sub, logits_fn, images, labels)
  print(
    f"accuracies and per-image bits identical: {full == skip}; bounds and "
    f"flip counts of the drawn images identical: {same}; draw programs "
    f"compiled: {compiled} (one each; none by the timed rounds)"
  )


if __name__ == "__main__":
  main()
