"""Tests for experiments.models.

Large models are only traced (jax.eval_shape); real computation runs at tiny
widths so that the file stays fast on a CPU.
"""

from __future__ import annotations

import doctest
import functools
import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import csam_jax
from experiments import models
from experiments.models import layers

TINY_WIDTH = 1 / 16


def _variable_shapes(model, image_size, batch=1):
  x = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  return jax.eval_shape(
    lambda key, x: model.init(key, x, train=False), jax.random.key(0), x
  )


def _num_params(tree):
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _leaf_name(path):
  return path[-1].key


def _init(model, image_size, batch=4, seed=0):
  """Random variables and a batch of images in [0, 1].

  The variables have the model's shapes (``jax.eval_shape`` of its init)
  and are drawn in numpy: He-normal kernels, zero biases and running
  means, unit scales and running variances. No test here is about the
  initialisers, and compiling the bigger models' init takes 5-15 s each.
  """
  x = jax.random.uniform(
    jax.random.key(seed + 1), (batch, image_size, image_size, 3)
  )
  rng = np.random.default_rng(seed)

  def fill(path, shape):
    if _leaf_name(path) == "kernel":
      fan_in = int(np.prod(shape.shape[:-1]))
      kernel = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape.shape)
      return jnp.asarray(kernel, shape.dtype)
    if _leaf_name(path) in ("scale", "var"):
      return jnp.ones(shape.shape, shape.dtype)
    return jnp.zeros(shape.shape, shape.dtype)

  shapes = _variable_shapes(model, image_size, batch)
  return jax.tree_util.tree_map_with_path(fill, shapes), x


@functools.cache
def _tiny_width_run(name):
  """Runs ``name`` at width 1/16 on 32 px images, once per test session.

  Returns a dict with the initial variables, the images, float32 and
  bfloat16 eval-mode logits, the batch_stats after one and two train-mode
  steps and after an eval-mode call, and eval-mode logits for a batch whose
  first image is the same but whose other images differ.
  """
  model32 = models.get_model(name, num_classes=10, width=TINY_WIDTH)
  model16 = models.get_model(
    name, num_classes=10, width=TINY_WIDTH, dtype=jnp.bfloat16
  )
  variables, x = _init(model32, 32)

  @jax.jit
  def evaluate(variables, x):
    return model32.apply(variables, x, train=False, mutable=["batch_stats"])

  @jax.jit
  def train_stats(variables, x):
    _, stats = model32.apply(variables, x, train=True, mutable=["batch_stats"])
    return stats["batch_stats"]

  apply16 = jax.jit(lambda v, x: model16.apply(v, x, train=False))
  logits32, eval_stats = evaluate(variables, x)
  once = train_stats(variables, x)
  twice = train_stats({"params": variables["params"], "batch_stats": once}, x)
  other = x.at[1:].set(jax.random.uniform(jax.random.key(9), x[1:].shape))
  return dict(
    variables=variables,
    x=x,
    apply16=apply16,
    logits32=logits32,
    logits16=apply16(variables, x),
    eval_stats=eval_stats["batch_stats"],
    once=once,
    twice=twice,
    other_logits=evaluate(variables, other)[0],
  )


# Trainable parameters ("params": weights, biases, batch-norm scale and bias)
# of the pytorch-cifar reference implementations at width 1, 10 classes.
@pytest.mark.parametrize(
  "name, expected",
  [
    ("resnet18", 11_173_962),
    ("googlenet", 6_166_250),
    ("mobilenet_v2", 2_296_922),
    # 3x3 convs 3->16->32->64 (no bias) + BN scale/bias + dense 64->10:
    # 432 + 32 + 4608 + 64 + 18432 + 128 + 650.
    ("tiny_cnn", 24_346),
  ],
)
def test_param_count_cifar_stem(name, expected):
  model = models.get_model(name, num_classes=10)
  variables = _variable_shapes(model, 32)
  assert _num_params(variables["params"]) == expected


