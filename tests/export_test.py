"""experiments.deploy: export, compact and sparse_format."""

from __future__ import annotations

import functools
import json
import os

import export_runs
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import csam_jax
from experiments import models, run_artifacts
from experiments.deploy import compact, export, sparse_format
from experiments.robustness import evaluation


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(workdir, export dir, manifest) of the shared channel-structured run."""
  workdir = export_runs.channel_run(tmp_path_factory)
  out = str(tmp_path_factory.mktemp("export"))
  return workdir, out, export.export_method(workdir, "csam", out)


@pytest.fixture(scope="module")
def reference(exported):
  """Test images and the harness's deployed logits on them."""
  workdir, _, _ = exported
  config, model, state = run_artifacts.load_method(workdir, "csam")
  images, _ = evaluation.evaluation_subset(config, 20, seed=123)
  logits = evaluation.make_logits_fn(model, state, config)(images)
  return images, np.asarray(logits)


def test_encode_leaf_picks_the_smallest_encoding_and_round_trips():
  vector = np.zeros(64, np.float32)
  vector[::2] = np.arange(1, 33)
  vector[1] = -0.0
  # dense 256 B; bitmask 8 + 32 * 4 = 136 B.
  enc, parts = sparse_format.encode_leaf(vector)
  assert enc == "bitmask" and parts["bits"].nbytes == 8
  assert parts["values"].tolist() == list(range(1, 33))
  matrix = np.zeros((4, 300), np.float32)
  matrix[0, 299], matrix[3, 5], matrix[3, 7] = 1.5, -2.0, 3.0
  # bitmask 150 + 12 B; csr: indptr 5 x uint8 + indices 3 x uint16 + 12 B.
  enc, parts = sparse_format.encode_leaf(matrix)
  assert enc == "csr"
  assert parts["indptr"].tolist() == [0, 1, 1, 1, 3]
  assert parts["indptr"].dtype == np.uint8
  assert parts["indices"].tolist() == [299, 5, 7]
  assert parts["indices"].dtype == np.uint16
  full = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
  assert sparse_format.encode_leaf(full)[0] == "dense"
  for x in (vector, matrix, full):
    enc, parts = sparse_format.encode_leaf(x)
    back = sparse_format.decode_leaf(enc, parts, x.shape, x.dtype)
    assert back.dtype == x.dtype and np.array_equal(back, x)


def test_sparse_checkpoint_round_trip_is_bit_identical(exported, reference):
  workdir, out, manifest = exported
  art = manifest["artifacts"]["sparse"]
  assert art["round_trip_bit_identical"] and art["form"] == "folded"
  path = os.path.join(out, "sparse.npz")
  assert art["bytes"] == os.path.getsize(path) < art["dense_bytes"]
  assert art["dense_bytes"] == os.path.getsize(os.path.join(out, "dense.npz"))
  assert art["encodings"]["params/conv3/kernel"] != "dense"  # 37 of 64 pruned
  config, model, state = run_artifacts.load_method(workdir, "csam")
  folded = export.deployed_forms(config, model, state, (16, 16, 3))["folded"]
  variables, spec = sparse_format.load(path)
  assert spec == folded.spec
  for (path_a, a), (path_b, b) in zip(
    jax.tree_util.tree_leaves_with_path(variables),
    jax.tree_util.tree_leaves_with_path(folded.variables),
    strict=True,
  ):
    assert path_a == path_b and np.array_equal(a, b), path_a
  images, harness = reference
  before = np.asarray(export.logits_fn(folded)(images))
  after = np.asarray(export.logits_fn(export.Deployed(spec, variables))(images))
  assert np.array_equal(before, after)  # bit for bit
  assert np.max(np.abs(after - harness)) <= export.FOLD_ATOL


def test_channel_pruned_narrow_model_equals_the_masked_model(
  exported, reference
):
  workdir, out, manifest = exported
  config, _, state = run_artifacts.load_method(workdir, "csam")
  hard = jax.device_get(state.masks)
  kept = [
    int(np.any(hard[f"conv{i}"]["kernel"] != 0, axis=(0, 1, 2)).sum())
    for i in (1, 2, 3)
  ]
  assert manifest["narrow"]["features"] == kept
  assert sum(kept) < 16 + 32 + 64  # channels were removed
  variables, spec = sparse_format.load(os.path.join(out, "narrow.npz"))
  assert variables["params"]["conv3"]["kernel"].shape[-1] == kept[2]
  images, harness = reference
  narrow = np.asarray(
    export.logits_fn(export.Deployed(spec, variables))(images)
  )
  assert np.max(np.abs(narrow - harness)) <= 1e-5
  full = sum(
    x.size for x in jax.tree.leaves(jax.device_get(state.params)) if x.ndim >= 1
  )
  assert manifest["artifacts"]["narrow"]["parameters"] < full


def test_jax_export_and_tflite_equal_the_jax_logits(exported, reference):
  _, out, manifest = exported
  images, harness = reference
  for name in ("jax_export", "saved_model", "tflite"):
    art = manifest["artifacts"][name]
    assert art["form"] == "narrow" and art["max_abs_diff"] <= export.EXPORT_ATOL
    fn = export.load_logits_fn(os.path.join(out, art["file"]))
    for batch in (1, 7, 20):  # batch-polymorphic
      logits = np.asarray(fn(jnp.asarray(images[:batch])))
      assert logits.shape == (batch, 10)
      assert np.max(np.abs(logits - harness[:batch])) <= export.EXPORT_ATOL
  with open(os.path.join(out, "manifest.json")) as f:
    assert json.load(f)["artifacts"]["tflite"]["bytes"] == os.path.getsize(
      os.path.join(out, "model.tflite")
    )


