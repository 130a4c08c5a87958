r"""A study's plan on paper: its jobs, their estimated cost, the wall time.

  python -m experiments.study.plan --config=experiments/configs/study_paper.py
  python -m experiments.study.plan --config=experiments/configs/study_paper.py \
    --all_paper --worker_counts=1,8,32,128 --anchor_images_per_s=4500

Counts the study's pretraining jobs and cells (`experiments.study.jobs`)
and estimates each job's accelerator time from its config alone: the model
passes of every stage (epochs x training images x
`experiments.training.stages.passes_per_step`, a training pass counted as 3
forward passes, a BatchNorm re-tuning pass as 1) and the certification draws
(images x N x distributions forward passes), times the model's forward
FLOPs at the config's image size (XLA's cost analysis of the compiled
forward pass), divided by one effective FLOP rate. That rate is the single
assumption, and it is marked as one: ``--anchor_images_per_s`` training
images per second of ResNet-18 on 32 px CIFAR-10 on one accelerator
(default 4,500: the H100-class assumption in study_paper.py; replace it by
a measured epoch time, benchmarks/gpu.sh). Every figure this prints is an
estimate, not a measurement.

Wall time for n workers: the pretraining jobs first (longest first over n
workers), then the cells (longest first); a lower bound when workers start
together and never wait for a queue.
"""

from __future__ import annotations

import functools
import heapq
import sys

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags

from experiments import main as main_lib
from experiments import models
from experiments.reports import markdown
from experiments.study import runner as study
from experiments.training import methods, stages

_WORKERS = flags.DEFINE_list(
  "worker_counts", ["1", "8", "32"], "Worker counts to plan for."
)
_ANCHOR = flags.DEFINE_float(
  "anchor_images_per_s",
  4500.0,
  "ASSUMED training images/s of ResNet-18 at 32 px on one accelerator.",
)
_ALL_PAPER = flags.DEFINE_bool(
  "all_paper",
  False,
  "Every dataset/model of study_paper.py (ignores the "
  "--config study; its --config must still name a study config).",
)

# Training images of each dataset's training split as the configs use it
# (TFDS catalog sizes: CIFAR-10 train; Flowers-102 train + validation;
# CelebA-HQ's only split, 90% of it).
TRAIN_IMAGES = {
  "cifar10": 50_000,
  "oxford_flowers102": 2_040,
  "celeb_a_hq/128": 27_000,
  "sklearn_digits": 1_437,
}


@functools.cache
def forward_flops(
  name: str, width: float, stem: str, image_size: int, num_classes: int
) -> float:
  """FLOPs of one image's forward pass (XLA's cost analysis, batch 8)."""
  module = models.get_model(
    name, num_classes=num_classes, width=width, stem=stem
  )
  x = jnp.zeros((8, image_size, image_size, 3), jnp.float32)
  variables = module.init(jax.random.PRNGKey(0), x, train=False)
  apply = jax.jit(lambda v, x: module.apply(v, x, train=False))
  cost = apply.lower(variables, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"]) / 8


def _train_images(config: ml_collections.ConfigDict) -> int:
  name = config.data.name or config.data.source
  if name not in TRAIN_IMAGES:
    raise ValueError(
      f"plan: no training-split size for data {name!r}; add it to "
      "experiments.study.plan.TRAIN_IMAGES"
    )
  return TRAIN_IMAGES[name]


def _stage_images(cfg, section: str, train_images: int) -> float:
  """Images one budget section trains on (num_steps > 0 overrides epochs)."""
  budget = cfg[section]
  if int(budget.get("num_steps", 0)) > 0:
    return float(budget.num_steps * cfg.batch_size)
  return float(budget.epochs) * train_images


def job_passes(config: ml_collections.ConfigDict, job: study.Job) -> float:
  """Forward-pass equivalents of one job (training x3, re-tuning x1)."""
  cfg = study.cell_config(config, job.cell)
  images = _train_images(cfg)
  total = 0.0
  for method in job.methods:
    for spec in methods.get_recipe(method):
      if spec.shared != job.pretraining:
        continue
      seen = sum(_stage_images(cfg, section, images) for section in spec.epochs)
      weight = 1.0 if spec.kind == "retune" else 3.0
      total += seen * stages.passes_per_step(cfg, spec) * weight
  if not job.pretraining and cfg.certify.enabled:
    c = cfg.certify
    total += c.num_images * c.num_samples * c.num_bounds * len(c.distributions)
  return total


def job_hours(config, job, anchor_images_per_s: float) -> float:
  """Estimated accelerator-hours of one job."""
  cfg = study.cell_config(config, job.cell)
  rate = (
    anchor_images_per_s * 3 * forward_flops("resnet18", 1.0, "cifar", 32, 10)
  )
  m = cfg.model
  flops = forward_flops(
    m.name,
    float(m.width),
    m.stem,
    int(cfg.data.image_size),
    int(cfg.data.num_classes),
  )
  return job_passes(config, job) * flops / rate / 3600


def wall_hours(pre: list[float], cells: list[float], workers: int) -> float:
  """Longest-first list scheduling: every pretraining, then every cell."""

  def makespan(durations: list[float]) -> float:
    loads = [0.0] * min(workers, max(len(durations), 1))
    for d in sorted(durations, reverse=True):
      heapq.heapreplace(loads, loads[0] + d)
    return max(loads, default=0.0)

  return makespan(pre) + makespan(cells)


def plan_rows(
  configs: list[ml_collections.ConfigDict],
  workers: list[int],
  anchor_images_per_s: float,
) -> list[list[str]]:
  """One row per study: name, jobs, estimated hours, wall for each n."""
  rows = []
  for config in configs:
    all_jobs = study.jobs(config)
    pre = [
      job_hours(config, j, anchor_images_per_s)
      for j in all_jobs
      if j.pretraining
    ]
    cells = [
      job_hours(config, j, anchor_images_per_s)
      for j in all_jobs
      if not j.pretraining
    ]
    rows.append(
      [
        config.study.name,
        str(len(pre)),
        str(len(cells)),
        f"{sum(pre) + sum(cells):.0f}",
        *(f"{wall_hours(pre, cells, n):.1f}" for n in workers),
      ]
    )
  return rows


def main(argv: list[str]) -> None:
  config = main_lib.setup(argv, "experiments/configs/study_paper.py")
  workers = [int(n) for n in _WORKERS.value]
  if _ALL_PAPER.value:
    from experiments.configs import study_paper

    configs = [
      study_paper.get_config(f"{d}/{m}")
      for d in study_paper.DATASETS
      for m in study_paper.MODELS
    ]
  else:
    configs = [config]
  rows = plan_rows(configs, workers, _ANCHOR.value)
  header = ["study", "pretraining jobs", "cells", "est. accelerator-h"] + [
    f"est. wall h, {n} workers" for n in workers
  ]
  sys.stdout.write(markdown.table(header, rows) + "\n")


if __name__ == "__main__":
  app.run(main)