@pytest.mark.parametrize(
  "name, num_classes, expected",
  [
    # torchvision resnet18 (ImageNet, 1000 classes).
    ("resnet18", 1000, 11_689_512),
    # CIFAR count - CIFAR stem (27*192 + 192 + 384 = 5760) + ImageNet stem
    # (7x7 3->64: 9408 + 64 + 128; 1x1 64->64: 4096 + 64 + 128;
    #  3x3 64->192: 110592 + 192 + 384; total 125056).
    ("googlenet", 10, 6_166_250 - 5_760 + 125_056),
    # CIFAR count minus the stage-2 projection shortcut that becomes a
    # stride-2 block (1x1 16->24 conv + BN: 384 + 48).
    ("mobilenet_v2", 10, 2_296_922 - 432),
    ("tiny_cnn", 10, 24_346),
  ],
)
def test_param_count_imagenet_stem(name, num_classes, expected):
  model = models.get_model(name, num_classes=num_classes, stem="imagenet")
  variables = _variable_shapes(model, 224)
  assert _num_params(variables["params"]) == expected


def test_param_count_resnet18_half_width():
  # Hand count with stage channels (32, 64, 128, 256): stem 864 + 64;
  # stage1 2 * 2 * (9216 + 64); stage2 18432 + 36864 + 2048 + 3 * 128 and
  # 2 * (36864 + 128); stage3 73728 + 147456 + 8192 + 3 * 256 and
  # 2 * (147456 + 256); stage4 294912 + 589824 + 32768 + 3 * 512 and
  # 2 * (589824 + 512); dense 2560 + 10.
  model = models.get_model("resnet18", num_classes=10, width=0.5)
  assert _num_params(_variable_shapes(model, 32)["params"]) == 2_797_610


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("stem, size", [("cifar", 32), ("imagenet", 224)])
def test_output_shape(name, stem, size):
  model = models.get_model(name, num_classes=7, stem=stem)
  variables = _variable_shapes(model, size)
  x = jax.ShapeDtypeStruct((3, size, size, 3), jnp.float32)
  for train in (False, True):
    out = jax.eval_shape(
      lambda v, x, train=train: model.apply(
        v, x, train=train, mutable=["batch_stats"] if train else False
      ),
      variables,
      x,
    )
    logits = out[0] if train else out
    assert logits.shape == (3, 7)
    assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name", models.MODELS)
def test_output_shape_imagenet_stem_64px(name):
  model = models.get_model(name, num_classes=5, stem="imagenet")
  variables = _variable_shapes(model, 64)
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  logits = jax.eval_shape(
    lambda v, x: model.apply(v, x, train=False), variables, x
  )
  assert logits.shape == (2, 5)


# Conv + dense kernels: ResNet-18 = stem + 16 block convs + 3 projection
# shortcuts + dense; GoogLeNet = stem (1 or 3) + 9 inceptions * 7 convs + dense;
# MobileNet-V2 = stem + 17 blocks * 3 convs + 4 projection shortcuts (3 with
# the ImageNet stem, whose second stage starts with stride 2) + head conv +
# dense; TinyCNN = 3 convs + dense.
EXPECTED_KERNELS = {
  ("resnet18", "cifar"): 21,
  ("resnet18", "imagenet"): 21,
  ("googlenet", "cifar"): 65,
  ("googlenet", "imagenet"): 67,
  ("mobilenet_v2", "cifar"): 58,
  ("mobilenet_v2", "imagenet"): 57,
  ("tiny_cnn", "cifar"): 4,
  ("tiny_cnn", "imagenet"): 4,
}


def _params_as_arrays(name, stem):
  model = models.get_model(name, num_classes=10, stem=stem)
  shapes = _variable_shapes(model, 32 if stem == "cifar" else 64)["params"]
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


@pytest.mark.parametrize("name, stem", sorted(EXPECTED_KERNELS))
def test_kernels_are_the_ndim2_leaves(name, stem):
  params = _params_as_arrays(name, stem)
  leaves = jax.tree_util.tree_leaves_with_path(params)
  kernels = [path for path, _ in leaves if _leaf_name(path) == "kernel"]
  ndim2 = [path for path, leaf in leaves if leaf.ndim >= 2]
  assert len(kernels) == EXPECTED_KERNELS[name, stem]
  assert ndim2 == kernels


