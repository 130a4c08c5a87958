r"""Cost of the structural perturbations: the harness's C-SAM search step.

The study's search step (experiments/training/stages.py, built from a study
config's cell exactly as a run builds it: ResNet-18 width 0.125, batch 128, the
hinge on) for each variant named in --variants, jit-compiled, warmed up,
then timed round-robin (one call of each per round, block_until_ready) for
--repeats rounds. Prints the median seconds per step and the ratio of each
to the first variant (ratio of medians and median of per-round ratios):
the price of the flip-targeted radius's bisection (20 top-k evaluations a
step) and of the hard-mask swap (a sort per layer) next to the plain
perturbation and none.

  python -m benchmarks.structure_step
  python -m benchmarks.structure_step --variants=csam_rho0,csam_f10 \
    --repeats=20
"""

import statistics
import time

import jax
import numpy as np
from absl import app, flags

from experiments import models
from experiments.configs import study_structure_sweep
from experiments.robustness import samplers
from experiments.study import runner as study
from experiments.training import methods, stages
from experiments.training import state as state_lib

_VARIANTS = flags.DEFINE_list(
  "variants",
  ["csam_rho0", "csam", "csam_f1", "csam_f10", "csam_swap_f10"],
  "Variants (experiments/study/variants.py); ratios are to the first.",
)
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed rounds.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls after compiling.")


def _step(name: str):
  """The jitted search step of ``name``'s cell, its begun state, a batch."""
  config = study_structure_sweep.get_config()
  cell = study.Cell(name, 0.9, 0)
  cfg = study.cell_config(config, cell)
  module = models.get_model(
    cfg.model.name,
    num_classes=cfg.data.num_classes,
    width=cfg.model.width,
    stem=cfg.model.stem,
  )
  # Normalisation constants do not change the cost of a step.
  model = state_lib.Model(module, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
  state = state_lib.init_train_state(model, jax.random.PRNGKey(0), shape)
  csam = cfg.search.csam
  sampler = samplers.make_sampler(csam.distribution, csam.variations)
  spec = methods.get_recipe("csam")[1]
  stage = stages.build(cfg, spec, model, 78, sampler=sampler)
  begun = stage.begin(state, jax.random.PRNGKey(1))
  rng = np.random.default_rng(0)
  batch = dict(
    image=rng.random((cfg.batch_size, *shape), np.float32),
    label=rng.integers(0, 10, cfg.batch_size),
  )
  return stage.step, begun, batch


def main(argv):
  del argv
  names = list(_VARIANTS.value)
  steps = {name: _step(name) for name in names}
  for name, (fn, state, batch) in steps.items():
    t0 = time.perf_counter()
    for _ in range(1 + _WARMUP.value):
      jax.block_until_ready(fn(state, batch))
    print(f"{name}: compiled and warmed up in {time.perf_counter() - t0:.1f}s")
  times = {name: [] for name in names}
  for _ in range(_REPEATS.value):
    for name, (fn, state, batch) in steps.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(state, batch))
      times[name].append(time.perf_counter() - t0)
  first = names[0]
  print(f"\nmedian s/step over {_REPEATS.value} rounds; ratios to {first}")
  for name in names:
    med = statistics.median(times[name])
    per_round = statistics.median(
      a / b for a, b in zip(times[name], times[first], strict=True)
    )
    print(
      f"{name:>16}: {med:.3f} s  x{med / statistics.median(times[first]):.2f}"
      f" (median per-round ratio x{per_round:.2f})"
    )


if __name__ == "__main__":
  app.run(main)
