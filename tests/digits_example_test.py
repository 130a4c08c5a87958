"""The worked example: pretrain, C-SAM mask search, fine-tune on digits."""

import jax
import numpy as np

from examples import digits_mlp


def test_worked_example_reaches_exact_sparsity_and_accuracy():
  result = digits_mlp.run(sparsity=0.9, steps=150, seed=0)
  leaves = jax.tree.leaves(result.masks)
  total = sum(m.size for m in leaves)
  zeros = sum(int(np.sum(np.asarray(m) == 0)) for m in leaves)
  assert zeros == round(0.9 * total)
  assert result.sparsity == zeros / total
  # Pruned weights are exactly zero in the deployed params.
  for name, mask in result.masks.items():
    kernel = np.asarray(result.params[name]["kernel"])
    assert np.all(kernel[np.asarray(mask) == 0] == 0)
  # 360 test digits; a dense MLP gets ~97%; 90% sparse after fine-tuning
  # must stay within a few points of it.
  assert result.dense_accuracy > 0.93
  assert result.finetune_accuracy > 0.93
  assert result.search_accuracy > 0.85
