r"""Training throughput (images/s) of each method for ResNet-18 at 32 px.

Times the jitted training step of every stage kind on a fixed random batch
(the data pipeline is not measured), then combines them per method with the
cifar10c epoch budget (pretrain + search + finetune epochs): a method's
images/s is total images / total time over its stages; one-shot pruning
costs no steps. Ratios are relative to ``dense``, all measured side by side
in this one run.

  python benchmarks/train_throughput.py --width=0.25 --batch=64
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from absl import app, flags

from experiments import losses, methods, models, parallel, stages
from experiments import state as state_lib
from experiments.configs import cifar10c

_WIDTH = flags.DEFINE_float("width", 0.125, "ResNet-18 width multiplier.")
_BATCH = flags.DEFINE_integer("batch", 32, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Repeats (median reported).")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Image side in pixels.")


def _time_stage(ctx, config, stage, state, batch):
  """Median seconds per step of a stage, and the state after begin."""
  fns = stages.make_stage_fns(
    config, stage, ctx["model"], 1000, 100, ctx["sample_fn"]
  )
  rep = parallel.replicated(ctx["mesh"])
  state = jax.jit(fns.begin, out_shardings=rep)(state, jax.random.PRNGKey(1))
  if fns.step is None:
    return 0.0, state
  step = jax.jit(fns.step, out_shardings=(rep, rep))
  s, m = step(state, batch)  # compile
  jax.block_until_ready(m)
  times = []
  for _ in range(_REPEATS.value):
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
      s, m = step(s, batch)
    jax.block_until_ready((s, m))
    times.append((time.perf_counter() - t0) / _STEPS.value)
  return statistics.median(times), state


def main(argv):
  del argv
  config = cifar10c.get_config()
  config.batch_size = _BATCH.value
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size)
  module = models.get_model("resnet18", num_classes=10, width=_WIDTH.value)
  model = state_lib.ModelFns(module, (0.5,) * 3, (0.25,) * 3)
  shape = (_IMAGE.value, _IMAGE.value, 3)
  ctx = dict(
    model=model,
    mesh=mesh,
    sample_fn=losses.make_sample_fn(config.search.csam.variations),
  )
  rng = np.random.default_rng(0)
  batch = parallel.global_batch(
    dict(
      image=rng.uniform(size=(_BATCH.value, *shape)).astype(np.float32),
      label=rng.integers(0, 10, _BATCH.value).astype(np.int32),
    ),
    mesh,
  )
  init = jax.jit(
    lambda k: state_lib.init_train_state(model, k, shape),
    out_shardings=parallel.replicated(mesh),
  )(jax.random.PRNGKey(0))
  per_step, steps_per_epoch = {}, 100
  print(
    f"ResNet-18 width={_WIDTH.value} {shape} batch={_BATCH.value} "
    f"devices={jax.device_count()} ({jax.devices()[0].platform})"
  )
  print(f"{'method/stage':28s} {'ms/step':>9s} {'images/s':>10s}")
  results = {}
  for method in methods.METHODS:
    state, total_time, total_images = init, 0.0, 0
    for stage in methods.get_stages(method):
      key = (stage, state.masks is None)  # masked and dense steps differ
      if key not in per_step:
        per_step[key], state = _time_stage(ctx, config, stage, state, batch)
        if per_step[key] > 0:
          print(
            f"{method + '/' + stage.name:28s} {1e3 * per_step[key]:9.1f} "
            f"{_BATCH.value / per_step[key]:10.1f}"
          )
      else:
        fns = stages.make_stage_fns(
          config, stage, model, 1000, 100, ctx["sample_fn"]
        )
        state = jax.jit(fns.begin)(state, jax.random.PRNGKey(1))
      n = methods.stage_steps(config, stage, steps_per_epoch)
      total_time += n * per_step[key]
      total_images += n * _BATCH.value
    results[method] = total_images / total_time
  print(f"\n{'method':12s} {'images/s':>10s} {'ratio to dense':>15s}")
  for method, ips in results.items():
    print(f"{method:12s} {ips:10.1f} {ips / results['dense']:15.3f}")


if __name__ == "__main__":
  app.run(main)
