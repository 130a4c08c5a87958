"""Throughput of the CIFAR-10 input pipeline (npz source, real data).

Measures images/s of training batches (augment="cifar", normalized) and of
one evaluation pass, as the median of several timed passes after a warm-up
(the one-off JPEG decode of the 60,000 images is timed separately).
Target: >= 5,000 images/s on 2 CPU cores, so the pipeline outpaces training.

Run from the repository root:
  python benchmarks/input_pipeline.py [--path ../shared/data/cifar10_jpeg.npz]
"""

import argparse
import os
import statistics
import time

import numpy as np

from experiments import input_pipeline as ip

TARGET = 5_000


def _rate(make_iter, num_batches, repeats):
  rates = []
  for _ in range(repeats + 1):  # The first pass is the warm-up.
    it = make_iter()
    start = time.perf_counter()
    images = 0
    for _ in range(num_batches):
      batch = next(it, None)
      if batch is None:
        break
      images += len(batch["label"])
    rates.append(images / (time.perf_counter() - start))
  return statistics.median(rates[1:])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--path", default="../shared/data/cifar10_jpeg.npz")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--train_batches", type=int, default=200)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  cfg = ip.get_default_data_config()
  cfg.update(dict(source="npz", path=args.path, image_size=32, channels=3))
  start = time.perf_counter()
  info = ip.get_info(cfg)
  decode_s = time.perf_counter() - start
  print(f"cores: {os.cpu_count()}  batch_size: {args.batch_size}")
  print(
    f"one-off decode of {sum(info.num_examples.values())} JPEGs: "
    f"{decode_s:.2f} s"
  )
  results = {}
  for augment in ("cifar", "none"):
    cfg.augment = augment
    results[f"train augment={augment}"] = _rate(
      lambda: ip.train_batches(
        cfg, batch_size=args.batch_size, seed=0, start_step=0
      ),
      args.train_batches,
      args.repeats,
    )
  results["eval (10,000 test images)"] = _rate(
    lambda: ip.eval_batches(cfg, batch_size=args.batch_size),
    np.iinfo(np.int32).max,
    args.repeats,
  )
  for name, rate in results.items():
    verdict = "OK" if rate >= TARGET else "BELOW TARGET"
    print(
      f"{name:28s} median {rate:10,.0f} images/s  "
      f"(target >= {TARGET:,}: {verdict})"
    )


if __name__ == "__main__":
  main()
