"""The tiny model, state and batch that exact step tests share."""

import jax

from experiments import models
from experiments.training import state as state_lib

NUM_CLASSES = 3


def setup(seed: int = 0):
  """``(model, state, batch)``: tiny_cnn on 8x8x1 inputs, 3 classes, a
  batch of 8 uniform images with random labels (all from ``seed``)."""
  module = models.get_model("tiny_cnn", num_classes=NUM_CLASSES)
  model = state_lib.Model(module, (0.5,), (0.25,))
  state = state_lib.init_train_state(model, jax.random.PRNGKey(seed), (8, 8, 1))
  kx, ky = jax.random.split(jax.random.PRNGKey(seed + 1))
  batch = {
    "image": jax.random.uniform(kx, (8, 8, 8, 1)),
    "label": jax.random.randint(ky, (8,), 0, NUM_CLASSES),
  }
  return model, state, batch
