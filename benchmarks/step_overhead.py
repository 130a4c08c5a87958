r"""Step-time overhead of C-SAM mask search against SGD and optax SAM.

One ResNet-18 (CIFAR stem, 32x32 inputs; width and batch as flags), three
jit-compiled training steps measured side by side in one run:

  (a) sgd      : SGD on the masked weights (fixed hard mask), one pass.
  (b) csam     : C-SAM mask search, csam_jax.csam on the soft masks with
                 frozen weights (forward mode --forward: soft or ste), two
                 forward-backward passes.
  (c) optax_sam: optax.contrib.sam(sgd, chain(normalize(), sgd(rho)),
                 opaque_mode=True) on the masked weights, two passes.

The steps are compiled and warmed up, then timed round-robin (one call of
each per round, block_until_ready) for --repeats rounds; the medians and the
ratios csam/sgd and csam/optax_sam are printed (ratio of medians and median
of per-round ratios).
Two forward-backward passes make ~2.0x SGD the floor.

  python -m benchmarks.step_overhead --width=0.25 --batch=64

--dtype=bfloat16 computes in bfloat16 (parameters float32); --json_out
writes the medians and ratios as JSON (benchmarks/gpu.sh reads them).
"""

import json
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

import csam_jax
from experiments import models

_WIDTH = flags.DEFINE_float("width", 0.25, "ResNet-18 channel multiplier.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size.")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Mask sparsity.")
_FORWARD = flags.DEFINE_enum(
  "forward", "soft", ["soft", "ste"], "C-SAM forward-pass mask mode."
)
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed runs after compiling.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed runs per step.")
_DTYPE = flags.DEFINE_enum(
  "dtype", "float32", ["float32", "bfloat16"], "Computation dtype."
)
_JSON_OUT = flags.DEFINE_string(
  "json_out", None, "Write medians (s) and ratios to this JSON file."
)


def _interleaved_medians(steps: dict[str, tuple[Callable, tuple]]) -> dict:
  """Median seconds per step, timed round-robin so drift hits all alike.

  Each step is compiled and warmed up first; then every round times one call
  of each step in turn (block_until_ready). Also returns, per step, the
  median over rounds of its time divided by the "sgd" time of that round.
  """
  carries = {}
  for name, (step, carry) in steps.items():
    for _ in range(1 + _WARMUP.value):
      carry = jax.block_until_ready(step(*carry))
    carries[name] = carry
  times = {name: [] for name in steps}
  for _ in range(_REPEATS.value):
    for name, (step, _) in steps.items():
      start = time.perf_counter()
      carries[name] = jax.block_until_ready(step(*carries[name]))
      times[name].append(time.perf_counter() - start)
  return times


def main(argv):
  del argv
  sparsity = _SPARSITY.value
  model = models.get_model(
    "resnet18",
    num_classes=10,
    width=_WIDTH.value,
    dtype=jnp.dtype(_DTYPE.value),
  )
  key = jax.random.key(0)
  k_init, k_x, k_y = jax.random.split(key, 3)
  x = jax.random.uniform(k_x, (_BATCH.value, 32, 32, 3))
  y = jax.random.randint(k_y, (_BATCH.value,), 0, 10)
  variables = model.init(k_init, x, train=False)
  params, batch_stats = variables["params"], variables["batch_stats"]
  masks = csam_jax.init_masks(params, sparsity=sparsity, method="hydra")
  hard = csam_jax.topk_masks(masks, sparsity)

  def loss(p, stats):
    logits, new = model.apply(
      {"params": p, "batch_stats": stats},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce, new["batch_stats"]

  def weight_loss(p, stats):
    return loss(csam_jax.apply_masks(p, hard), stats)

  def mask_loss(m, stats):
    pruned = csam_jax.apply_masks(
      params, m, mode=_FORWARD.value, sparsity=sparsity
    )
    return loss(pruned, stats)

  def make_step(loss_fn, tx, opaque: bool):
    grad = jax.grad(loss_fn, has_aux=True)

    @jax.jit
    def step(tree, state, stats):
      grads, new_stats = grad(tree, stats)  # BN stats from the clean pass.
      extra = {"grad_fn": lambda t, _: grad(t, stats)[0]} if opaque else {}
      updates, state = tx.update(grads, state, tree, **extra)
      return optax.apply_updates(tree, updates), state, new_stats

    return step

  sgd = optax.sgd(0.1, momentum=0.9)
  csam = csam_jax.csam(learning_rate=0.1, rho=0.05)
  sam = optax.contrib.sam(
    optax.sgd(0.1, momentum=0.9),
    optax.chain(optax.contrib.normalize(), optax.sgd(0.05)),
    opaque_mode=True,
  )
  times = _interleaved_medians(
    {
      "sgd": (
        make_step(weight_loss, sgd, False),
        (params, sgd.init(params), batch_stats),
      ),
      "csam": (
        make_step(mask_loss, csam, True),
        (masks, csam.init(masks), batch_stats),
      ),
      "optax_sam": (
        make_step(weight_loss, sam, True),
        (params, sam.init(params), batch_stats),
      ),
    }
  )
  results = {name: statistics.median(t) for name, t in times.items()}

  def paired_ratio(a: str, b: str) -> float:
    return statistics.median(
      x / y for x, y in zip(times[a], times[b], strict=True)
    )

  n_params = sum(p.size for p in jax.tree.leaves(params))
  print(
    f"device={jax.devices()[0].platform} resnet18 width={_WIDTH.value} "
    f"params={n_params:,} batch={_BATCH.value} forward={_FORWARD.value} "
    f"dtype={_DTYPE.value} repeats={_REPEATS.value}"
  )
  for name, seconds in results.items():
    print(f"{name:>10s}: median {seconds * 1e3:9.2f} ms/step")
  for a, b, target in (
    ("csam", "sgd", 2.1),
    ("csam", "optax_sam", 1.05),
    ("optax_sam", "sgd", None),
  ):
    goal = f"  (target <= {target})" if target else ""
    print(
      f"{a}/{b}: ratio of medians {results[a] / results[b]:.3f}, "
      f"median of per-round ratios {paired_ratio(a, b):.3f}{goal}"
    )
  if _JSON_OUT.value:
    record = dict(
      width=_WIDTH.value,
      batch=_BATCH.value,
      dtype=_DTYPE.value,
      forward=_FORWARD.value,
      platform=jax.devices()[0].platform,
      median_s=results,
      ratio_to_sgd={name: paired_ratio(name, "sgd") for name in results},
    )
    with open(_JSON_OUT.value, "w") as f:
      json.dump(record, f, indent=2)


if __name__ == "__main__":
  jnp.zeros(())  # Initialise the backend before timing anything.
  app.run(main)
