r"""Worked example: C-SAM mask search on the scikit-learn digits with an MLP.

Three stages on the 1,797 real 8x8 digits that ship with scikit-learn:
pretrain a dense MLP, search a 90%-sparse mask with C-SAM (weights frozen),
fine-tune the weights under the fixed hard mask. Pure JAX + optax + csam_jax.

  python examples/digits_mlp.py --sparsity=0.9

Prints the test accuracy after each stage and the sparsity reached.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from sklearn import datasets, model_selection

import csam_jax

_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Fraction of weights pruned.")
_STEPS = flags.DEFINE_integer("steps", 300, "Steps per stage.")
_SEED = flags.DEFINE_integer("seed", 0, "Root PRNG seed.")


class Data(NamedTuple):
  x_train: jax.Array
  y_train: jax.Array
  x_test: jax.Array
  y_test: jax.Array


class Result(NamedTuple):
  dense_accuracy: float
  search_accuracy: float
  finetune_accuracy: float
  sparsity: float
  masks: dict
  params: dict


def load_digits(seed: int = 0) -> Data:
  """The sklearn digits, pixels scaled to [0, 1], stratified 80/20 split."""
  digits = datasets.load_digits()
  x = (digits.data / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
    x, y, test_size=0.2, stratify=y, random_state=seed
  )
  return Data(*(jnp.asarray(a) for a in (x_tr, y_tr, x_te, y_te)))


def init_mlp(key: jax.Array, sizes=(64, 128, 128, 10)) -> dict:
  """He-initialised MLP parameters {"layer_i": {"kernel", "bias"}}."""
  params = {}
  for i, (fan_in, fan_out) in enumerate(
    zip(sizes[:-1], sizes[1:], strict=True)
  ):
    key, sub = jax.random.split(key)
    params[f"layer_{i}"] = {
      "kernel": jax.random.normal(sub, (fan_in, fan_out))
      * jnp.sqrt(2.0 / fan_in),
      "bias": jnp.zeros(fan_out),
    }
  return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
  layers = [params[k] for k in sorted(params)]
  for layer in layers[:-1]:
    x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
  return x @ layers[-1]["kernel"] + layers[-1]["bias"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(params: dict, data: Data) -> float:
  return float(
    jnp.mean(jnp.argmax(mlp(params, data.x_test), -1) == data.y_test)
  )


def _optimize(loss_fn: Callable, tree, tx, steps: int, csam: bool = False):
  """Full-batch optimisation of ``loss_fn(tree)``; C-SAM needs grad_fn."""
  grad = jax.grad(loss_fn)

  @jax.jit
  def step(tree, state):
    extra = {"grad_fn": lambda t, _: grad(t)} if csam else {}
    updates, state = tx.update(grad(tree), state, tree, **extra)
    return optax.apply_updates(tree, updates), state

  state = tx.init(tree)
  for _ in range(steps):
    tree, state = step(tree, state)
  return tree


def run(sparsity: float = 0.9, steps: int = 300, seed: int = 0) -> Result:
  """Pretrain, C-SAM mask search (frozen weights), fine-tune."""
  data = load_digits(seed)
  key = jax.random.key(seed)
  params = init_mlp(key)

  def dense_loss(p):
    return cross_entropy(mlp(p, data.x_train), data.y_train)

  params = _optimize(dense_loss, params, optax.adam(1e-2), steps)
  dense_acc = accuracy(params, data)

  # Mask search: HYDRA-style score init, STE forward with the hard mask,
  # mask-space SAM, projection to [0, 1] (csam_jax.csam).
  masks = csam_jax.init_masks(params, sparsity=sparsity, method="hydra")

  def mask_loss(m):
    pruned = csam_jax.apply_masks(params, m, mode="ste", sparsity=sparsity)
    ce = cross_entropy(mlp(pruned, data.x_train), data.y_train)
    return ce + 0.1 * csam_jax.objectives.mask_consistency(m, sparsity)

  tx = csam_jax.csam(learning_rate=0.1, rho=0.05)
  masks = _optimize(mask_loss, masks, tx, steps, csam=True)
  hard = csam_jax.topk_masks(masks, sparsity)
  search_acc = accuracy(csam_jax.apply_masks(params, hard), data)

  def finetune_loss(p):
    pruned = csam_jax.apply_masks(p, hard)
    return cross_entropy(mlp(pruned, data.x_train), data.y_train)

  params = _optimize(finetune_loss, params, optax.adam(3e-3), steps)
  final = csam_jax.apply_masks(params, hard)
  return Result(
    dense_accuracy=dense_acc,
    search_accuracy=search_acc,
    finetune_accuracy=accuracy(final, data),
    sparsity=csam_jax.sparsity(hard)["global"],
    masks=hard,
    params=final,
  )


def main(argv):
  del argv
  result = run(_SPARSITY.value, _STEPS.value, _SEED.value)
  print(f"dense test accuracy:              {result.dense_accuracy:.4f}")
  print(f"after C-SAM mask search (hard):   {result.search_accuracy:.4f}")
  print(f"after fine-tuning (hard mask):    {result.finetune_accuracy:.4f}")
  print(f"sparsity of the final hard mask:  {result.sparsity:.4f}")


if __name__ == "__main__":
  app.run(main)