@pytest.mark.parametrize("name, stem", sorted(EXPECTED_KERNELS))
def test_prunable_finds_every_kernel(name, stem):
  params = _params_as_arrays(name, stem)
  flags = jax.tree_util.tree_leaves_with_path(csam_jax.prunable(params))
  chosen = [path for path, flag in flags if flag]
  kernels = [
    path
    for path, _ in jax.tree_util.tree_leaves_with_path(params)
    if _leaf_name(path) == "kernel"
  ]
  assert len(chosen) == EXPECTED_KERNELS[name, stem]
  assert chosen == kernels


def _conv_operand_dtypes(fn, *args):
  jaxpr = jax.make_jaxpr(fn)(*args)
  dtypes = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        dtypes.append(tuple(v.aval.dtype for v in eqn.invars))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jaxpr.jaxpr)
  return dtypes


@pytest.mark.parametrize("name", models.MODELS)
def test_bfloat16_forward(name):
  run = _tiny_width_run(name)
  variables, x = run["variables"], run["x"]
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  logits16, logits32 = run["logits16"], run["logits32"]
  assert logits16.dtype == jnp.float32
  assert logits16.shape == (4, 10)
  assert np.all(np.isfinite(logits16))
  # bfloat16 keeps ~3 significant digits: close to, but not equal to, f32.
  scale = float(jnp.max(jnp.abs(logits32)))
  np.testing.assert_allclose(logits16, logits32, atol=0.1 * scale)
  assert not np.array_equal(logits16, logits32)
  # Every convolution really runs in bfloat16 (inputs and float32 params cast).
  conv_dtypes = _conv_operand_dtypes(run["apply16"], variables, x)
  assert len(conv_dtypes) == EXPECTED_KERNELS[name, "cifar"] - 1
  bf16 = jnp.dtype(jnp.bfloat16)
  assert set(conv_dtypes) == {(bf16, bf16)}


def test_tiny_cnn_batch_stats_update_is_exact():
  model = models.get_model("tiny_cnn", num_classes=3)
  variables, x = _init(model, 8)
  _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  kernel = variables["params"]["conv1"]["kernel"]
  conv1 = jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  mean = np.mean(np.asarray(conv1, np.float64), axis=(0, 1, 2))
  var = np.var(np.asarray(conv1, np.float64), axis=(0, 1, 2))
  stats = updates["batch_stats"]["bn1"]
  # Running averages start at mean 0 / var 1 and decay by 0.9 (PyTorch's
  # momentum 0.1); flax uses the biased batch variance.
  np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-4)


@pytest.mark.parametrize("name", models.MODELS)
def test_train_flag_controls_batch_stats(name):
  run = _tiny_width_run(name)
  flat = jax.tree_util.tree_leaves_with_path(run["variables"]["batch_stats"])
  # A mean and a var for every batch norm, one after each conv.
  assert len(flat) == 2 * (EXPECTED_KERNELS[name, "cifar"] - 1)
  for (path, init), new1, new2, unchanged in zip(
    flat,
    jax.tree.leaves(run["once"]),
    jax.tree.leaves(run["twice"]),
    jax.tree.leaves(run["eval_stats"]),
    strict=True,
  ):
    np.testing.assert_array_equal(unchanged, init)
    # Training normalises with batch statistics, so both steps see the same
    # batch statistic b: new1 = 0.9 init + 0.1 b and new2 = 0.9 new1 + 0.1 b.
    init = np.asarray(init, np.float64)
    new1 = np.asarray(new1, np.float64)
    batch = (new1 - 0.9 * init) / 0.1
    np.testing.assert_allclose(
      new2, 0.9 * new1 + 0.1 * batch, rtol=1e-4, atol=1e-6, err_msg=str(path)
    )
    if _leaf_name(path) == "var":
      assert not np.array_equal(new1, init), path
  # With running averages each example's logits ignore the rest of the batch.
  np.testing.assert_allclose(
    run["other_logits"][0], run["logits32"][0], rtol=1e-5, atol=1e-6
  )
  assert not np.allclose(run["other_logits"][1:], run["logits32"][1:])


