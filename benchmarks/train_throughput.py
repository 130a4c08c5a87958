r"""Training throughput (images/s) of each method for ResNet-18 at 32 px.

Times the jitted training step of every stage kind on a fixed random batch
(the data pipeline is not measured), then combines them per method with the
cifar10c epoch budget (pretrain + search + finetune epochs): a method's
images/s is total images / total time over its stages; one-shot pruning
costs no steps. Ratios are relative to ``dense``, all measured side by side
in this one run. ``--methods`` picks the methods (default: every registered
one, the compression-aware peers CrAM, CrAM+ and SAFE included; ``dense``
is always timed, as the reference of the ratios).

  python benchmarks/train_throughput.py --width=0.25 --batch=64
  python benchmarks/train_throughput.py --methods=dense,hydra,csam,cram,safe

It also prints each method's projected time of one full CIFAR-10 epoch
(50,000 images at the method's measured images/s, averaged over its
stages) and of the whole cifar10c budget (pretrain + search + finetune
epochs), and, given
--overhead_json (the JSON of benchmarks/step_overhead.py), the same from
the dense step time of this run times the passes/step ratios measured there:
optax_sam/sgd for SAM stages and for the compression-aware stages (CrAM's
and SAFE's updates take two forward-backward passes, as SAM's), csam/sgd
for C-SAM search, 1 otherwise.
--dtype=bfloat16 computes in bfloat16; --json_out writes the results.
"""

from __future__ import annotations

import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import models
from experiments.configs import cifar10c
from experiments.robustness import samplers
from experiments.training import methods, parallel, stages
from experiments.training import state as state_lib

_WIDTH = flags.DEFINE_float("width", 0.125, "ResNet-18 width multiplier.")
_BATCH = flags.DEFINE_integer("batch", 32, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Repeats (median reported).")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Image side in pixels.")
_DTYPE = flags.DEFINE_enum(
  "dtype", "float32", ["float32", "bfloat16"], "Computation dtype."
)
_OVERHEAD_JSON = flags.DEFINE_string(
  "overhead_json", None, "step_overhead.py --json_out file, for projections."
)
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write results as JSON.")
_METHODS = flags.DEFINE_list(
  "methods",
  list(methods.ALL_METHODS),
  "Methods to time (default: every registered method, the peers included).",
)
EPOCH_IMAGES = 50_000  # CIFAR-10 training set


def _pass_ratio(stage, ratios: dict[str, float]) -> float:
  """Step cost of ``stage`` relative to an SGD step (step_overhead ratios)."""
  if stage.kind == "search" and stage.algo == "csam":
    return ratios["csam"]
  if stage.kind == "compression" or (
    stage.sam and stage.kind in ("pretrain", "finetune")
  ):
    return ratios["optax_sam"]
  return 1.0


def _projected_epochs(
  config, dense_step_s: float, ratios, steps_per_epoch, chosen
):
  """Seconds per CIFAR-10 epoch of each method from step_overhead ratios."""
  out = {}
  for method in chosen:
    steps, cost = 0, 0.0
    for stage in methods.get_recipe(method):
      n = methods.stage_steps(config, stage, steps_per_epoch)
      steps, cost = steps + n, cost + n * _pass_ratio(stage, ratios)
    per_image = dense_step_s * (cost / steps) / config.batch_size
    out[method] = EPOCH_IMAGES * per_image
  return out


def _build(ctx, config, spec):
  """The built (jitted) stage of ``spec`` at 100 steps per epoch."""
  return stages.build(
    config,
    spec,
    ctx["model"],
    100,
    ctx["sampler"],
    out_sharding=parallel.replicated(ctx["mesh"]),
  )


def _time_stage(ctx, config, spec, state, batch):
  """Median seconds per step of a stage, and the state after begin."""
  stage = _build(ctx, config, spec)
  state = stage.begin(state, jax.random.PRNGKey(1))
  if stage.step is None:
    return 0.0, state
  step = stage.step
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


