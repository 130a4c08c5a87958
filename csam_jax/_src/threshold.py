"""Global magnitude masks at a threshold, with CrAM's and SAFE's tie rules.

CrAM (Peste et al., 2023) and SAFE (Lee et al., 2025) prune every scored
entry against one global threshold taken at a sorted position of the scores,
and do not break ties (unlike `csam_jax.topk_masks`, which prunes exact
counts and breaks ties by index). With ``N`` scores and sparsity ``s``:

  ============  =================================  =======================
  ties          threshold                          kept
  ============  =================================  =======================
  ``"prune"``   the ``ceil(N (1 - s))``-th         ``|x| > thr``: ties at
  (CrAM)        largest score (``s = 0``: none)    thr pruned, so ``k - 1``
                                                   kept without ties
  ``"keep"``    ascending-sorted scores at         ``|x| >= thr``: ties
  (SAFE)        ``floor(s N)``                     kept
  ============  =================================  =======================

Both are expressed by the threshold's 0-based ascending position, its
``rank`` (-1: nothing pruned), so a rank drawn at run time (CrAM's random
sparsity) gives the same masks as the host computation.
"""

import math

import jax
import jax.numpy as jnp

from csam_jax._src import topk, validation
from csam_jax._src.tree_utils import PyTree

TIES = ("prune", "keep")


def threshold_rank(num_scores: int, sparsity: float, ties: str) -> int:
  """0-based ascending position of the threshold, or -1 (prune nothing).

  The counts are computed in Python floats (float64), as the references do.

  Args:
    num_scores: number of scored entries ``N`` (>= 1).
    sparsity: target sparsity ``s`` in [0, 1).
    ties: ``"prune"`` (CrAM) or ``"keep"`` (SAFE).

  Returns:
    ``N - ceil(N (1 - s))`` (``"prune"``; -1 at ``s = 0``) or
    ``floor(s N)`` (``"keep"``).

  Raises:
    ValueError: unknown ``ties``, sparsity outside [0, 1), ``N < 1``.

  Example:
    >>> threshold_rank(10, 0.3, "prune"), threshold_rank(10, 0.3, "keep")
    (3, 3)
    >>> threshold_rank(10, 0.0, "prune"), threshold_rank(10, 0.25, "keep")
    (-1, 2)
  """
  validation.check_choice("ties", ties, TIES)
  validation.check_int("num_scores", num_scores)
  validation.check_fraction("sparsity", sparsity)
  if ties == "keep":
    return int(math.floor(sparsity * num_scores))
  if sparsity == 0:
    return -1
  return num_scores - int(math.ceil(num_scores * (1 - sparsity)))


def num_scores(scores: PyTree) -> int:
  """Number of entries over the (non-None) leaves of ``scores``."""
  return sum(int(x.size) for x in jax.tree.leaves(scores))


def threshold_masks_at(scores: PyTree, rank, *, ties: str) -> PyTree:
  """0/1 masks against the score at ascending position ``rank``.

  Args:
    scores: pytree of non-negative scores, None on unscored leaves.
    rank: int or int32 scalar (may be traced) from `threshold_rank`; -1
      keeps every entry.
    ties: ``"prune"`` keeps ``score > thr``; ``"keep"`` keeps
      ``score >= thr``.

  Returns:
    float32 0/1 masks, structured as ``scores`` (None where it is None).

  Example:
    >>> import jax.numpy as jnp
    >>> s = {"a": jnp.array([1.0, 2.0, 2.0]), "b": None,
    ...      "c": jnp.array([[3.0, 0.5]])}
    >>> threshold_masks_at(s, 2, ties="prune")["a"].tolist()
    [0.0, 0.0, 0.0]
    >>> threshold_masks_at(s, 2, ties="keep")["a"].tolist()
    [0.0, 1.0, 1.0]
  """
  validation.check_choice("ties", ties, TIES)
  leaves = jax.tree.leaves(scores)
  flat = jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in leaves])
  rank = jnp.asarray(rank, jnp.int32)
  threshold = topk._kth_smallest_key(topk._sortable_keys(flat), rank + 1)

  def leaf(x):
    keys = topk._sortable_keys(x)
    keep = keys > threshold if ties == "prune" else keys >= threshold
    return jnp.where(rank < 0, True, keep).astype(jnp.float32)

  return jax.tree.map(leaf, scores)


def threshold_masks(scores: PyTree, sparsity: float, *, ties: str) -> PyTree:
  """Global threshold masks at ``sparsity`` (see the module docstring).

  Args:
    scores: pytree of non-negative scores, None on unscored leaves.
    sparsity: target sparsity in [0, 1).
    ties: ``"prune"`` (CrAM) or ``"keep"`` (SAFE).

  Returns:
    float32 0/1 masks, structured as ``scores``.

  Example:
    >>> import jax.numpy as jnp
    >>> s = {"w": jnp.array([0.1, 0.3, 0.3, 0.3, 0.9])}
    >>> threshold_masks(s, 0.5, ties="prune")["w"].tolist()
    [0.0, 0.0, 0.0, 0.0, 1.0]
    >>> threshold_masks(s, 0.5, ties="keep")["w"].tolist()
    [0.0, 1.0, 1.0, 1.0, 1.0]
  """
  rank = threshold_rank(num_scores(scores), sparsity, ties)
  return threshold_masks_at(scores, rank, ties=ties)
