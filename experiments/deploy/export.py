r"""Exports a trained method as deployable artifacts.

  python -m experiments.export --workdir=workdir/quickstart --method=csam \
    --out=exports/quickstart_csam

The deployed model is the harness's: ``W * TopK(M)`` with eval-mode
BatchNorm (``experiments.robustness.evaluation.deployed_params``). Written
to ``--out``:

  sparse.npz        the deployed weights in the sparse format of
                    ``experiments.deploy.sparse_format`` (bitmask / CSR /
                    dense per
                    leaf), BatchNorm folded into the convolutions where
                    exact (``experiments.deploy.compact``; tiny_cnn, resnet18);
                    reloads bit for bit
  dense.npz         the same weights dense: the size baseline
  narrow.npz        ``structure="channel"`` only: the physically narrower
                    model (pruned channels removed, ``compact.narrow``)
  model.jax_export  ``jax.export`` (StableHLO) of the smallest exact form,
                    batch-polymorphic (``jax.export.symbolic_shape("b")``)
  saved_model/      TensorFlow SavedModel of the same function (jax2tf,
                    native serialization: an ``XlaCallModule`` op)
  model.tflite      TFLite flatbuffer converted from that SavedModel
                    (builtin ops only; runs on the XNNPACK delegate)
  manifest.json     sizes in bytes and the verification of every form
                    against the harness's logits on real test images
  config.json       the run's config (certify_model's default settings)

Every exported function maps float32 NHWC images in [0, 1] to float32
logits (the input normalisation is inside).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from experiments import config_validation, entry, models, run_artifacts
from experiments.deploy import compact, sparse_format
from experiments.robustness import evaluation
from experiments.training import state as state_lib

PyTree = Any
FORMS = ("sparse", "narrow", "jax_export", "tflite")
FILES = dict(
  sparse="sparse.npz",
  dense="dense.npz",
  narrow="narrow.npz",
  jax_export="model.jax_export",
  saved_model="saved_model",
  tflite="model.tflite",
  manifest="manifest.json",
  config="config.json",
)
# Max |logits difference| accepted against the harness's masked model:
# folding and narrowing reorder float32 sums; the portable artifacts also
# go through other compilers (XLA via StableHLO, the TFLite kernels).
FOLD_ATOL = 1e-5
NARROW_ATOL = 1e-5
EXPORT_ATOL = 1e-4


class Deployed(NamedTuple):
  """One inference form of a model.

  Attributes:
    spec: JSON-serialisable description: ``form`` ("masked", "folded" or
      "narrow"), ``model``, ``num_classes``, ``width``, ``stem``, ``dtype``,
      ``mean``, ``std``, ``image_shape`` and, for "narrow", ``narrow`` (the
      ``compact.folded_module`` kwargs).
    variables: ``{"params": ..., "batch_stats": ...}`` ("masked") or
      ``{"params": ...}``.
  """

  spec: dict[str, Any]
  variables: PyTree


def build_module(spec: dict[str, Any]):
  """The Flax module of a ``Deployed.spec``.

  Raises:
    ValueError: for an unknown form.
  """
  common = dict(
    num_classes=int(spec["num_classes"]),
    width=float(spec["width"]),
    stem=spec["stem"],
    dtype=jnp.dtype(spec["dtype"]),
  )
  if spec["form"] == "masked":
    return models.get_model(spec["model"], **common)
  if spec["form"] == "folded":
    return compact.folded_module(spec["model"], **common)
  if spec["form"] == "narrow":
    return compact.folded_module(spec["model"], **common, **spec["narrow"])
  raise ValueError(
    f"spec form must be 'masked', 'folded' or 'narrow', got {spec['form']!r}"
  )


@functools.partial(jax.jit, static_argnums=0)
def _logits(spec_json: str, variables: PyTree, images01: jax.Array):
  spec = json.loads(spec_json)
  # The same normalisation as state.apply_model (the harness's forward).
  x = (images01 - jnp.asarray(spec["mean"], jnp.float32)) / jnp.asarray(
    spec["std"], jnp.float32
  )
  logits = build_module(spec).apply(variables, x, train=False)
  return logits.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class _Apply:
  """Hashable ``(variables, images01) -> logits`` of one spec."""

  spec_json: str

  def __call__(self, variables, images01):
    return _logits(self.spec_json, variables, images01)


def logits_fn(deployed: Deployed) -> jax.tree_util.Partial:
  """``logits_fn(images01) -> logits`` with the weights as Partial args."""
  spec_json = json.dumps(deployed.spec, sort_keys=True)
  return jax.tree_util.Partial(_Apply(spec_json), deployed.variables)


def model_spec(config, model: state_lib.Model, image_shape) -> dict:
  """The ``Deployed.spec`` (form "masked") of a run's model."""
  return dict(
    form="masked",
    model=config.model.name,
    num_classes=int(model.module.num_classes),
    width=float(config.model.width),
    stem=config.model.stem,
    dtype=str(jnp.dtype(config.model.dtype)),
    mean=[float(m) for m in model.mean],
    std=[float(s) for s in model.std],
    image_shape=[int(d) for d in image_shape],
  )


