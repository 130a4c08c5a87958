"""MobileNet-V2 (Sandler et al., 2018) with a CIFAR or an ImageNet stem.

The blocks follow the widely used pytorch-cifar MobileNet-V2: every block has
a 1x1 expansion (also for expansion 1), ReLU activations, a linear 1x1
projection, and a residual connection on stride-1 blocks, through a 1x1
convolution + batch norm when the channel count changes. With the CIFAR stem
(stride-1 stem convolution and stride 1 in the second stage, for 32 px) the
network has 2,296,922 trainable parameters for 10 classes. The ImageNet stem
restores the original strides (stride-2 stem convolution and stride-2 second
stage, 32x downsampling), so the first block of the second stage loses its
projection shortcut (2,296,490 parameters for 10 classes).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.models import layers

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# Stages as (expansion, out_channels, num_blocks, stride with the CIFAR stem).
STAGE_CONFIG = (
  (1, 16, 1, 1),
  (6, 24, 2, 1),
  (6, 32, 3, 2),
  (6, 64, 4, 2),
  (6, 96, 3, 1),
  (6, 160, 3, 2),
  (6, 320, 1, 1),
)
# The ImageNet stem downsamples in the stem and in the second stage as well.
IMAGENET_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


class InvertedResidual(nn.Module):
  """Expansion 1x1 -> depthwise 3x3 -> linear projection 1x1 (+ shortcut).

  Attributes:
    expanded: channels of the expansion and depthwise convolutions.
    features: output channels.
    strides: stride of the depthwise convolution; the block is residual only
      when it is 1.
    projection: whether the (stride-1) shortcut is a 1x1 conv + batch norm.
    dtype: computation dtype.
  """

  expanded: int
  features: int
  strides: int = 1
  projection: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype)
    y = layers.conv(self.expanded, 1, name="expand_conv", **kw)(x)
    y = nn.relu(layers.batch_norm(train=train, name="expand_bn", **kw)(y))
    y = layers.conv(
      self.expanded,
      3,
      strides=self.strides,
      groups=self.expanded,
      name="depthwise_conv",
      **kw,
    )(y)
    y = nn.relu(layers.batch_norm(train=train, name="depthwise_bn", **kw)(y))
    y = layers.conv(self.features, 1, name="project_conv", **kw)(y)
    y = layers.batch_norm(train=train, name="project_bn", **kw)(y)
    if self.strides != 1:
      return y
    shortcut = x
    if self.projection:
      shortcut = layers.conv(self.features, 1, name="shortcut_conv", **kw)(x)
      shortcut_bn = layers.batch_norm(train=train, name="shortcut_bn", **kw)
      shortcut = shortcut_bn(shortcut)
    return y + shortcut


class MobileNetV2(nn.Module):
  """MobileNet-V2 with ReLU activations.

  Attributes:
    num_classes: number of output logits.
    width: channel multiplier (see ``layers.scale_channels``), applied to
      every layer including the 1280-channel head.
    stem: ``"cifar"`` (for 32 px) or ``"imagenet"`` (for 64-224 px).
    dtype: computation dtype; parameters are float32.
  """

  num_classes: int
  width: float = 1.0
  stem: str = "cifar"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps NHWC images to float32 logits of shape (batch, num_classes)."""
    kw = dict(dtype=self.dtype)
    stem_strides = 1 if self.stem == "cifar" else 2
    x = layers.conv(
      layers.scale_channels(STEM_CHANNELS, self.width),
      3,
      strides=stem_strides,
      name="stem_conv",
      **kw,
    )(x)
    x = nn.relu(layers.batch_norm(train=train, name="stem_bn", **kw)(x))

    in_channels = STEM_CHANNELS
    for stage, (expansion, channels, num_blocks, stride) in enumerate(
      STAGE_CONFIG
    ):
      if self.stem != "cifar":
        stride = IMAGENET_STAGE_STRIDES[stage]
      for block in range(num_blocks):
        strides = stride if block == 0 else 1
        # Structure decided on width-1 channels: same tree at every width.
        x = InvertedResidual(
          expanded=expansion * layers.scale_channels(in_channels, self.width),
          features=layers.scale_channels(channels, self.width),
          strides=strides,
          projection=strides == 1 and in_channels != channels,
          name=f"stage{stage + 1}_block{block + 1}",
          **kw,
        )(x, train=train)
        in_channels = channels

    x = layers.conv(
      layers.scale_channels(HEAD_CHANNELS, self.width),
      1,
      name="head_conv",
      **kw,
    )(x)
    x = nn.relu(layers.batch_norm(train=train, name="head_bn", **kw)(x))
    return layers.classifier(x, self.num_classes, self.dtype)
