"""Layer helpers shared by the model definitions.

Every model builds its convolutions, batch norms, pools and classifier head
through these helpers, so that the conventions below hold everywhere:

* parameters are always float32 (``param_dtype``); computation runs in the
  module's ``dtype`` (float32 or bfloat16);
* batch norm follows PyTorch defaults (running-average decay 0.9, i.e. PyTorch
  momentum 0.1, and epsilon 1e-5) and keeps running statistics in the
  ``batch_stats`` collection;
* convolution and pooling padding is explicit and symmetric, as in PyTorch
  (``"SAME"`` would pad stride-2 layers asymmetrically);
* the classifier returns float32 logits whatever the compute dtype.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He (Kaiming) normal init with fan_out, the initializer torchvision uses for
# the convolutions of ResNet and MobileNet-V2.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def scale_channels(channels: int, width: float) -> int:
  """Scales a channel count by a width multiplier.

  Rounds half up (Python's ``round`` rounds half to even) and never returns
  less than one channel.

  Args:
    channels: channel count of the width-1 architecture.
    width: positive channel multiplier.

  Returns:
    ``max(1, floor(channels * width + 0.5))``.

  >>> scale_channels(64, 0.5), scale_channels(64, 0.3), scale_channels(16, 0.01)
  (32, 19, 1)
  """
  return max(1, math.floor(channels * width + 0.5))


def conv(
  features: int,
  kernel_size: int,
  *,
  dtype: Any,
  name: str,
  strides: int = 1,
  padding: int | None = None,
  groups: int = 1,
  use_bias: bool = False,
) -> nn.Conv:
  """A square convolution with PyTorch-style symmetric padding.

  Args:
    features: output channels.
    kernel_size: side of the square kernel.
    dtype: computation dtype.
    name: submodule name.
    strides: stride in both spatial dimensions.
    padding: pixels of zero padding on every side; defaults to
      ``kernel_size // 2``.
    groups: ``feature_group_count`` (input channels for depthwise).
    use_bias: whether the convolution has a bias.

  Returns:
    A ``flax.linen.Conv`` with float32 parameters.
  """
  pad = kernel_size // 2 if padding is None else padding
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    strides=(strides, strides),
    padding=((pad, pad), (pad, pad)),
    feature_group_count=groups,
    use_bias=use_bias,
    dtype=dtype,
    param_dtype=jnp.float32,
    kernel_init=conv_kernel_init,
    name=name,
  )


def batch_norm(*, train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """Batch norm with PyTorch defaults; batch statistics when ``train``.

  Args:
    train: use (and update) batch statistics if True, else running averages.
    dtype: computation dtype (reductions are always float32).
    name: submodule name.

  Returns:
    A ``flax.linen.BatchNorm`` over the channel (last) axis.
  """
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )


def max_pool(
  x: jax.Array, window: int, strides: int, padding: int
) -> jax.Array:
  """Max pooling of NHWC ``x`` with symmetric (-inf) padding, as PyTorch."""
  pad = ((padding, padding), (padding, padding))
  return nn.max_pool(x, (window, window), (strides, strides), pad)


def classifier(x: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
  """Global average pooling, a dense layer, and float32 logits.

  Args:
    x: NHWC features.
    num_classes: number of logits.
    dtype: computation dtype of the dense layer.

  Returns:
    float32 logits of shape ``(batch, num_classes)``.
  """
  x = jnp.mean(x, axis=(1, 2))
  x = nn.Dense(
    num_classes, dtype=dtype, param_dtype=jnp.float32, name="classifier"
  )(x)
  return x.astype(jnp.float32)