def deployed_forms(config, model, state, image_shape) -> dict[str, Deployed]:
  """The masked model and, where supported, its folded and narrow forms.

  "folded" exists for ``compact.FOLDABLE`` models, "narrow" for those
  trained with ``structure="channel"`` (and a mask).
  """
  host = jax.device_get(state)
  params = jax.device_get(evaluation.deployed_params(host, config))
  spec = model_spec(config, model, image_shape)
  forms = {
    "masked": Deployed(
      spec, {"params": params, "batch_stats": host.batch_stats}
    )
  }
  if spec["model"] not in compact.FOLDABLE:
    return forms
  folded = compact.fold_batchnorm(spec["model"], params, host.batch_stats)
  forms["folded"] = Deployed(dict(spec, form="folded"), {"params": folded})
  if config.structure == "channel" and host.masks is not None:
    narrow, kwargs = compact.narrow(
      spec["model"], folded, image_shape, spec["stem"]
    )
    forms["narrow"] = Deployed(
      dict(spec, form="narrow", narrow=kwargs), {"params": narrow}
    )
  return forms


def export_stablehlo(
  deployed: Deployed, path: str, platforms: tuple[str, ...] = ("cpu",)
) -> int:
  """Writes a batch-polymorphic ``jax.export`` of the model; returns bytes.

  The weights are constants of the module; the input is
  ``float32[b, H, W, C]`` with a symbolic ``b``.
  """
  fn = logits_fn(deployed)
  (batch,) = jax.export.symbolic_shape("b")
  shape = (batch, *deployed.spec["image_shape"])
  exported = jax.export.export(jax.jit(lambda x: fn(x)), platforms=platforms)(
    jax.ShapeDtypeStruct(shape, jnp.float32)
  )
  with open(path, "wb") as f:
    f.write(exported.serialize())
  return os.path.getsize(path)


def export_tflite(deployed: Deployed, saved_model_dir: str, path: str) -> int:
  """Writes a SavedModel (jax2tf) and a TFLite flatbuffer converted from it.

  jax2tf (``jax.experimental.jax2tf``, native serialization) wraps the
  StableHLO of the model in an ``XlaCallModule`` op; the TFLite converter
  (TF 2.21) legalizes it to builtin TFLite ops. The batch dimension is
  dynamic in both (``None`` in the signature).

  Returns:
    The size of the flatbuffer in bytes.
  """
  import tensorflow as tf  # Lazy: TensorFlow is slow to import.
  from jax.experimental import jax2tf

  fn = logits_fn(deployed)
  h, w, c = deployed.spec["image_shape"]
  tf_fn = jax2tf.convert(
    lambda x: fn(x),
    polymorphic_shapes=[f"(b, {h}, {w}, {c})"],
    with_gradient=False,
    native_serialization_platforms=("cpu",),
  )
  module = tf.Module()
  module.serve = tf.function(
    tf_fn,
    autograph=False,
    input_signature=[tf.TensorSpec([None, h, w, c], tf.float32, "images")],
  )
  if os.path.exists(saved_model_dir):
    shutil.rmtree(saved_model_dir)
  tf.saved_model.save(
    module, saved_model_dir, signatures={"serving_default": module.serve}
  )
  converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  with open(path, "wb") as f:
    f.write(converter.convert())
  return os.path.getsize(path)


