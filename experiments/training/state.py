"""The training state and the model function shared by every stage."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Everything a stage needs to continue from a checkpoint.

  Attributes:
    params: the model weights (dense; masks are applied in the forward pass).
    batch_stats: BatchNorm running statistics. Under SAM and C-SAM they are
      updated from the clean (unperturbed) forward pass only; the passes at
      the perturbed point and on transformed inputs discard their updates.
    masks: masks pytree (float32 leaves on prunable kernels, None elsewhere;
      soft scores during a search stage, hard 0/1 afterwards) or None for
      dense models.
    opt_state: the optimizer state of the current stage.
    step: int32 scalar, number of steps done in the current stage.
    key: uint32 raw PRNG key data of the current stage (per-step keys are
      ``fold_in(key, step)``).
  """

  params: PyTree
  batch_stats: PyTree
  masks: PyTree
  opt_state: PyTree
  step: jax.Array
  key: jax.Array


class Model(NamedTuple):
  """A Flax module and the per-channel input normalisation of its data.

  Attributes:
    module: the ``flax.linen.Module``.
    mean: per-channel mean of the [0, 1] pixels.
    std: per-channel standard deviation of the [0, 1] pixels.
  """

  module: nn.Module
  mean: tuple[float, ...]
  std: tuple[float, ...]


def apply_model(
  model: Model,
  params: PyTree,
  batch_stats: PyTree,
  images01: jax.Array,
  *,
  train: bool,
) -> tuple[jax.Array, PyTree]:
  """Normalises [0, 1] images and runs the model.

  Normalisation happens here (not in the input pipeline) so that input
  variations, corruptions and certification all act on [0, 1] pixels.

  Args:
    model: the model and its normalisation constants.
    params: (masked) weights.
    batch_stats: BatchNorm statistics.
    images01: float32 NHWC images in [0, 1].
    train: batch statistics (and their update) if True, running ones if not.

  Returns:
    ``(logits float32, new batch_stats)``; the batch_stats are unchanged when
    ``train`` is False.
  """
  x = (images01 - jnp.asarray(model.mean, jnp.float32)) / jnp.asarray(
    model.std, jnp.float32
  )
  variables = {"params": params, "batch_stats": batch_stats}
  if not train:
    logits = model.module.apply(variables, x, train=False)
    return logits.astype(jnp.float32), batch_stats
  logits, updates = model.module.apply(
    variables, x, train=True, mutable=["batch_stats"]
  )
  return logits.astype(jnp.float32), updates["batch_stats"]


# PRNG implementations for the parameter initialisation (config.model.
# init_prng). XLA compiles the initialisation of a big model much faster
# with "rbg" (one RngBitGenerator op per draw) than with "threefry" (the
# hash unrolled per draw): GoogLeNet 35.8 s vs 19.9 s of compilation
# (benchmarks/startup.py has the current figures).
INIT_PRNGS = ("rbg", "unsafe_rbg", "threefry")


def init_key(key: jax.Array, impl: str) -> jax.Array:
  """The key of the parameter initialisation, derived from ``key``.

  Args:
    key: the run's raw (uint32[2], threefry) initialisation key.
    impl: one of ``INIT_PRNGS``. "threefry" returns ``key`` itself (the
      initialisation of earlier versions); "rbg" and "unsafe_rbg" wrap 128
      bits drawn from ``key`` with threefry, so the initialisation is a
      function of the seed, but a different draw than threefry's, and
      XLA's RngBitGenerator streams may differ across backends and JAX
      versions.

  Returns:
    A PRNG key for ``model.init``.

  Raises:
    ValueError: unknown ``impl``.

  Example:
    >>> import jax
    >>> k = init_key(jax.random.PRNGKey(0), "rbg")
    >>> str(jax.random.key_impl(k)), k.shape
    ('rbg', ())
  """
  if impl not in INIT_PRNGS:
    raise ValueError(
      f"config.model.init_prng must be one of {INIT_PRNGS}, got {impl!r}."
    )
  if impl == "threefry":
    return key
  bits = jax.random.bits(key, (4,), jnp.uint32)
  return jax.random.wrap_key_data(bits, impl=impl)


def init_train_state(
  model: Model, key: jax.Array, image_shape: tuple[int, int, int]
) -> TrainState:
  """Initialises params and batch_stats; masks and optimizer state empty.

  Args:
    model: the model.
    key: PRNG key for the parameter initialisation.
    image_shape: (H, W, C) of the inputs.

  Returns:
    A TrainState with ``masks=None``, ``opt_state=None`` and ``step=0``.
  """
  variables = model.module.init(
    key, jnp.zeros((1, *image_shape), jnp.float32), train=False
  )
  return TrainState(
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    masks=None,
    opt_state=None,
    step=jnp.zeros((), jnp.int32),
    key=jnp.zeros((2,), jnp.uint32),
  )
