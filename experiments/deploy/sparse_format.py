"""A sparse, loss-free checkpoint format for deployed (pruned) weights.

One uncompressed ``.npz`` file. Each leaf of the variables tree (a nested
dict, e.g. ``{"params": ..., "batch_stats": ...}``) is stored in whichever
of three encodings takes the fewest bytes:

* ``dense``: the array itself;
* ``bitmask``: ``np.packbits`` of ``x != 0`` (flattened, C order) plus the
  nonzero values in that order;
* ``csr``: the leaf as a 2-D matrix ``(prod(shape[:-1]), shape[-1])`` in
  compressed sparse rows: ``indptr`` (int32/int64), column ``indices``
  (uint8/uint16/int32, the smallest that holds ``shape[-1] - 1``) and the
  nonzero values.

Arrays are named ``<leaf/path>:<part>``; ``__meta__`` holds a JSON string
with each leaf's encoding, shape and dtype and a free-form ``spec`` dict
(the model description). Loading restores every value bit for bit; zeros
come back as ``+0.0`` (a pruned weight ``w * 0`` of a negative ``w`` is
``-0.0`` in memory; both contribute nothing to any product sum).
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.traverse_util
import numpy as np

PyTree = Any
ENCODINGS = ("dense", "bitmask", "csr")
_META = "__meta__"


def _index_dtype(limit: int) -> np.dtype:
  for dtype in (np.uint8, np.uint16, np.int32):
    if limit <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  return np.dtype(np.int64)


def encode_leaf(x: np.ndarray) -> tuple[str, dict[str, np.ndarray]]:
  """Encodes one array in its smallest encoding.

  Args:
    x: any numeric array.

  Returns:
    ``(encoding, parts)`` with ``encoding`` in ``ENCODINGS``.

  Example:
    >>> enc, parts = encode_leaf(np.array([[0.0, 2.0], [0.0, 0.0]] * 8))
    >>> enc, sorted(parts), parts["values"].tolist()
    ('bitmask', ['bits', 'values'], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
  """
  x = np.asarray(x)
  candidates = {"dense": {"values": x}}
  if x.ndim >= 1 and x.size:
    nonzero = x.reshape(-1) != 0
    values = x.reshape(-1)[nonzero]
    candidates["bitmask"] = {"bits": np.packbits(nonzero), "values": values}
    if x.ndim >= 2:
      rows = x.reshape(-1, x.shape[-1])
      r, c = np.nonzero(rows)
      counts = np.bincount(r, minlength=rows.shape[0])
      indptr = np.concatenate([[0], np.cumsum(counts)])
      candidates["csr"] = {
        "indptr": indptr.astype(_index_dtype(int(indptr[-1]))),
        "indices": c.astype(_index_dtype(x.shape[-1] - 1)),
        "values": rows[r, c],
      }
  sizes = {k: sum(p.nbytes for p in v.values()) for k, v in candidates.items()}
  best = min(ENCODINGS, key=lambda k: sizes.get(k, np.inf))
  return best, candidates[best]


def decode_leaf(
  encoding: str, parts: dict[str, np.ndarray], shape, dtype
) -> np.ndarray:
  """Inverse of ``encode_leaf``.

  Raises:
    ValueError: for an unknown encoding.
  """
  dtype = np.dtype(dtype)
  if encoding == "dense":
    return parts["values"].astype(dtype, copy=False).reshape(shape)
  size = int(np.prod(shape))
  if encoding == "bitmask":
    nonzero = np.unpackbits(parts["bits"], count=size).astype(bool)
    out = np.zeros(size, dtype)
    out[nonzero] = parts["values"]
    return out.reshape(shape)
  if encoding == "csr":
    cols = shape[-1]
    out = np.zeros((size // cols, cols), dtype)
    rows = np.repeat(np.arange(size // cols), np.diff(parts["indptr"]))
    out[rows, parts["indices"].astype(np.int64)] = parts["values"]
    return out.reshape(shape)
  raise ValueError(f"unknown encoding {encoding!r}; valid: {ENCODINGS}")


def save(path: str, variables: PyTree, spec: dict[str, Any]) -> int:
  """Writes ``variables`` (nested dicts of arrays) sparsely to ``path``.

  Args:
    path: the ``.npz`` file to write.
    variables: nested dict of arrays.
    spec: JSON-serialisable model description stored with the weights.

  Returns:
    The file size in bytes.
  """
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  arrays, leaves = {}, {}
  for name, leaf in flat.items():
    leaf = np.asarray(leaf)
    encoding, parts = encode_leaf(leaf)
    leaves[name] = dict(
      encoding=encoding, shape=list(leaf.shape), dtype=leaf.dtype.name
    )
    arrays.update({f"{name}:{part}": a for part, a in parts.items()})
  meta = json.dumps(
    {"format": "csam_jax.sparse/1", "leaves": leaves, "spec": spec}
  )
  arrays[_META] = np.array(meta)
  with open(path, "wb") as f:
    np.savez(f, **arrays)
  return os.path.getsize(path)


def save_dense(path: str, variables: PyTree) -> int:
  """Writes the same tree densely (the size baseline); returns bytes."""
  flat = flax.traverse_util.flatten_dict(variables, sep="/")
  with open(path, "wb") as f:
    np.savez(f, **{k: np.asarray(v) for k, v in flat.items()})
  return os.path.getsize(path)


def load(path: str) -> tuple[PyTree, dict[str, Any]]:
  """Reads a file written by ``save``.

  Returns:
    ``(variables as nested dicts of numpy arrays, spec)``.

  Raises:
    ValueError: the file is not a sparse checkpoint.
  """
  with np.load(path, allow_pickle=False) as data:
    if _META not in data.files:
      raise ValueError(f"{path!r} is not a sparse checkpoint (no {_META}).")
    meta = json.loads(str(data[_META]))
    flat = {}
    for name, leaf in meta["leaves"].items():
      prefix = f"{name}:"
      parts = {
        k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)
      }
      flat[name] = decode_leaf(
        leaf["encoding"], parts, tuple(leaf["shape"]), leaf["dtype"]
      )
  return flax.traverse_util.unflatten_dict(flat, sep="/"), meta["spec"]


def encodings(path: str) -> dict[str, str]:
  """``{leaf path: encoding}`` of a sparse checkpoint."""
  with np.load(path, allow_pickle=False) as data:
    return {
      k: v["encoding"]
      for k, v in json.loads(str(data[_META]))["leaves"].items()
    }