def directory_bytes(path: str) -> int:
  """Total size of the files under ``path`` (or of the file ``path``)."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(
    os.path.getsize(os.path.join(root, f))
    for root, _, files in os.walk(path)
    for f in files
  )


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))


def _check(name: str, diff: float, atol: float) -> dict[str, float]:
  if not diff <= atol:
    raise AssertionError(
      f"{name}: max |logits - harness logits| = {diff:.3g} > {atol:g}"
    )
  return {"max_abs_diff": diff, "atol": atol}


def _export_sparse(out, deployed, images, manifest) -> None:
  path = os.path.join(out, FILES["sparse"])
  sparse_bytes = sparse_format.save(path, deployed.variables, deployed.spec)
  dense_bytes = sparse_format.save_dense(
    os.path.join(out, FILES["dense"]), deployed.variables
  )
  variables, spec = sparse_format.load(path)
  before = np.asarray(logits_fn(deployed)(images))
  after = np.asarray(logits_fn(Deployed(spec, variables))(images))
  if not np.array_equal(before, after):
    raise AssertionError("sparse checkpoint round trip changed the logits")
  manifest["artifacts"]["sparse"] = dict(
    file=FILES["sparse"],
    form=spec["form"],
    bytes=sparse_bytes,
    dense_bytes=dense_bytes,
    ratio=dense_bytes / sparse_bytes,
    round_trip_bit_identical=True,
    encodings=sparse_format.encodings(path),
  )


def _export_portable(out, deployed, images, reference, forms, manifest):
  arts = manifest["artifacts"]
  if "jax_export" in forms:
    path = os.path.join(out, FILES["jax_export"])
    size = export_stablehlo(deployed, path, tuple(manifest["platforms"]))
    logits = load_logits_fn(path)(images)
    arts["jax_export"] = dict(
      file=FILES["jax_export"],
      form=deployed.spec["form"],
      bytes=size,
      **_check("jax_export", _max_diff(logits, reference), EXPORT_ATOL),
    )
  if "tflite" in forms:
    sm, path = (os.path.join(out, FILES[k]) for k in ("saved_model", "tflite"))
    size = export_tflite(deployed, sm, path)
    for name, file in (("saved_model", sm), ("tflite", path)):
      logits = load_logits_fn(file)(images)
      arts[name] = dict(
        file=os.path.basename(file),
        form=deployed.spec["form"],
        bytes=directory_bytes(file),
        **_check(name, _max_diff(logits, reference), EXPORT_ATOL),
      )
    assert arts["tflite"]["bytes"] == size


def export_method(
  workdir: str,
  method: str,
  out: str,
  *,
  forms: tuple[str, ...] = FORMS,
  num_images: int = 64,
  platforms: tuple[str, ...] = ("cpu",),
) -> dict[str, Any]:
  """Exports a finished method of a run (see the module docstring).

  Args:
    workdir: the run's work directory.
    method: the method to export.
    out: output directory (created; existing artifacts are replaced).
    forms: subset of ``FORMS``. "narrow" needs ``structure="channel"`` and
      a model in ``compact.FOLDABLE``.
    num_images: real test images (a seeded subset of the evaluation split)
      on which every artifact is checked against the harness's logits.
    platforms: ``jax.export`` lowering platforms.

  Returns:
    The manifest (also written to ``out/manifest.json``).

  Raises:
    ValueError: bad arguments, or "narrow" for an unsupported run.
    AssertionError: an artifact disagrees with the harness's model.
  """
  bad = [f for f in forms if f not in FORMS]
  if bad or not forms:
    raise ValueError(
      f"forms must be a non-empty subset of {FORMS}, got {forms}"
    )
  if num_images < 1:
    raise ValueError(f"num_images must be >= 1, got {num_images}")
  config, model, state = run_artifacts.load_method(workdir, method)
  info = config_validation.validate_config(config)
  all_forms = deployed_forms(config, model, state, info.image_shape)
  if "narrow" in forms and "narrow" not in all_forms:
    raise ValueError(
      "form 'narrow' needs a run with structure='channel' and a model in "
      f"{compact.FOLDABLE}; this run has structure={config.structure!r}, "
      f"model={config.model.name!r}, method={method!r}."
    )
  images, _ = evaluation.evaluation_subset(config, num_images, int(config.seed))
  reference = np.asarray(
    evaluation.make_logits_fn(model, state, config)(images)
  )
  os.makedirs(out, exist_ok=True)
  shutil.copy(os.path.join(workdir, FILES["config"]), out)
  manifest = dict(
    workdir=os.path.abspath(workdir),
    method=method,
    model=config.model.name,
    sparsity=0.0 if method.startswith("dense") else float(config.sparsity),
    sparsity_reached=evaluation.sparsity_reached(state, config),
    structure=config.structure,
    image_shape=list(info.image_shape),
    num_classes=int(info.num_classes),
    verification_images=int(images.shape[0]),
    platforms=list(platforms),
    artifacts={},
    checks={},
  )
  for name in ("folded", "narrow"):
    if name in all_forms:
      atol = FOLD_ATOL if name == "folded" else NARROW_ATOL
      diff = _max_diff(logits_fn(all_forms[name])(images), reference)
      manifest["checks"][name] = _check(name, diff, atol)
  if "narrow" in all_forms:
    path = os.path.join(out, FILES["narrow"])
    narrow = all_forms["narrow"]
    manifest["narrow"] = narrow.spec["narrow"]
    manifest["artifacts"]["narrow"] = dict(
      file=FILES["narrow"],
      form="narrow",
      bytes=sparse_format.save(path, narrow.variables, narrow.spec),
      parameters=int(sum(x.size for x in jax.tree.leaves(narrow.variables))),
      **manifest["checks"]["narrow"],
    )
  deployed = all_forms.get("folded", all_forms["masked"])
  if "sparse" in forms:
    _export_sparse(out, deployed, images, manifest)
  portable = all_forms.get("narrow", deployed)
  _export_portable(out, portable, images, reference, forms, manifest)
  with open(os.path.join(out, FILES["manifest"]), "w") as f:
    json.dump(manifest, f, indent=2)
  return manifest


class ArtifactError(ValueError):
  """An artifact (a .tflite file, a SavedModel, a .jax_export file, a sparse
  .npz checkpoint, an orbax checkpoint) that cannot be read; the message
  names the file and what is wrong with it."""


@contextlib.contextmanager
def reading(path: str, kind: str):
  """Turns any failure to read the artifact ``path`` (a ``kind``) into an
  `ArtifactError` naming it.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ArtifactError: reading it failed inside the block.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such {kind}")
  try:
    yield
  except ArtifactError:
    raise
  except Exception as e:  # noqa: BLE001 - every reader's own error type.
    raise ArtifactError(
      f"{path}: not a readable {kind} ({type(e).__name__}: "
      f"{str(e)[:300]}); truncated or overwritten? Export it again."
    ) from e


