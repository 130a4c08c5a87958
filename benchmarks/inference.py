r"""CPU inference latency and model bytes: dense, unstructured, channel-pruned.

  python -m benchmarks.inference --width=0.5 --rounds=7

One ResNet-18 (CIFAR stem, 32x32 inputs, 10 classes) in three deployments,
built the way ``experiments.export`` builds them (BatchNorm folded,
``experiments.deploy.compact``):

  dense         all weights;
  unstructured  ``W * TopK(|W|)`` at --sparsity (global, every prunable
                kernel but the classifier's);
  channel       whole output channels pruned by mean |W| per layer at
                --channel_sparsity, then physically removed where the
                architecture allows (``compact.narrow``: the block-internal
                channels; residual-stream channels stay, with zeros).

and three runtimes each: ``flax`` (the harness's masked Flax model with
BatchNorm, ``jax.jit``), ``jax_export`` (the exported StableHLO module,
folded / narrow, called under jit) and ``tflite`` (the converted
flatbuffer, TFLite interpreter with its default XNNPACK delegate,
--threads threads). Latency is timed round-robin over every (model,
runtime, batch) in one run, for a single image and a batch of --batch;
medians and ratios to dense are printed, with the bytes of the dense and
sparse checkpoints (``experiments.deploy.sparse_format``) and of each exported
file. Weights are random (He init, magnitude masks): latency and bytes do
not depend on the trained values (accuracy is the harness's business).

Unstructured sparsity runs on dense kernels in every runtime here (XLA's
and XNNPACK's convolutions do not skip zeros): it shrinks the sparse
checkpoint, not the latency or the exported files. --tflite_sparse adds a
flatbuffer converted with ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

import csam_jax
from experiments import models
from experiments.deploy import compact, export, sparse_format

_WIDTH = flags.DEFINE_float("width", 0.5, "ResNet-18 channel multiplier.")
_BATCH = flags.DEFINE_integer("batch", 64, "The larger batch size.")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Unstructured sparsity.")
_CHANNEL_SPARSITY = flags.DEFINE_float(
  "channel_sparsity", 0.5, "Fraction of channels pruned per layer."
)
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Timed rounds.")
_THREADS = flags.DEFINE_integer(
  "threads", os.cpu_count(), "TFLite interpreter threads."
)
_TFLITE_SPARSE = flags.DEFINE_bool(
  "tflite_sparse", True, "Also convert with EXPERIMENTAL_SPARSITY."
)
_JSON_OUT = flags.DEFINE_string("json_out", None, "Write results as JSON.")

IMAGE_SHAPE = (32, 32, 3)
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _prunable_scores(params):
  keep = csam_jax.prunable(params)
  keep["classifier"]["kernel"] = False
  return jax.tree.map(lambda w, k: jnp.abs(w) if k else None, params, keep)


def _variants(width: float):
  """{name: (masked Deployed, portable Deployed)} of the three models."""
  module = models.get_model("resnet18", num_classes=10, width=width)
  variables = jax.jit(lambda k, x: module.init(k, x, train=False))(
    jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE))
  )
  params, stats = jax.device_get(variables["params"]), variables["batch_stats"]
  stats = jax.device_get(stats)
  spec = dict(
    form="masked",
    model="resnet18",
    num_classes=10,
    width=width,
    stem="cifar",
    dtype="float32",
    mean=list(MEAN),
    std=list(STD),
    image_shape=list(IMAGE_SHAPE),
  )
  scores = _prunable_scores(params)
  masks = {
    "dense": None,
    "unstructured": csam_jax.topk_masks(scores, _SPARSITY.value),
    "channel": csam_jax.topk_masks(
      scores, _CHANNEL_SPARSITY.value, scope="layer", structure="channel"
    ),
  }
  out = {}
  for name, mask in masks.items():
    p = params if mask is None else csam_jax.apply_masks(params, mask)
    p = jax.device_get(p)
    masked = export.Deployed(spec, {"params": p, "batch_stats": stats})
    folded = compact.fold_batchnorm("resnet18", p, stats)
    portable = export.Deployed(dict(spec, form="folded"), {"params": folded})
    if name == "channel":
      narrow, kwargs = compact.narrow("resnet18", folded, IMAGE_SHAPE, "cifar")
      portable = export.Deployed(
        dict(spec, form="narrow", narrow=kwargs), {"params": narrow}
      )
    out[name] = (masked, portable)
  return out


def _convert_tflite_sparse(saved_model_dir: str, path: str) -> int:
  import tensorflow as tf

  converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
  converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
  with open(path, "wb") as f:
    f.write(converter.convert())
  return os.path.getsize(path)


def _build(variants, tmp: str):
  """Runnable (name, runtime) -> fn(np images) and the bytes table."""
  runners, sizes = {}, {}
  for name, (masked, portable) in variants.items():
    d = os.path.join(tmp, name)
    os.makedirs(d)
    s = sizes[name] = {}
    s["dense_ckpt"] = sparse_format.save_dense(
      os.path.join(d, "dense.npz"), portable.variables
    )
    s["sparse_ckpt"] = sparse_format.save(
      os.path.join(d, "sparse.npz"), portable.variables, portable.spec
    )
    s["parameters"] = int(
      sum(x.size for x in jax.tree.leaves(portable.variables))
    )
    s["nonzero"] = int(
      sum(np.count_nonzero(x) for x in jax.tree.leaves(portable.variables))
    )
    flax_fn = jax.jit(export.logits_fn(masked))
    runners[(name, "flax")] = lambda x, f=flax_fn: f(x)
    path = os.path.join(d, "model.jax_export")
    s["jax_export"] = export.export_stablehlo(portable, path)
    exported = jax.jit(export.load_logits_fn(path))
    runners[(name, "jax_export")] = lambda x, f=exported: f(x)
    sm, tfl = os.path.join(d, "saved_model"), os.path.join(d, "model.tflite")
    s["tflite"] = export.export_tflite(portable, sm, tfl)
    runners[(name, "tflite")] = export.TFLiteRunner(tfl, _THREADS.value)
    if _TFLITE_SPARSE.value and name == "unstructured":
      sparse_path = os.path.join(d, "sparse.tflite")
      s["tflite_sparse"] = _convert_tflite_sparse(sm, sparse_path)
      runners[(name, "tflite_sparse")] = export.TFLiteRunner(
        sparse_path, _THREADS.value
      )
  return runners, sizes


def _time(runners, batches, rounds):
  """Median seconds per (name, runtime, batch), round-robin."""
  images = {
    b: np.random.RandomState(b).rand(b, *IMAGE_SHAPE).astype(np.float32)
    for b in batches
  }
  for fn in runners.values():  # compile and warm up
    for b in batches:
      for _ in range(2):
        np.asarray(fn(images[b]))
  times = {(*k, b): [] for k in runners for b in batches}
  for _ in range(rounds):
    for key, fn in runners.items():
      for b in batches:
        t0 = time.perf_counter()
        np.asarray(fn(images[b]))
        times[(*key, b)].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}


def _check_agreement(runners, batch: int) -> dict:
  x = np.random.RandomState(7).rand(batch, *IMAGE_SHAPE).astype(np.float32)
  out = {}
  for name in ("dense", "unstructured", "channel"):
    ref = np.asarray(runners[(name, "flax")](x))
    for key, fn in runners.items():
      if key[0] == name and key[1] != "flax":
        out[f"{name}/{key[1]}"] = float(np.max(np.abs(np.asarray(fn(x)) - ref)))
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # TF's SavedModel chatter
  variants = _variants(_WIDTH.value)
  with tempfile.TemporaryDirectory() as tmp:
    runners, sizes = _build(variants, tmp)
    diffs = _check_agreement(runners, 8)
    batches = (1, _BATCH.value)
    medians = _time(runners, batches, _ROUNDS.value)
  print(
    f"ResNet-18 width {_WIDTH.value}, 32x32, CPU ({os.cpu_count()} cores), "
    f"{_ROUNDS.value} rounds; unstructured s={_SPARSITY.value}, channel "
    f"s={_CHANNEL_SPARSITY.value} per layer"
  )
  print("\nbytes (ratio to dense):")
  for name, s in sizes.items():
    row = ", ".join(
      f"{k} {v:,} ({sizes['dense'][k] / v:.2f}x)"
      for k, v in s.items()
      if k in sizes["dense"] and k not in ("parameters", "nonzero")
    )
    extra = (
      f", tflite_sparse {s['tflite_sparse']:,}" if "tflite_sparse" in s else ""
    )
    print(
      f"  {name:13s} params {s['parameters']:,} nonzero {s['nonzero']:,}; "
      f"{row}{extra}"
    )
  print("\nmedian latency ms (speed-up vs dense, same runtime and batch):")
  for (name, runtime, b), t in sorted(medians.items(), key=lambda kv: kv[0][2]):
    base = medians.get(("dense", runtime, b), medians[("dense", "tflite", b)])
    print(
      f"  batch {b:3d} {name:13s} {runtime:13s} {1e3 * t:9.2f} ms "
      f"({base / t:.2f}x)"
    )
  print("\nmax |logits - flax logits|:", json.dumps(diffs))
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump(
        dict(
          sizes=sizes,
          medians_s={"/".join(map(str, k)): v for k, v in medians.items()},
          max_abs_diff=diffs,
        ),
        f,
        indent=2,
      )


if __name__ == "__main__":
  app.run(main)
