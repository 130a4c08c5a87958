"""Every random stream of a run, from one root: ``config.seed``.

`run_keys` splits the run's root key once into its named purposes:

  ==============  ===========================================================
  purpose         what draws from it
  ==============  ===========================================================
  init            the model's initial parameters (every method the same)
  stages          one key per stage role (training/methods.py ROLES);
                  a stage's step t uses ``fold_in(stage key, t)``
  data            one integer seed per stage role: the batch order and the
                  numpy/TFDS augmentation of that role's stages
  certification   CC-Cert / Clopper-Pearson / smoothing draws
                  (robustness/certification.py splits it per distribution)
  corruptions     the generated CIFAR-10-C corruptions
  flatness        the random mask swaps of the structural-flatness
                  diagnostic (experiments/robustness/flatness.py)
  ==============  ===========================================================

Streams are keyed by purpose and role, never by method, so that every
method's stages of one role see the same batches and keys, and certification
draws are common random numbers across methods.

The derivations (the ``fold_in`` tags below and the data seeds) are those
every published result of this project was computed with; changing one
changes every number, so they are fixed here and nowhere else.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from experiments.training import methods

# fold_in tags of the root key. The role keys use the role's index in
# methods.ROLES (0..3); the others sit far above any role index.
_INIT_TAG = 2**20
_ROBUSTNESS_TAG = 2**21  # then 0: certification, 1: corruptions, 2: flatness

# fold_in tags under a stage's per-step key ``fold_in(stage key, t)`` or
# its stage key (distinct from every step index they sit beside):
# the input variations of C-SAM's hinge and of the augmentation,
AUGMENT_PURPOSE = 1
# the random-direction control of the mask perturbation (under the stage
# key, above any step index),
RANDOM_DIRECTION_PURPOSE = 2**30
# CrAM's sparsity draw (under the stage key).
SPARSITY_PURPOSE = 2**30 + 1
# data seed of a role = seed * _DATA_STRIDE + role index (distinct seeds
# for every (seed, role) pair below a million roles).
_DATA_STRIDE = 1_000_003


class RunKeys(NamedTuple):
  """The run's keys by purpose (see the module docstring).

  Attributes:
    init: parameter initialisation key.
    stages: a key per stage role, ``{role: key}``.
    data: a numpy/TFDS seed per stage role, ``{role: int}``.
    certification: the certification key.
    corruptions: the corruption-evaluation key.
    flatness: the structural-flatness diagnostic's key.
  """

  init: jax.Array
  stages: dict[str, jax.Array]
  data: dict[str, int]
  certification: jax.Array
  corruptions: jax.Array
  flatness: jax.Array


def run_keys(seed: int) -> RunKeys:
  """Splits the root key of ``seed`` into the run's purposes.

  Example:
    >>> keys = run_keys(0)
    >>> sorted(keys.stages) == sorted(methods.ROLES), keys.data["from_search"]
    (True, 2)
  """
  seed = int(seed)
  root = jax.random.PRNGKey(seed)
  robustness = jax.random.fold_in(root, _ROBUSTNESS_TAG)
  return RunKeys(
    init=jax.random.fold_in(root, _INIT_TAG),
    stages={
      role: jax.random.fold_in(root, i) for i, role in enumerate(methods.ROLES)
    },
    data={
      role: seed * _DATA_STRIDE + i for i, role in enumerate(methods.ROLES)
    },
    certification=jax.random.fold_in(robustness, 0),
    corruptions=jax.random.fold_in(robustness, 1),
    flatness=jax.random.fold_in(robustness, 2),
  )
