"""GoogLeNet (Szegedy et al., 2015) with a CIFAR or an ImageNet stem.

The inception modules follow the widely used pytorch-cifar GoogLeNet: every
convolution has a bias and is followed by batch norm + ReLU, and the "5x5"
branch is two stacked 3x3 convolutions; with the CIFAR stem (one 3x3 conv to
192 channels) the network has 6,166,250 trainable parameters for 10 classes.
The ImageNet stem is the original one: 7x7 stride-2 conv (64), 3x3 stride-2
max-pool, 1x1 conv (64), 3x3 conv (192), 3x3 stride-2 max-pool.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.models import layers

# Inception modules as (name, (n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj));
# "max_pool" marks a 3x3 stride-2 max-pool between them.
INCEPTION_CONFIG = (
  ("inception3a", (64, 96, 128, 16, 32, 32)),
  ("inception3b", (128, 128, 192, 32, 96, 64)),
  "max_pool",
  ("inception4a", (192, 96, 208, 16, 48, 64)),
  ("inception4b", (160, 112, 224, 24, 64, 64)),
  ("inception4c", (128, 128, 256, 24, 64, 64)),
  ("inception4d", (112, 144, 288, 32, 64, 64)),
  ("inception4e", (256, 160, 320, 32, 128, 128)),
  "max_pool",
  ("inception5a", (256, 160, 320, 32, 128, 128)),
  ("inception5b", (384, 192, 384, 48, 128, 128)),
)


class ConvBNReLU(nn.Module):
  """Convolution (with bias) followed by batch norm and ReLU.

  Attributes:
    features: output channels.
    kernel_size: side of the square kernel.
    strides: spatial stride.
    dtype: computation dtype.
  """

  features: int
  kernel_size: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = layers.conv(
      self.features,
      self.kernel_size,
      strides=self.strides,
      use_bias=True,
      dtype=self.dtype,
      name="conv",
    )(x)
    return nn.relu(
      layers.batch_norm(train=train, dtype=self.dtype, name="bn")(x)
    )


class Inception(nn.Module):
  """Four parallel branches concatenated along channels.

  Attributes:
    branch_features: (n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj), already
      scaled by the width multiplier.
    dtype: computation dtype.
  """

  branch_features: tuple[int, int, int, int, int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj = self.branch_features

    def unit(features: int, kernel_size: int, name: str) -> ConvBNReLU:
      return ConvBNReLU(features, kernel_size, dtype=self.dtype, name=name)

    y1 = unit(n1x1, 1, "branch1")(x, train=train)
    y2 = unit(n3x3red, 1, "branch2_reduce")(x, train=train)
    y2 = unit(n3x3, 3, "branch2_conv")(y2, train=train)
    y3 = unit(n5x5red, 1, "branch3_reduce")(x, train=train)
    y3 = unit(n5x5, 3, "branch3_conv1")(y3, train=train)
    y3 = unit(n5x5, 3, "branch3_conv2")(y3, train=train)
    y4 = layers.max_pool(x, 3, strides=1, padding=1)
    y4 = unit(pool_proj, 1, "branch4_proj")(y4, train=train)
    return jnp.concatenate([y1, y2, y3, y4], axis=-1)


class GoogLeNet(nn.Module):
  """GoogLeNet (Inception v1) without auxiliary classifiers.

  Attributes:
    num_classes: number of output logits.
    width: channel multiplier (see ``layers.scale_channels``).
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

    def unit(features: int, kernel_size: int, name: str, strides: int = 1):
      features = layers.scale_channels(features, self.width)
      return ConvBNReLU(
        features, kernel_size, strides=strides, dtype=self.dtype, name=name
      )

    if self.stem == "cifar":
      x = unit(192, 3, "stem_conv")(x, train=train)
    else:
      x = unit(64, 7, "stem_conv1", strides=2)(x, train=train)
      x = layers.max_pool(x, 3, strides=2, padding=1)
      x = unit(64, 1, "stem_conv2")(x, train=train)
      x = unit(192, 3, "stem_conv3")(x, train=train)
      x = layers.max_pool(x, 3, strides=2, padding=1)
    for item in INCEPTION_CONFIG:
      if item == "max_pool":
        x = layers.max_pool(x, 3, strides=2, padding=1)
        continue
      name, features = item
      scaled = tuple(layers.scale_channels(f, self.width) for f in features)
      x = Inception(scaled, dtype=self.dtype, name=name)(x, train=train)
    return layers.classifier(x, self.num_classes, self.dtype)