def _methods() -> list[str]:
  """The methods to time, ``dense`` first (the reference of the ratios)."""
  unknown = sorted(set(_METHODS.value) - set(methods.ALL_METHODS))
  if unknown:
    raise app.UsageError(
      f"--methods: unknown {unknown}; choose from {methods.ALL_METHODS}."
    )
  return ["dense"] + [m for m in dict.fromkeys(_METHODS.value) if m != "dense"]


def main(argv):
  del argv
  chosen = _methods()
  config = cifar10c.get_config()
  config.batch_size = _BATCH.value
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size)
  module = models.get_model(
    "resnet18",
    num_classes=10,
    width=_WIDTH.value,
    dtype=jnp.dtype(_DTYPE.value),
  )
  model = state_lib.Model(module, (0.5,) * 3, (0.25,) * 3)
  shape = (_IMAGE.value, _IMAGE.value, 3)
  csam = config.search.csam
  ctx = dict(
    model=model,
    mesh=mesh,
    sampler=samplers.make_sampler(csam.distribution, csam.variations),
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
    f"dtype={_DTYPE.value} devices={jax.device_count()} "
    f"({jax.devices()[0].platform})"
  )
  print(f"{'method/stage':28s} {'ms/step':>9s} {'images/s':>10s}")
  results = {}
  for method in chosen:
    state, total_time, total_images = init, 0.0, 0
    for stage in methods.get_recipe(method):
      key = (stage, state.masks is None)  # masked and dense steps differ
      if key not in per_step:
        per_step[key], state = _time_stage(ctx, config, stage, state, batch)
        if per_step[key] > 0:
          print(
            f"{method + '/' + stage.name:28s} {1e3 * per_step[key]:9.1f} "
            f"{_BATCH.value / per_step[key]:10.1f}"
          )
      else:
        state = _build(ctx, config, stage).begin(state, jax.random.PRNGKey(1))
      n = methods.stage_steps(config, stage, steps_per_epoch)
      total_time += n * per_step[key]
      total_images += n * _BATCH.value
    results[method] = total_images / total_time
  projected = {}
  if _OVERHEAD_JSON.value:
    with open(_OVERHEAD_JSON.value) as f:
      overhead = json.load(f)
    dense_step = per_step[(methods.get_recipe("dense")[0], True)]
    projected = _projected_epochs(
      config, dense_step, overhead["ratio_to_sgd"], steps_per_epoch, chosen
    )
    ratios = ", ".join(
      f"{k}/sgd {v:.3f}" for k, v in overhead["ratio_to_sgd"].items()
    )
    print(
      f"\nstep_overhead ratios ({overhead['platform']}, width "
      f"{overhead['width']}, batch {overhead['batch']}, "
      f"{overhead['dtype']}): {ratios}"
    )
  epochs = sum(config[s].epochs for s in ("pretrain", "search", "finetune"))
  header = "epoch from ratios (s)" if projected else ""
  print(
    f"\n{'method':12s} {'images/s':>10s} {'ratio to dense':>15s} "
    f"{'CIFAR-10 epoch (s)':>19s} {f'{epochs:g} epochs (h)':>16s} "
    f"{header:>22s}"
  )
  for method, ips in results.items():
    extra = f"{projected[method]:22.1f}" if projected else ""
    print(
      f"{method:12s} {ips:10.1f} {ips / results['dense']:15.3f} "
      f"{EPOCH_IMAGES / ips:19.1f} {epochs * EPOCH_IMAGES / ips / 3600:16.2f} "
      f"{extra}"
    )
  if _JSON_OUT.value:
    record = dict(
      width=_WIDTH.value,
      batch=_BATCH.value,
      dtype=_DTYPE.value,
      platform=jax.devices()[0].platform,
      images_per_s=results,
      epoch_s={m: EPOCH_IMAGES / ips for m, ips in results.items()},
      epoch_s_from_ratios=projected,
    )
    with open(_JSON_OUT.value, "w") as f:
      json.dump(record, f, indent=2)


if __name__ == "__main__":
  app.run(main)
