"""Compact inference models: BatchNorm folding and physical channel removal.

A trained model is deployed as ``W * TopK(M)`` with eval-mode BatchNorm
(running statistics). Two exact rewrites make it smaller and simpler:

* **Folding** (``fold_batchnorm``): every convolution directly followed by a
  BatchNorm becomes one convolution with a bias,
  ``W' = W * s``, ``b' = beta - mean * s`` with
  ``s = gamma / sqrt(var + eps)`` (per output channel). Exact in real
  arithmetic; in float32 the logits agree to float rounding. A pruned
  (all-zero) output channel stays all-zero after folding, so the sparsity
  pattern is unchanged.
* **Narrowing** (``narrow``, for ``structure="channel"``): an output channel
  whose folded kernel column is all zero computes the constant ``relu(b')``
  at every position. It is removed from its convolution, and its constant
  contribution to the next layer is kept exactly: for a convolution, as a
  precomputed per-position offset map (the zero padding makes the border
  positions differ, so a per-channel bias would not be exact); for the
  global-average-pool + dense head, as a bias. The narrow model is tied to
  the input size it was built for (the offset maps have its spatial shape).

Supported models: ``tiny_cnn`` (all three convolutions narrowed) and
``resnet18`` (folding everywhere; narrowing of the block-internal channels,
the outputs of each block's ``conv1``). Channels on the residual stream (stem,
``conv2`` and shortcut outputs) are shared through the identity shortcuts
and are kept at full width (their pruned columns stay as zeros); the
classifier keeps all its outputs. Other models (``googlenet``,
``mobilenet_v2``) are refused with a ValueError.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments.models import layers
from experiments.models import resnet as resnet_lib
from experiments.models import tiny as tiny_lib

PyTree = Any
FOLDABLE = ("tiny_cnn", "resnet18")


class FoldedTinyCNN(nn.Module):
  """``TinyCNN`` with BatchNorm folded into the convolutions.

  Attributes:
    num_classes: number of logits.
    features: output channels of the three convolutions.
    offsets: per convolution, whether it adds a constant offset map
      (``conv<i>_offset`` param, shape (H, W, C)) before its ReLU.
    stem: "cifar" or "imagenet" (as ``TinyCNN``).
    dtype: computation dtype.
  """

  num_classes: int
  features: tuple[int, ...]
  offsets: tuple[bool, ...] = (False, False, False)
  stem: str = "cifar"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # Inference only: no BatchNorm left.
    for i, features in enumerate(self.features):
      strides = 1 if (i == 0 and self.stem == "cifar") else 2
      x = layers.conv(
        features,
        3,
        strides=strides,
        use_bias=True,
        dtype=self.dtype,
        name=f"conv{i + 1}",
      )(x)
      if self.offsets[i]:
        x = x + self.param(
          f"conv{i + 1}_offset", nn.initializers.zeros, x.shape[1:]
        )
      x = nn.relu(x)
      if i == 0 and self.stem != "cifar":
        x = layers.max_pool(x, 3, strides=2, padding=1)
    return layers.classifier(x, self.num_classes, self.dtype)


class FoldedBasicBlock(nn.Module):
  """``resnet.BasicBlock`` with folded BatchNorm and ``hidden`` channels
  between its two convolutions (``conv2_offset`` when ``offset``)."""

  features: int
  hidden: int
  strides: int = 1
  projection: bool = False
  offset: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, use_bias=True)
    y = layers.conv(self.hidden, 3, strides=self.strides, name="conv1", **kw)
    y = nn.relu(y(x))
    y = layers.conv(self.features, 3, name="conv2", **kw)(y)
    if self.offset:
      y = y + self.param("conv2_offset", nn.initializers.zeros, y.shape[1:])
    shortcut = x
    if self.projection:
      shortcut = layers.conv(
        self.features, 1, strides=self.strides, name="shortcut_conv", **kw
      )(x)
    return nn.relu(y + shortcut)


class FoldedResNet(nn.Module):
  """``resnet.ResNet`` with folded BatchNorm; ``hidden`` (one per block, in
  block order) sets each block's internal width, ``offsets`` its
  ``conv2_offset``; None means the full width / no offsets."""

  num_classes: int
  width: float = 1.0
  stem: str = "cifar"
  dtype: Any = jnp.float32
  stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
  hidden: tuple[int, ...] | None = None
  offsets: tuple[bool, ...] | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train
    kw = dict(dtype=self.dtype)
    stem_features = layers.scale_channels(
      resnet_lib.STAGE_CHANNELS[0], self.width
    )
    k, s = (3, 1) if self.stem == "cifar" else (7, 2)
    x = layers.conv(
      stem_features, k, strides=s, use_bias=True, name="stem_conv", **kw
    )(x)
    x = nn.relu(x)
    if self.stem != "cifar":
      x = layers.max_pool(x, 3, strides=2, padding=1)
    in_channels, index = resnet_lib.STAGE_CHANNELS[0], 0
    for stage, (channels, num_blocks) in enumerate(
      zip(resnet_lib.STAGE_CHANNELS, self.stage_sizes, strict=True)
    ):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        features = layers.scale_channels(channels, self.width)
        x = FoldedBasicBlock(
          features,
          features if self.hidden is None else self.hidden[index],
          strides=strides,
          projection=strides != 1 or in_channels != channels,
          offset=False if self.offsets is None else self.offsets[index],
          name=f"stage{stage + 1}_block{block + 1}",
          **kw,
        )(x)
        in_channels, index = channels, index + 1
    return layers.classifier(x, self.num_classes, self.dtype)


def _fold_pair(conv: dict, bn: dict, stats: dict) -> dict:
  """``{"kernel", "bias"}`` of ``BN(conv(x))`` (eval mode) as one conv."""
  scale = bn["scale"] * jax.lax.rsqrt(stats["var"] + layers.BN_EPSILON)
  return {
    "kernel": conv["kernel"] * scale,
    "bias": bn["bias"] - stats["mean"] * scale,
  }


def _check_model(name: str) -> None:
  if name not in FOLDABLE:
    raise ValueError(
      f"model {name!r} cannot be folded or narrowed; supported models: "
      f"{FOLDABLE}."
    )


def _fold_tiny(params: PyTree, stats: PyTree) -> PyTree:
  out = {"classifier": dict(params["classifier"])}
  for i in range(len(tiny_lib.CHANNELS)):
    out[f"conv{i + 1}"] = _fold_pair(
      params[f"conv{i + 1}"], params[f"bn{i + 1}"], stats[f"bn{i + 1}"]
    )
  return out


def _fold_resnet(params: PyTree, stats: PyTree) -> PyTree:
  out = {
    "classifier": dict(params["classifier"]),
    "stem_conv": _fold_pair(
      params["stem_conv"], params["stem_bn"], stats["stem_bn"]
    ),
  }
  for name, block in params.items():
    if not name.startswith("stage"):
      continue
    folded = {}
    for conv, bn in (
      ("conv1", "bn1"),
      ("conv2", "bn2"),
      ("shortcut_conv", "shortcut_bn"),
    ):
      if conv in block:
        folded[conv] = _fold_pair(block[conv], block[bn], stats[name][bn])
    out[name] = folded
  return out


def fold_batchnorm(name: str, params: PyTree, batch_stats: PyTree) -> PyTree:
  """Folds eval-mode BatchNorm into the preceding convolutions.

  Args:
    name: model name, one of ``FOLDABLE``.
    params: (deployed, masked) params of ``experiments.models.get_model``.
    batch_stats: their BatchNorm running statistics.

  Returns:
    params of ``FoldedTinyCNN`` / ``FoldedResNet`` (full width).

  Raises:
    ValueError: for a model that is not foldable.
  """
  _check_model(name)
  fold = _fold_tiny if name == "tiny_cnn" else _fold_resnet
  return fold(params, batch_stats)


def folded_module(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
  """The folded module of ``name`` (``hidden`` / ``features`` / ``offsets``
  in ``kwargs`` give a narrow one; ``width``, ``stem``, ``dtype`` as
  ``get_model``)."""
  _check_model(name)
  if name == "tiny_cnn":
    width = kwargs.pop("width", 1.0)
    kwargs.setdefault(
      "features",
      tuple(layers.scale_channels(c, width) for c in tiny_lib.CHANNELS),
    )
    kwargs = {
      k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()
    }
    return FoldedTinyCNN(num_classes=num_classes, **kwargs)
  kwargs = {
    k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()
  }
  return FoldedResNet(num_classes=num_classes, **kwargs)


def _kept(kernel: jax.Array) -> np.ndarray:
  """Output channels of a kernel with at least one nonzero weight (at least
  one channel is kept: Flax layers need a positive width)."""
  k = np.asarray(kernel)
  kept = np.any(k != 0, axis=tuple(range(k.ndim - 1)))
  if not kept.any():
    kept[0] = True  # Computed normally, so still exact.
  return kept


def _drop_inputs(
  consumer: dict, kept: np.ndarray, bias: jax.Array, hw, strides
):
  """Removes the producer's dropped channels from a 3x3/1x1 consumer conv.

  The dropped channels carry the constants ``relu(bias)``; their effect on
  the consumer (with its zero padding) is an input-independent map.

  Returns:
    ``(consumer params with kept input channels, offset map or None)``.
  """
  kernel = consumer["kernel"]
  const = np.maximum(np.asarray(bias), 0.0)[~kept]
  out = dict(consumer, kernel=kernel[..., kept, :])
  if not np.any(const != 0):
    return out, None
  pad = kernel.shape[0] // 2
  image = jnp.broadcast_to(jnp.asarray(const), (1, *hw, const.size))
  offset = jax.lax.conv_general_dilated(
    image,
    kernel[..., ~kept, :],
    (strides, strides),
    ((pad, pad), (pad, pad)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    precision=jax.lax.Precision.HIGHEST,
  )
  return out, offset[0]


def _drop_outputs(conv: dict, kept: np.ndarray, offset=None) -> dict:
  out = {"kernel": conv["kernel"][..., kept], "bias": conv["bias"][kept]}
  return out, (None if offset is None else offset[..., kept])


def _conv_out(size: int, kernel: int, stride: int) -> int:
  pad = kernel // 2
  return (size + 2 * pad - kernel) // stride + 1


def _narrow_tiny(params, image_hw, stem):
  """Narrow FoldedTinyCNN params and module kwargs (see ``narrow``)."""
  n = len(tiny_lib.CHANNELS)
  names = [f"conv{i + 1}" for i in range(n)]
  kept = [_kept(params[c]["kernel"]) for c in names]
  hw = tuple(image_hw)
  convs = {c: dict(params[c]) for c in names}
  offsets = [None] * n
  for i in range(n):
    stride = 1 if (i == 0 and stem == "cifar") else 2
    if i > 0:
      convs[names[i]], offsets[i] = _drop_inputs(
        convs[names[i]], kept[i - 1], params[names[i - 1]]["bias"], hw, stride
      )
    hw = tuple(_conv_out(h, 3, stride) for h in hw)
    if i == 0 and stem != "cifar":
      hw = tuple(_conv_out(h, 3, 2) for h in hw)  # the 3x3/2 max-pool
  out = {}
  for i, c in enumerate(names):
    out[c], offsets[i] = _drop_outputs(convs[c], kept[i], offsets[i])
    if offsets[i] is not None:
      out[f"{c}_offset"] = offsets[i]
  head = params["classifier"]
  const = np.maximum(np.asarray(params[names[-1]]["bias"]), 0.0)[~kept[-1]]
  out["classifier"] = {
    "kernel": head["kernel"][kept[-1]],
    "bias": head["bias"] + jnp.asarray(const) @ head["kernel"][~kept[-1]],
  }
  spec = dict(
    features=[int(k.sum()) for k in kept],
    offsets=[o is not None for o in offsets],
  )
  return out, spec


def _narrow_resnet(params, image_hw, stem):
  hw = tuple(
    _conv_out(h, 3 if stem == "cifar" else 7, 1 if stem == "cifar" else 2)
    for h in image_hw
  )
  if stem != "cifar":
    hw = tuple(_conv_out(h, 3, 2) for h in hw)
  out = {k: v for k, v in params.items() if not k.startswith("stage")}
  hidden, offsets = [], []
  blocks = sorted(
    (k for k in params if k.startswith("stage")),
    key=lambda k: tuple(int(p) for p in k[5:].split("_block")),
  )
  for name in blocks:
    block = dict(params[name])
    stride = (
      2 if (name.endswith("_block1") and not name.startswith("stage1")) else 1
    )
    kept = _kept(block["conv1"]["kernel"])
    hw = tuple(_conv_out(h, 3, stride) for h in hw)
    block["conv2"], offset = _drop_inputs(
      block["conv2"], kept, block["conv1"]["bias"], hw, 1
    )
    block["conv1"], _ = _drop_outputs(block["conv1"], kept)
    if offset is not None:
      block["conv2_offset"] = offset
    out[name] = block
    hidden.append(int(kept.sum()))
    offsets.append(offset is not None)
  return out, dict(hidden=hidden, offsets=offsets)


def narrow(
  name: str, folded_params: PyTree, image_shape: tuple[int, ...], stem: str
) -> tuple[PyTree, dict[str, Any]]:
  """Removes all-zero output channels from a folded model (exactly).

  Args:
    name: "tiny_cnn" or "resnet18".
    folded_params: output of ``fold_batchnorm``.
    image_shape: (H, W, C) of the inputs the narrow model will take.
    stem: the model's stem ("cifar" or "imagenet").

  Returns:
    ``(narrow params, module kwargs)``: ``folded_module(name,
    num_classes=..., width=..., stem=stem, **kwargs)`` applied to the narrow
    params gives the folded model's logits up to float rounding. kwargs
    hold ``features`` and ``offsets`` (tiny_cnn) or ``hidden`` and
    ``offsets`` (resnet18).

  Raises:
    ValueError: for a model other than tiny_cnn / resnet18.
  """
  _check_model(name)
  hw = tuple(int(d) for d in image_shape[:2])
  if name == "tiny_cnn":
    return _narrow_tiny(folded_params, hw, stem)
  return _narrow_resnet(folded_params, hw, stem)
