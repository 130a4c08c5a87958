"""Top-k masks from traced counts: bit-identical to the static path.

``topk_masks_from_counts`` under one ``jax.jit`` compilation must give, for
every sparsity, exactly the masks of ``topk_masks`` (which rounds the
sparsity on the host), ties included, for both scopes and structures.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import csam_jax

# 0.0 and values whose count ends in .5 (round half to even) included.
SPARSITIES = [0.0, 0.05, 0.25, 1 / 3, 0.5, 0.55, 0.8, 0.9, 0.95]
SPARSITIES += [float(s) for s in np.linspace(0.01, 0.99, 15)]
# The static path compiles once per count: compare it on a few sparsities.
STATIC_SPARSITIES = [0.0, 0.1, 0.5, 0.55, 0.9]


def _scores():
  """Leaves with heavy ties (scores on a coarse grid, zeros, -0.0)."""
  rng = np.random.default_rng(0)
  grid = lambda *shape: rng.integers(0, 7, shape).astype(np.float32) / 4
  conv = grid(3, 3, 4, 6)
  conv[0, 0, 0, :3] = -0.0
  return {
    "conv": jnp.asarray(conv),
    "dense": jnp.asarray(grid(12, 5)),
    "vector": jnp.asarray(grid(7)),
    "bias": None,
  }


def _numpy_keep(flat: np.ndarray, k: int) -> np.ndarray:
  """Reference: prune the k lowest, ties by flat index (stable sort; -0.0
  and 0.0 compare equal)."""
  keep = np.ones(flat.size, np.float32)
  keep[np.argsort(flat, kind="stable")[:k]] = 0.0
  return keep


def _reference(scores, sparsity, scope):
  names = ["conv", "dense", "vector"]  # jax.tree order of the dict
  flats = [np.asarray(scores[n]).ravel() for n in sorted(names)]
  shapes = [scores[n].shape for n in sorted(names)]
  if scope == "layer":
    keeps = [_numpy_keep(f, round(sparsity * f.size)) for f in flats]
  else:
    flat = np.concatenate(flats)
    keep = _numpy_keep(flat, round(sparsity * flat.size))
    keeps = np.split(keep, np.cumsum([f.size for f in flats])[:-1])
  parts = zip(sorted(names), keeps, shapes, strict=True)
  return {n: k.reshape(s) for n, k, s in parts}


def _traced(scope, structure):
  return jax.jit(
    lambda s, k: csam_jax.topk_masks_from_counts(
      s, k, scope=scope, structure=structure
    )
  )


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_traced_counts_equal_reference_over_many_sparsities(scope):
  scores, traced, seen = _scores(), _traced(scope, "unstructured"), set()
  for sparsity in SPARSITIES:
    counts = csam_jax.topk_counts(scores, sparsity, scope=scope)
    seen.add(tuple(np.ravel(counts)))
    got = traced(scores, counts)
    assert got["bias"] is None
    for name, want in _reference(scores, sparsity, scope).items():
      np.testing.assert_array_equal(np.asarray(got[name]), want, name)
  assert len(seen) > 15  # many distinct counts ...
  assert traced._cache_size() == 1  # ... one compilation


@pytest.mark.parametrize("structure", ["unstructured", "channel"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_traced_counts_equal_static_masks(scope, structure):
  scores, traced = _scores(), _traced(scope, structure)
  for sparsity in STATIC_SPARSITIES:
    counts = csam_jax.topk_counts(
      scores, sparsity, scope=scope, structure=structure
    )
    want = csam_jax.topk_masks(
      scores, sparsity, scope=scope, structure=structure
    )
    got = traced(scores, counts)
    for name in ("conv", "dense", "vector"):
      np.testing.assert_array_equal(
        np.asarray(got[name]), np.asarray(want[name]), err_msg=name
      )
  assert traced._cache_size() == 1


def test_counts_hand_computed_and_ties_by_flat_index():
  scores = {"a": jnp.array([[0.5, 0.5], [0.5, 0.5]]), "b": jnp.ones((3,))}
  # 7 entries; round(0.5 * 7) = round(3.5) = 4 (half to even).
  assert csam_jax.topk_counts(scores, 0.5).tolist() == 4
  assert csam_jax.topk_counts(scores, 0.5, scope="layer").tolist() == [2, 2]
  # Channels: "a" has 2 (last axis), "b" 3 (a vector: each entry).
  assert csam_jax.topk_counts(scores, 0.4, structure="channel").tolist() == 2
  masks = jax.jit(lambda s, k: csam_jax.topk_masks_from_counts(s, k))(
    scores, np.int32(5)
  )
  # The four 0.5s go first, then the first of the tied ones.
  assert masks["a"].tolist() == [[0.0, 0.0], [0.0, 0.0]]
  assert masks["b"].tolist() == [0.0, 1.0, 1.0]


def test_count_zero_and_all_traced():
  scores = {"w": jnp.array([3.0, -1.0, 2.0, 0.0])}
  f = jax.jit(lambda s, k: csam_jax.topk_masks_from_counts(s, k))
  assert f(scores, np.int32(0))["w"].tolist() == [1.0, 1.0, 1.0, 1.0]
  assert f(scores, np.int32(4))["w"].tolist() == [0.0, 0.0, 0.0, 0.0]
  assert f(scores, np.int32(2))["w"].tolist() == [1.0, 0.0, 1.0, 0.0]
  assert f._cache_size() == 1


@pytest.mark.parametrize(
  "kwargs, num_pruned, match",
  [
    (dict(), np.array([1, 2]), r"shape \(\) for scope='global'"),
    (dict(scope="layer"), 1, r"shape \(2,\) for scope='layer'"),
    (dict(), 11, r"integers in \[0, n\] with n = \[10\]"),
    (dict(scope="layer"), np.array([-1, 0]), r"n = \[6, 4\]"),
    (dict(), 1.5, "integers"),
    (dict(structure="2:4"), 1, "N:M.*use topk_masks"),
    (dict(scope="per_leaf"), 1, "scope"),
  ],
)
def test_bad_counts_raise(kwargs, num_pruned, match):
  scores = {"a": jnp.ones((2, 3)), "b": jnp.ones((4,))}
  with pytest.raises(ValueError, match=match):
    csam_jax.topk_masks_from_counts(scores, num_pruned, **kwargs)


def test_topk_counts_bad_inputs():
  scores = {"a": jnp.ones((4, 4))}
  with pytest.raises(ValueError, match="sparsity"):
    csam_jax.topk_counts(scores, 1.0)
  with pytest.raises(ValueError, match="N:M"):
    csam_jax.topk_counts(scores, 0.5, structure="2:4")
  with pytest.raises(ValueError, match="scope"):
    csam_jax.topk_counts(scores, 0.5, scope="all")