# A TFLite flatbuffer's file identifier (bytes 4-8).
TFLITE_IDENTIFIER = b"TFL3"


def _check_tflite(path: str) -> None:
  with open(path, "rb") as f:
    head = f.read(8)
  if head[4:8] != TFLITE_IDENTIFIER:
    raise ArtifactError(
      f"{path}: not a TFLite flatbuffer (bytes 4-8 are {head[4:8]!r}, not "
      f"{TFLITE_IDENTIFIER!r})"
    )


class TFLiteRunner:
  """Runs a TFLite flatbuffer on numpy batches (XNNPACK delegate, default
  in TF 2.21's interpreter for float models).

  Args:
    path: the ``.tflite`` file.
    num_threads: interpreter threads (None: TFLite's default).
  """

  def __init__(self, path: str, num_threads: int | None = None):
    import tensorflow as tf  # Lazy: TensorFlow is slow to import.

    with reading(path, "TFLite model"):
      _check_tflite(path)
      self._interpreter = tf.lite.Interpreter(
        model_path=path, num_threads=num_threads
      )
      self._input = self._interpreter.get_input_details()[0]["index"]
      output = self._interpreter.get_output_details()[0]
      self._output = output["index"]
      self.num_classes = int(output["shape"][-1])
    self._shape = None

  def __call__(self, images: np.ndarray) -> np.ndarray:
    images = np.ascontiguousarray(images, np.float32)
    if images.shape != self._shape:
      self._interpreter.resize_tensor_input(self._input, images.shape)
      self._interpreter.allocate_tensors()
      self._shape = images.shape
    self._interpreter.set_tensor(self._input, images)
    self._interpreter.invoke()
    return self._interpreter.get_tensor(self._output).copy()


class SavedModelRunner:
  """Runs an exported SavedModel (``serving_default``) on numpy batches."""

  def __init__(self, path: str):
    import tensorflow as tf  # Lazy: TensorFlow is slow to import.

    with reading(path, "SavedModel"):
      self._fn = tf.saved_model.load(path).signatures["serving_default"]
      (output,) = self._fn.structured_outputs.values()
      self.num_classes = int(output.shape[-1])
    self._tf = tf

  def __call__(self, images: np.ndarray) -> np.ndarray:
    (out,) = self._fn(images=self._tf.constant(images, np.float32)).values()
    return out.numpy()