def _channel_halved(path, shape):
  """Expected shape at width 0.5 of a width-1 leaf (all channels are even)."""
  names = [getattr(k, "key", None) for k in path]
  if "classifier" in names:
    return (shape[0] // 2, *shape[1:]) if len(shape) == 2 else shape
  if len(shape) == 4:
    kh, kw, cin, cout = shape
    # Image channels (3) and depthwise kernels (1 input channel) keep cin.
    return (kh, kw, cin if cin in (1, 3) else cin // 2, cout // 2)
  return tuple(d // 2 for d in shape)


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("stem", models.STEMS)
def test_width_scales_every_channel(name, stem):
  size = 32 if stem == "cifar" else 64
  full = _variable_shapes(
    models.get_model(name, num_classes=10, stem=stem), size
  )
  half = _variable_shapes(
    models.get_model(name, num_classes=10, stem=stem, width=0.5), size
  )
  assert jax.tree.structure(full) == jax.tree.structure(half)
  for (path, a), b in zip(
    jax.tree_util.tree_leaves_with_path(full),
    jax.tree.leaves(half),
    strict=True,
  ):
    assert b.shape == _channel_halved(path, a.shape), path


def test_width_rounding():
  model = models.get_model("resnet18", num_classes=10, width=0.3)
  params = _variable_shapes(model, 32)["params"]
  assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 19)  # 19.2
  assert params["stage4_block2"]["conv2"]["kernel"].shape == (3, 3, 154, 154)
  assert layers.scale_channels(5, 0.5) == 3  # half rounds up
  assert layers.scale_channels(64, 1e-3) == 1
  assert layers.scale_channels(64, 2.0) == 128


@pytest.mark.parametrize("name", models.MODELS)
def test_minimal_width_keeps_one_channel(name):
  model = models.get_model(name, num_classes=2, width=1e-3)
  variables = _variable_shapes(model, 32)
  kernels = [
    leaf.shape
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
    if _leaf_name(path) == "kernel" and path[0].key != "classifier"
  ]
  # Every conv keeps one output channel (six after a MobileNet expansion) and
  # the tree keeps all its kernels.
  assert len(kernels) == EXPECTED_KERNELS[name, "cifar"] - 1
  expected = {1, 6} if name == "mobilenet_v2" else {1}
  assert {shape[-1] for shape in kernels} == expected
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  logits = jax.eval_shape(
    lambda v, x: model.apply(v, x, train=False), variables, x
  )
  assert logits.shape == (2, 2)


@pytest.mark.parametrize(
  "kwargs, error, match",
  [
    (dict(name="resnet50"), ValueError, "resnet18.*googlenet.*tiny_cnn"),
    (dict(stem="mnist"), ValueError, "stem.*cifar.*imagenet"),
    (dict(width=0.0), ValueError, "width"),
    (dict(width=-1.0), ValueError, "width"),
    (dict(width=float("nan")), ValueError, "width"),
    (dict(width=float("inf")), ValueError, "width"),
    (dict(width="1"), TypeError, "width"),
    (dict(dtype=jnp.float16), ValueError, "dtype.*float32.*bfloat16"),
    (dict(dtype="int32"), ValueError, "dtype.*float32.*bfloat16"),
    (dict(dtype="not-a-dtype"), ValueError, "dtype.*float32.*bfloat16"),
    (dict(num_classes=0), ValueError, "num_classes"),
    (dict(num_classes=2.5), TypeError, "num_classes"),
    (dict(num_classes=True), TypeError, "num_classes"),
  ],
)
def test_invalid_arguments(kwargs, error, match):
  args = dict(name="resnet18", num_classes=10) | kwargs
  name = args.pop("name")
  with pytest.raises(error, match=match):
    models.get_model(name, **args)


@pytest.mark.parametrize(
  "dtype", ["bfloat16", jnp.bfloat16, np.dtype("float32")]
)
def test_dtype_spellings(dtype):
  model = models.get_model("tiny_cnn", num_classes=3, dtype=dtype)
  assert model.dtype == jnp.dtype(dtype)


def test_registry():
  assert models.MODELS == ("resnet18", "googlenet", "mobilenet_v2", "tiny_cnn")
  model = models.get_model(
    "mobilenet_v2", num_classes=4, width=2, stem="imagenet"
  )
  assert isinstance(model, models.MobileNetV2)
  assert (model.num_classes, model.width, model.stem) == (4, 2.0, "imagenet")


@pytest.mark.parametrize("module", [models, layers])
def test_docstring_examples(module):
  result = doctest.testmod(module, extraglobs={"jnp": jnp}, verbose=False)
  assert result.attempted > 0
  assert result.failed == 0