def _module(name, **kwargs):
  if name == "resnet18":  # one block per stage: the same code, half the size
    return models.ResNet(num_classes=10, stage_sizes=(1, 1, 1, 1), **kwargs)
  return models.get_model(name, num_classes=10, **kwargs)


def _random_bn_model(name, image_shape, **kwargs):
  module = _module(name, **kwargs)
  x = np.random.RandomState(0).rand(3, *image_shape).astype(np.float32)
  variables = jax.jit(functools.partial(module.init, train=False))(
    jax.random.key(0), x
  )
  rng = np.random.RandomState(1)
  # Positive BN shifts: pruned channels then carry nonzero constants,
  # which the narrow model must keep as offsets.
  params = jax.tree.map(
    lambda a: a + 0.3 + 0.3 * rng.randn(*a.shape) if a.ndim == 1 else a,
    variables["params"],
  )
  stats = jax.tree_util.tree_map_with_path(
    lambda path, a: (
      0.1 * rng.randn(*a.shape)
      if path[-1].key == "mean"
      else rng.rand(*a.shape) + 0.5
    ).astype(np.float32),
    variables["batch_stats"],
  )
  scores = jax.tree.map(lambda a: jnp.abs(a) if a.ndim >= 2 else None, params)
  masks = csam_jax.topk_masks(scores, 0.5, structure="channel", scope="layer")
  masks["classifier"]["kernel"] = jnp.ones_like(masks["classifier"]["kernel"])
  deployed = csam_jax.apply_masks(params, masks, mode="soft")  # w * m
  masked = _apply(module, {"params": deployed, "batch_stats": stats}, x)
  return deployed, stats, x, np.asarray(masked)


def _apply(module, variables, x):
  return np.asarray(
    jax.jit(functools.partial(module.apply, train=False))(variables, x)
  )


@pytest.mark.parametrize(
  "name,image_shape,kwargs",
  [
    ("tiny_cnn", (12, 12, 3), dict(stem="cifar")),
    ("tiny_cnn", (20, 20, 3), dict(stem="imagenet")),
    ("resnet18", (8, 8, 3), dict(width=0.125)),
  ],
)
def test_fold_and_narrow_match_the_masked_model(name, image_shape, kwargs):
  params, stats, x, masked = _random_bn_model(name, image_shape, **kwargs)
  folded = compact.fold_batchnorm(name, params, stats)
  extra = dict(stage_sizes=(1, 1, 1, 1)) if name == "resnet18" else {}
  module = compact.folded_module(name, num_classes=10, **kwargs, **extra)
  out = _apply(module, {"params": folded}, x)
  # Random weights give logits up to ~100 here: float32 rounding of the
  # reordered sums is relative.
  np.testing.assert_allclose(out, masked, atol=1e-5, rtol=1e-5)
  narrow, spec = compact.narrow(
    name, folded, image_shape, kwargs.get("stem", "cifar")
  )
  assert any(spec["offsets"])  # constant channels folded into offsets
  small = compact.folded_module(name, num_classes=10, **kwargs, **extra, **spec)
  np.testing.assert_allclose(
    _apply(small, {"params": narrow}, x), masked, atol=1e-5, rtol=1e-5
  )
  sizes = [sum(a.size for a in jax.tree.leaves(t)) for t in (narrow, folded)]
  assert sizes[0] < sizes[1]


def test_unsupported_models_and_forms_are_refused():
  with pytest.raises(ValueError, match="supported models"):
    compact.fold_batchnorm("googlenet", {}, {})
  with pytest.raises(ValueError, match="supported models"):
    compact.narrow("mobilenet_v2", {}, (32, 32, 3), "cifar")
  with pytest.raises(ValueError, match="forms must be"):
    export.export_method("w", "csam", "o", forms=("onnx",))
  with pytest.raises(ValueError, match="cannot load a model"):
    export.load_logits_fn("model.onnx")


def test_a_corrupted_or_truncated_artifact_gets_an_error_naming_it(
  exported, tmp_path
):
  _, out, manifest = exported
  for name, kind in (
    ("tflite", "not a TFLite flatbuffer"),
    ("jax_export", "not a readable jax.export artifact"),
  ):
    source = os.path.join(out, manifest["artifacts"][name]["file"])
    data = open(source, "rb").read()
    for label, broken in (("garbage", b"\xff\xfe" * 64), ("cut", data[:7])):
      path = str(tmp_path / f"{label}_{os.path.basename(source)}")
      open(path, "wb").write(broken)
      with pytest.raises(export.ArtifactError, match=kind) as error:
        export.load_logits_fn(path)
      assert path in str(error.value)
  # A flatbuffer cut short after its identifier: the interpreter's error,
  # named.
  source = os.path.join(out, "model.tflite")
  path = str(tmp_path / "half.tflite")
  open(path, "wb").write(open(source, "rb").read()[:200])
  with pytest.raises(export.ArtifactError, match="half.tflite: not a readable"):
    export.load_logits_fn(path)
  sparse = str(tmp_path / "sparse.npz")
  open(sparse, "wb").write(
    open(os.path.join(out, "sparse.npz"), "rb").read()[:100]
  )
  with pytest.raises(
    export.ArtifactError, match="sparse.npz: not a readable sparse"
  ):
    export.load_logits_fn(sparse)
  saved = tmp_path / "saved_model"
  saved.mkdir()
  (saved / "saved_model.pb").write_bytes(b"\x00not a protobuf")
  with pytest.raises(export.ArtifactError, match="not a readable SavedModel"):
    export.load_logits_fn(str(saved))
  with pytest.raises(FileNotFoundError, match="no such sparse checkpoint"):
    export.load_logits_fn(str(tmp_path / "none.npz"))
