"""A tiny CNN for tests and the quickstart (fast on 8-32 px images)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from experiments.models import layers

# Channels of the three conv + batch norm + ReLU layers; the last two have
# stride 2.
CHANNELS = (16, 32, 64)


class TinyCNN(nn.Module):
  """Three 3x3 conv + batch norm + ReLU layers and a dense head.

  Attributes:
    num_classes: number of output logits.
    width: channel multiplier (see ``layers.scale_channels``).
    stem: ``"cifar"`` (first conv stride 1) or ``"imagenet"`` (first conv
      stride 2 followed by a 3x3 stride-2 max-pool, for 64-224 px).
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
    for i, channels in enumerate(CHANNELS):
      if i == 0:
        strides = 1 if self.stem == "cifar" else 2
      else:
        strides = 2
      features = layers.scale_channels(channels, self.width)
      conv = layers.conv(
        features, 3, strides=strides, name=f"conv{i + 1}", **kw
      )
      x = conv(x)
      x = nn.relu(layers.batch_norm(train=train, name=f"bn{i + 1}", **kw)(x))
      if i == 0 and self.stem != "cifar":
        x = layers.max_pool(x, 3, strides=2, padding=1)
    return layers.classifier(x, self.num_classes, self.dtype)
