"""Hard 0/1 masks from scores: exact counts, deterministic ties.

The lowest scores are pruned first; ties are broken by flat index (the lower
index is pruned first). For ``scope="global"`` the flat index runs over the
leaves in ``jax.tree`` order, each raveled.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from csam_jax._src import masks as masks_lib
from csam_jax._src import validation
from csam_jax._src.tree_utils import PyTree

_NM_PATTERN = re.compile(r"^(\d+):(\d+)$")
STRUCTURES = ("unstructured", "channel", "N:M (e.g. '2:4')")


def parse_structure(structure: str) -> tuple[str, tuple[int, int] | None]:
  """Returns ("unstructured"|"channel"|"nm", (N, M) or None)."""
  if structure in ("unstructured", "channel"):
    return structure, None
  match = _NM_PATTERN.match(structure) if isinstance(structure, str) else None
  if match is None:
    raise ValueError(
      f"Unknown structure {structure!r}; valid values: {STRUCTURES}."
    )
  n, m = int(match.group(1)), int(match.group(2))
  if m < 1 or n < 1 or n > m:
    raise ValueError(
      f"N:M structure needs 1 <= N <= M, got structure={structure!r}."
    )
  return "nm", (n, m)


def _sortable_keys(scores: jax.Array) -> jax.Array:
  """Maps float32 scores to uint32 keys with the same order (-0.0 == 0.0)."""
  x = scores.astype(jnp.float32)
  x = jnp.where(x == 0, jnp.float32(0), x)
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  negative = (bits >> 31) == 1
  return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _kth_smallest_key(keys: jax.Array, k: int) -> jax.Array:
  """The k-th smallest key (k >= 1), by bisection over the 32-bit range.

  32 counting passes over the keys instead of a sort: exact, O(32 n), and
  much faster than XLA's sort on CPU for large kernels.
  """

  def body(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(keys <= mid, dtype=jnp.int32) >= k
    return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

  bounds = (jnp.uint32(0), jnp.uint32(0xFFFFFFFF))
  return jax.lax.fori_loop(0, 32, body, bounds)[0]


def _keep_mask(scores: jax.Array, k_pruned) -> jax.Array:
  """0/1 float mask over a flat score vector pruning the k lowest.

  ``k_pruned`` is a Python int or an int32 scalar (traced or not): the
  bisection, threshold and tie split are the same computation either way,
  so both give bit-identical masks. Ties at the threshold are pruned in
  flat-index order (lower index first).
  """
  if isinstance(k_pruned, int) and k_pruned == 0:
    return jnp.ones(scores.shape, jnp.float32)
  keys = _sortable_keys(scores)
  # k = 0 (traced) gives threshold key 0: nothing below it, and any entry
  # tied at it (a NaN with every bit set) is left by the tie split (room 0).
  threshold = _kth_smallest_key(keys, k_pruned)
  below = keys < threshold
  tied = keys == threshold
  room = k_pruned - jnp.sum(below, dtype=jnp.int32)

  def split_ties(_):
    return below | (tied & (jnp.cumsum(tied, dtype=jnp.int32) <= room))

  # The running count over ties is needed only when the threshold value is
  # shared by more entries than remain to prune (rare for real scores).
  pruned = jax.lax.cond(
    jnp.sum(tied, dtype=jnp.int32) > room,
    split_ties,
    lambda _: below | tied,
    None,
  )
  return jnp.where(pruned, 0.0, 1.0).astype(jnp.float32)


def _split_like(flat: jax.Array, sizes: list[int]) -> list[jax.Array]:
  offsets = [0]
  for size in sizes:
    offsets.append(offsets[-1] + size)
  return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _unstructured(leaves: list[jax.Array], counts, scope: str):
  """Unstructured keep masks; ``counts[i]`` is leaf i's pruned count
  (scope "layer") or ``counts[0]`` the global one."""
  if scope == "layer":
    return [
      _keep_mask(x.ravel(), k).reshape(x.shape)
      for x, k in zip(leaves, counts, strict=True)
    ]
  flat = jnp.concatenate([x.ravel().astype(jnp.float32) for x in leaves])
  keep = _keep_mask(flat, counts[0])
  parts = _split_like(keep, [x.size for x in leaves])
  return [p.reshape(x.shape) for p, x in zip(parts, leaves, strict=True)]


def _channel_scores(x: jax.Array) -> jax.Array:
  if x.ndim < 2:  # A vector (or scalar) leaf: each entry is a channel.
    return x.astype(jnp.float32).reshape(-1)
  return jnp.mean(x.astype(jnp.float32), axis=tuple(range(x.ndim - 1)))


def _num_channels(shape: tuple[int, ...]) -> int:
  return math.prod(shape) if len(shape) < 2 else shape[-1]


def _channel(leaves: list[jax.Array], counts, scope: str):
  scores = [_channel_scores(x) for x in leaves]
  if scope == "layer":
    keeps = [_keep_mask(s, k) for s, k in zip(scores, counts, strict=True)]
  else:
    flat = jnp.concatenate(scores)
    keep = _keep_mask(flat, counts[0])
    keeps = _split_like(keep, [s.size for s in scores])
  return [
    jnp.broadcast_to(k, x.shape) if x.ndim >= 2 else k.reshape(x.shape)
    for k, x in zip(keeps, leaves, strict=True)
  ]


def _static_counts(
  shapes: list[tuple[int, ...]], sparsity: float, scope: str, kind: str
) -> list[int]:
  """round(sparsity * n) per leaf (scope "layer") or over all leaves."""
  sizes = [
    _num_channels(s) if kind == "channel" else math.prod(s) for s in shapes
  ]
  if scope == "layer":
    return [masks_lib.num_pruned(n, sparsity) for n in sizes]
  return [masks_lib.num_pruned(sum(sizes), sparsity)]


def _n_of_m(x: jax.Array, n: int, m: int) -> jax.Array:
  if x.ndim < 2 or x.shape[-2] % m:
    raise ValueError(
      f"N:M structure {n}:{m} needs kernels with ndim >= 2 whose input-"
      f"channel axis (-2) is divisible by M={m}; got shape {x.shape}."
    )
  moved = jnp.moveaxis(x.astype(jnp.float32), -2, -1)
  groups = moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)
  order = jnp.argsort(groups, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True)  # rank of each entry
  keep = (rank >= m - n).astype(jnp.float32)
  return jnp.moveaxis(keep.reshape(moved.shape), -1, -2)


def _masks_from_counts(leaves, counts, scope: str, kind: str):
  if kind == "channel":
    return _channel(leaves, counts, scope)
  return _unstructured(leaves, counts, scope)


def topk_masks(
  scores: PyTree,
  sparsity: float,
  *,
  scope: str = "global",
  structure: str = "unstructured",
) -> PyTree:
  """Hard 0/1 masks pruning exactly ``round(sparsity * n)`` lowest scores.

  Args:
    scores: masks-like pytree (``None`` leaves are kept as ``None``).
    sparsity: fraction to prune, in [0, 1). For ``"N:M"`` it must equal
      ``1 - N/M``.
    scope: ``"global"`` (one threshold over all leaves) or ``"layer"``
      (``round(sparsity * n)`` per leaf).
    structure: ``"unstructured"``; ``"channel"`` (whole output channels, the
      last axis, scored by the mean of their scores; ``round(sparsity * C)``
      channels per leaf or over all leaves); or ``"N:M"`` such as ``"2:4"``
      (keep the N largest of every M consecutive entries along axis -2;
      groups never span leaves, so ``scope`` does not apply).

  Returns:
    Pytree of 0/1 masks with the dtype of ``scores``; ``round`` is Python's
    (half to even). Ties are pruned in flat-index order.

  Raises:
    ValueError: bad sparsity, scope or structure, or an N:M axis not
      divisible by M.

  Example:
    >>> import jax.numpy as jnp, csam_jax
    >>> s = {"w": jnp.array([[0.3, 0.1], [0.1, 0.9]]), "b": None}
    >>> csam_jax.topk_masks(s, 0.5)["w"].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
  """
  sparsity = validation.check_fraction("sparsity", sparsity)
  validation.check_choice("scope", scope, masks_lib.SCOPES)
  kind, nm = parse_structure(structure)
  leaves, treedef = jax.tree.flatten(scores)
  if not leaves:
    return scores
  if kind == "nm":
    n, m = nm
    if abs(sparsity - (1.0 - n / m)) > 1e-6:
      raise ValueError(
        f"structure={structure!r} prunes 1 - N/M = {1 - n / m:g} of each "
        f"group; got sparsity={sparsity!r}."
      )
    keeps = [_n_of_m(x, n, m) for x in leaves]
  else:
    counts = _static_counts([x.shape for x in leaves], sparsity, scope, kind)
    keeps = _masks_from_counts(leaves, counts, scope, kind)
  keeps = [k.astype(x.dtype) for k, x in zip(keeps, leaves, strict=True)]
  return jax.tree.unflatten(treedef, keeps)


def _count_kind(structure: str, fn: str) -> str:
  kind, _ = parse_structure(structure)
  if kind == "nm":
    raise ValueError(
      f"{fn} supports structure 'unstructured' or 'channel'; an N:M "
      f"structure ({structure!r}) fixes its count: use topk_masks."
    )
  return kind


def topk_counts(
  scores: PyTree,
  sparsity: float,
  *,
  scope: str = "global",
  structure: str = "unstructured",
) -> np.ndarray:
  """The pruned counts ``topk_masks(scores, sparsity, ...)`` uses.

  Only the shapes of ``scores`` are read (arrays or
  ``jax.ShapeDtypeStruct`` leaves), so the counts can be computed on the
  host and passed to a compiled ``topk_masks_from_counts`` as an argument:
  one compilation for every sparsity.

  Args:
    scores: masks-like pytree (``None`` leaves are skipped).
    sparsity: fraction to prune, in [0, 1).
    scope: ``"global"`` or ``"layer"``.
    structure: ``"unstructured"`` (entries) or ``"channel"`` (channels).

  Returns:
    int32 array: shape ``()`` with ``round(sparsity * n)`` over all leaves
    (scope "global"), or ``(num_leaves,)`` with one count per leaf in
    ``jax.tree.leaves`` order (scope "layer").

  Raises:
    ValueError: bad sparsity or scope, or an N:M structure.

  Example:
    >>> import jax.numpy as jnp, csam_jax
    >>> s = {"a": jnp.zeros((4, 5)), "b": jnp.zeros((10,)), "c": None}
    >>> csam_jax.topk_counts(s, 0.25).tolist()
    8
    >>> csam_jax.topk_counts(s, 0.25, scope="layer").tolist()
    [5, 2]
  """
  sparsity = validation.check_fraction("sparsity", sparsity)
  validation.check_choice("scope", scope, masks_lib.SCOPES)
  kind = _count_kind(structure, "topk_counts")
  shapes = [tuple(x.shape) for x in jax.tree.leaves(scores)]
  if not shapes:
    return np.zeros((0,) if scope == "layer" else (), np.int32)
  counts = np.asarray(_static_counts(shapes, sparsity, scope, kind), np.int32)
  return counts if scope == "layer" else counts[0]


def topk_masks_from_counts(
  scores: PyTree,
  num_pruned,
  *,
  scope: str = "global",
  structure: str = "unstructured",
) -> PyTree:
  """Hard 0/1 masks pruning exactly ``num_pruned`` lowest scores.

  The same masks as ``topk_masks`` (bit for bit) when ``num_pruned`` is
  ``topk_counts(scores, sparsity, ...)``, but the count may be a traced
  value: under ``jax.jit`` one compilation serves every sparsity (gradual
  pruning schedules).

  Args:
    scores: masks-like pytree (``None`` leaves are kept as ``None``).
    num_pruned: int scalar (scope "global") or int vector with one entry
      per leaf (scope "layer"), as ``topk_counts`` returns; entries or
      channels to prune. Traced values are clipped to ``[0, n]``;
      concrete ones are checked.
    scope: ``"global"`` or ``"layer"``.
    structure: ``"unstructured"`` or ``"channel"``.

  Returns:
    Pytree of 0/1 masks with the dtype of ``scores``.

  Raises:
    ValueError: a bad scope or structure (N:M included), a ``num_pruned``
      of the wrong shape, or a concrete count outside ``[0, n]``.

  Example:
    >>> import jax, jax.numpy as jnp, csam_jax
    >>> s = {"w": jnp.array([[0.3, 0.1], [0.1, 0.9]]), "b": None}
    >>> f = jax.jit(csam_jax.topk_masks_from_counts)
    >>> f(s, 1)["w"].tolist(), f(s, 3)["w"].tolist()
    ([[1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]])
  """
  validation.check_choice("scope", scope, masks_lib.SCOPES)
  kind = _count_kind(structure, "topk_masks_from_counts")
  leaves, treedef = jax.tree.flatten(scores)
  if not leaves:
    return scores
  sizes = [
    _num_channels(x.shape) if kind == "channel" else x.size for x in leaves
  ]
  limits = sizes if scope == "layer" else [sum(sizes)]
  expected = (len(leaves),) if scope == "layer" else ()
  if jnp.shape(num_pruned) != expected:
    raise ValueError(
      f"num_pruned must have shape {expected} for scope={scope!r} "
      f"({len(leaves)} leaves), got shape {jnp.shape(num_pruned)}."
    )
  if not isinstance(num_pruned, jax.core.Tracer):
    values = np.reshape(np.asarray(num_pruned), -1)
    if not np.issubdtype(values.dtype, np.integer) or np.any(
      (values < 0) | (values > np.asarray(limits))
    ):
      raise ValueError(
        f"num_pruned must hold integers in [0, n] with n = {limits}, got "
        f"{num_pruned!r}."
      )
  counts = jnp.clip(
    jnp.reshape(jnp.asarray(num_pruned, jnp.int32), -1),
    0,
    jnp.asarray(limits, jnp.int32),
  )
  keeps = _masks_from_counts(leaves, list(counts), scope, kind)
  keeps = [k.astype(x.dtype) for k, x in zip(keeps, leaves, strict=True)]
  return jax.tree.unflatten(treedef, keeps)
