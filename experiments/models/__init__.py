"""Flax models for the experiments, and a registry to build them by name.

Every model is a ``flax.linen.Module`` called as
``model.apply({"params": p, "batch_stats": bs}, x, train=train)`` (with
``mutable=["batch_stats"]`` when ``train``) on float32 NHWC images, returning
float32 logits of shape ``(batch, num_classes)``. Every model has batch norm,
so ``batch_stats`` always exists. Masks are applied to the params pytree
(``csam_jax.apply_masks``), never inside the modules.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from experiments.models.googlenet import GoogLeNet
from experiments.models.layers import scale_channels
from experiments.models.mobilenet_v2 import MobileNetV2
from experiments.models.resnet import ResNet
from experiments.models.tiny import TinyCNN

_REGISTRY = {
  "resnet18": ResNet,
  "googlenet": GoogLeNet,
  "mobilenet_v2": MobileNetV2,
  "tiny_cnn": TinyCNN,
}
MODELS = tuple(_REGISTRY)
STEMS = ("cifar", "imagenet")
DTYPES = ("float32", "bfloat16")


def _canonical_dtype(dtype: Any) -> np.dtype:
  """Returns ``dtype`` as a numpy dtype if it is float32 or bfloat16."""
  try:
    canonical = jnp.dtype(dtype)
  except TypeError:
    canonical = None
  if canonical is None or canonical.name not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}.")
  return canonical


def get_model(
  name: str,
  *,
  num_classes: int,
  width: float = 1.0,
  stem: str = "cifar",
  dtype: Any = jnp.float32,
) -> nn.Module:
  """Builds a model by name.

  Args:
    name: one of ``MODELS``: "resnet18", "googlenet", "mobilenet_v2",
      "tiny_cnn".
    num_classes: number of output logits, a positive integer.
    width: positive channel multiplier; channel counts are rounded half up
      and are at least 1 (``scale_channels``).
    stem: "cifar" (for 32 px inputs) or "imagenet" (for 64-224 px inputs).
    dtype: computation dtype, float32 or bfloat16; parameters are float32.

  Returns:
    The (unbound) Flax module.

  Raises:
    ValueError: if any argument is invalid; the message lists valid values.
    TypeError: if ``num_classes`` is not an integer or ``width`` not a real
      number.

  >>> import jax
  >>> model = get_model("tiny_cnn", num_classes=10)
  >>> x = jnp.zeros((2, 8, 8, 3))
  >>> variables = model.init(jax.random.key(0), x, train=False)
  >>> sorted(variables)
  ['batch_stats', 'params']
  >>> model.apply(variables, x, train=False).shape
  (2, 10)
  """
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model name {name!r}; valid names: {MODELS}.")
  if isinstance(num_classes, bool) or not isinstance(
    num_classes, numbers.Integral
  ):
    raise TypeError(
      f"num_classes must be a positive integer, got {num_classes!r}."
    )
  if num_classes < 1:
    raise ValueError(
      f"num_classes must be a positive integer, got {num_classes!r}."
    )
  if isinstance(width, bool) or not isinstance(width, numbers.Real):
    raise TypeError(f"width must be a positive real number, got {width!r}.")
  if not (math.isfinite(width) and width > 0):
    raise ValueError(f"width must be a positive finite number, got {width!r}.")
  if stem not in STEMS:
    raise ValueError(f"stem must be one of {STEMS}, got {stem!r}.")
  return _REGISTRY[name](
    num_classes=int(num_classes),
    width=float(width),
    stem=stem,
    dtype=_canonical_dtype(dtype),
  )


def from_config(model_config: Any, num_classes: int) -> nn.Module:
  """The model a ``config.model`` section names (name, width, stem, dtype)."""
  return get_model(
    model_config.name,
    num_classes=num_classes,
    width=model_config.width,
    stem=model_config.stem,
    dtype=model_config.dtype,
  )


__all__ = (
  "DTYPES",
  "GoogLeNet",
  "MODELS",
  "MobileNetV2",
  "ResNet",
  "STEMS",
  "TinyCNN",
  "from_config",
  "get_model",
  "scale_channels",
)