def host_logits_fn(runner, num_classes: int):
  """A JAX-traceable ``logits_fn`` calling a host runner (TFLite /
  SavedModel) through ``jax.pure_callback``, one call per batch."""

  def run(images):
    return np.asarray(runner(np.asarray(images, np.float32)), np.float32)

  def fn(images):
    shape = jax.ShapeDtypeStruct((images.shape[0], num_classes), jnp.float32)
    return jax.pure_callback(run, shape, images, vmap_method="sequential")

  return fn


def load_logits_fn(path: str, *, num_threads: int | None = None):
  """``logits_fn(images01) -> logits`` of an exported artifact.

  Args:
    path: an export directory (its narrow.npz, else sparse.npz), a ``.npz``
      sparse checkpoint, a ``.jax_export`` file, a SavedModel directory or
      a ``.tflite`` file.
    num_threads: TFLite interpreter threads.

  Returns:
    A JAX-traceable function of float32 NHWC [0, 1] images.

  Raises:
    ValueError: ``path`` is none of these.
    ArtifactError: it is one of them but cannot be read (truncated,
      corrupted); the message names the file.
  """
  if os.path.isdir(path):
    if os.path.exists(os.path.join(path, "saved_model.pb")):
      runner = SavedModelRunner(path)
      return host_logits_fn(runner, runner.num_classes)
    for name in (FILES["narrow"], FILES["sparse"]):
      if os.path.exists(os.path.join(path, name)):
        return load_logits_fn(os.path.join(path, name))
  elif path.endswith(".npz"):
    with reading(path, "sparse checkpoint"):
      variables, spec = sparse_format.load(path)
    return logits_fn(Deployed(spec, variables))
  elif path.endswith(".jax_export"):
    with reading(path, "jax.export artifact"), open(path, "rb") as f:
      exported = jax.export.deserialize(bytearray(f.read()))
    return exported.call
  elif path.endswith(".tflite"):
    runner = TFLiteRunner(path, num_threads)
    return host_logits_fn(runner, runner.num_classes)
  raise ValueError(
    f"cannot load a model from {path!r}: expected an export directory, a "
    ".npz sparse checkpoint, a .jax_export file, a SavedModel directory or "
    "a .tflite file."
  )


def define_flags() -> dict[str, Any]:
  """Defines the command-line flags (only when run as a program, so that
  importing this module defines none)."""
  _WORKDIR = flags.DEFINE_string("workdir", None, "Work directory of the run.")
  _METHOD = flags.DEFINE_string("method", None, "Method to export, e.g. csam.")
  _OUT = flags.DEFINE_string("out", None, "Output directory.")
  _FORMS = flags.DEFINE_list("forms", list(FORMS), f"Subset of {FORMS}.")
  _NUM_IMAGES = flags.DEFINE_integer(
    "num_images", 64, "Test images for verification."
  )
  _PLATFORMS = flags.DEFINE_list(
    "platforms", ["cpu"], "jax.export platforms (cpu, cuda, rocm, tpu)."
  )
  return dict(
    workdir=_WORKDIR,
    method=_METHOD,
    out=_OUT,
    forms=_FORMS,
    num_images=_NUM_IMAGES,
    platforms=_PLATFORMS,
  )


_FLAGS: dict[str, Any] = {}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  entry.prepare_process()
  for flag in (_FLAGS[k] for k in ("workdir", "method", "out")):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required.")
  forms = tuple(_FLAGS["forms"].value)
  if "narrow" in forms:
    config = run_artifacts.load_config(_FLAGS["workdir"].value)
    if config.structure != "channel" or _FLAGS["method"].value.startswith(
      "dense"
    ):
      logging.info("structure=%r: no narrow model.", config.structure)
      forms = tuple(f for f in forms if f != "narrow")
  manifest = export_method(
    _FLAGS["workdir"].value,
    _FLAGS["method"].value,
    _FLAGS["out"].value,
    forms=forms,
    num_images=_FLAGS["num_images"].value,
    platforms=tuple(_FLAGS["platforms"].value),
  )
  for name, art in manifest["artifacts"].items():
    logging.info(
      "%-12s %10d bytes  %s",
      name,
      art["bytes"],
      ", ".join(
        f"{k}={art[k]:.3g}" for k in ("ratio", "max_abs_diff") if k in art
      ),
    )
  print(json.dumps(manifest["artifacts"], indent=1, default=str))


def run_command() -> None:
  """Defines the flags and runs ``python -m experiments.export``."""
  _FLAGS.update(define_flags())
  app.run(main)


if __name__ == "__main__":
  run_command()
