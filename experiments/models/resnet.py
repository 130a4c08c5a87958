"""ResNet-18 (He et al., 2016) with a CIFAR or an ImageNet stem.

The CIFAR variant follows the widely used pytorch-cifar layout (a 3x3 stride-1
stem convolution and no max-pool; 11,173,962 trainable parameters for 10
classes); the ImageNet variant has the original 7x7 stride-2 stem convolution
and a 3x3 stride-2 max-pool (11,689,512 parameters for 1000 classes, as
torchvision's ``resnet18``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.models import layers

STAGE_CHANNELS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with an identity or 1x1-projection shortcut.

  Attributes:
    features: output channels.
    strides: stride of the first convolution and of the projection.
    projection: whether the shortcut is a 1x1 convolution + batch norm.
    dtype: computation dtype.
  """

  features: int
  strides: int = 1
  projection: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype)
    conv1 = layers.conv(
      self.features, 3, strides=self.strides, name="conv1", **kw
    )
    y = conv1(x)
    y = nn.relu(layers.batch_norm(train=train, name="bn1", **kw)(y))
    y = layers.conv(self.features, 3, name="conv2", **kw)(y)
    y = layers.batch_norm(train=train, name="bn2", **kw)(y)
    shortcut = x
    if self.projection:
      shortcut = layers.conv(
        self.features, 1, strides=self.strides, name="shortcut_conv", **kw
      )(x)
      shortcut_bn = layers.batch_norm(train=train, name="shortcut_bn", **kw)
      shortcut = shortcut_bn(shortcut)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """A ResNet of basic blocks (ResNet-18 with the default ``stage_sizes``).

  Attributes:
    num_classes: number of output logits.
    width: channel multiplier (see ``layers.scale_channels``).
    stem: ``"cifar"`` (3x3 conv, for 32 px) or ``"imagenet"`` (7x7 stride-2
      conv + 3x3 stride-2 max-pool, for 64-224 px).
    dtype: computation dtype; parameters are float32.
    stage_sizes: number of blocks in each of the four stages.
  """

  num_classes: int
  width: float = 1.0
  stem: str = "cifar"
  dtype: Any = jnp.float32
  stage_sizes: Sequence[int] = (2, 2, 2, 2)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps NHWC images to float32 logits of shape (batch, num_classes)."""
    kw = dict(dtype=self.dtype)
    stem_channels = STAGE_CHANNELS[0]
    stem_features = layers.scale_channels(stem_channels, self.width)
    if self.stem == "cifar":
      x = layers.conv(stem_features, 3, name="stem_conv", **kw)(x)
    else:
      x = layers.conv(stem_features, 7, strides=2, name="stem_conv", **kw)(x)
    x = nn.relu(layers.batch_norm(train=train, name="stem_bn", **kw)(x))
    if self.stem != "cifar":
      x = layers.max_pool(x, 3, strides=2, padding=1)

    in_channels = stem_channels
    for stage, (channels, num_blocks) in enumerate(
      zip(STAGE_CHANNELS, self.stage_sizes, strict=True)
    ):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        # The block structure is decided on width-1 channels, so that every
        # width has the same parameter tree (and the same prunable leaves).
        x = BasicBlock(
          layers.scale_channels(channels, self.width),
          strides=strides,
          projection=strides != 1 or in_channels != channels,
          name=f"stage{stage + 1}_block{block + 1}",
          **kw,
        )(x, train=train)
        in_channels = channels
    return layers.classifier(x, self.num_classes, self.dtype)
