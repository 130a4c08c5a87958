"""Chunked, vmapped Monte Carlo draws shared by all certifiers.

For a batch ``x`` of ``B`` images, image ``i`` gets the key
``k_i = jax.random.split(key, B)[i]`` and its draw ``j`` the key
``jax.random.fold_in(k_i, j)`` (fold_in rather than a split of ``k_i`` into
N keys, so that no key array of size N is ever built). The ``B * N`` draws
are enumerated image-major and processed ``batch_size`` at a time by a
``lax.scan`` over chunks; inside a chunk the transformation and the model
are ``jax.vmap``-ed / batched. So peak memory is set by ``batch_size`` (plus
what the caller accumulates per draw or per image), and results are
deterministic for a key and do not depend on ``batch_size``. A ``select``
mask leaves some images out of the enumeration without changing the keys or
the chunk size of the others (`scan_draws`).

A chunk's draws are transformed by `transform`: ``jax.vmap(sample_fn)``, or,
for a batched sampler (one whose function has a ``sample_batch(keys,
images)`` method, e.g. `csam_jax.variations.corruption_sampler`), that
method on the whole chunk, so the sampler can share work across draws
(group them by transformation). A batched sampler must return for each
draw exactly ``sample_fn(keys[i], images[i])``, whatever the other draws,
so results stay independent of ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def map_images(fn: Callable, x: Array, batch_size: int) -> Any:
  """``fn`` on ``x`` in chunks of ``batch_size`` images (padded, scanned)."""
  num = x.shape[0]
  size = min(batch_size, num)
  chunks = -(-num // size)
  padded = jnp.concatenate(
    [x, jnp.zeros((chunks * size - num,) + x.shape[1:], x.dtype)]
  )
  out = jax.lax.map(fn, padded.reshape((chunks, size) + x.shape[1:]))
  return jax.tree.map(lambda o: o.reshape((-1,) + o.shape[2:])[:num], out)


def scan_draws(
  key: Array,
  x: Array,
  num_draws: int,
  batch_size: int,
  carry: Any,
  update: Callable,
  *,
  select: Array | None = None,
) -> Any:
  """Scans ``update`` over the ``B * num_draws`` draws, ``batch_size`` each.

  ``update(carry, keys, images, image_index, draw_index)`` gets, per chunk,
  the draw keys, the images to transform and their indices; padding draws
  of the last chunk have ``image_index == B`` so that scatters with
  ``mode="drop"`` ignore them.

  With ``select``, a (B,) bool array (traced), only the selected images get
  draws: theirs are enumerated image-major as without it, the others' left
  out, so ``ceil(sum(select) * num_draws / size)`` chunks run (a while loop
  of dynamic trip count: one compilation for every mask) and only the last
  one is padded. Chunks keep their size ``min(batch_size, B * num_draws)``
  and every selected image its key ``split(key, B)[i]`` and draw keys, so
  it gets exactly the draws of the run without ``select``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> def update(count, keys, images, image_index, draw_index):
    ...   return count.at[image_index].add(1, mode="drop")
    >>> scan_draws(jax.random.key(0), jnp.zeros((3, 2)), 4, 5,
    ...            jnp.zeros(3, int), update,
    ...            select=jnp.array([True, False, True])).tolist()
    [4, 0, 4]
  """
  num_images = x.shape[0]
  total = num_images * num_draws
  size = min(batch_size, total)
  image_keys = jax.random.split(key, num_images)
  if select is None:
    order, drawn = None, total
  else:  # The selected images first, in image order.
    order = jnp.nonzero(select, size=num_images, fill_value=0)[0]
    drawn = jnp.sum(select, dtype=jnp.int32) * num_draws

  def body(carry, chunk):
    flat = chunk * size + jnp.arange(size)
    valid = flat < drawn
    flat = jnp.minimum(flat, jnp.maximum(drawn - 1, 0))
    image_index, draw_index = flat // num_draws, flat % num_draws
    if order is not None:
      image_index = order[image_index]
    keys = jax.vmap(jax.random.fold_in)(image_keys[image_index], draw_index)
    image_index_or_drop = jnp.where(valid, image_index, num_images)
    carry = update(carry, keys, x[image_index], image_index_or_drop, draw_index)
    return carry, None

  if select is None:
    carry, _ = jax.lax.scan(body, carry, jnp.arange(-(-total // size)))
    return carry
  num_chunks = (drawn + size - 1) // size
  return jax.lax.fori_loop(
    0, num_chunks, lambda chunk, carry: body(carry, chunk)[0], carry
  )


def transform(sample_fn: Callable, keys: Array, images: Array) -> Array:
  """The transformed images of one chunk of draws.

  Args:
    sample_fn: ``sample_fn(key, image) -> image``, a callable or a
      `jax.tree_util.Partial`. If its function (``sample_fn.func`` for a
      Partial) has a ``sample_batch`` method, the chunk is transformed by
      ``sample_batch(*partial_args, keys, images)``, else by
      ``jax.vmap(sample_fn)(keys, images)``.
    keys: (S,) PRNG keys, one per draw.
    images: (S, H, W, C) the images to transform.

  Returns:
    (S, H, W, C) transformed images.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> class Flip:
    ...   def __call__(self, key, image):
    ...     return image[::-1]
    ...   def sample_batch(self, keys, images):
    ...     return images[:, ::-1]
    >>> keys = jax.random.split(jax.random.key(0), 2)
    >>> transform(jax.tree_util.Partial(Flip()), keys,
    ...           jnp.arange(4.0).reshape(2, 2, 1, 1))[:, :, 0, 0].tolist()
    [[1.0, 0.0], [3.0, 2.0]]
  """
  partial = isinstance(sample_fn, jax.tree_util.Partial)
  func = sample_fn.func if partial else sample_fn
  batched = getattr(func, "sample_batch", None)
  if batched is None:
    return jax.vmap(sample_fn)(keys, images)
  if partial:
    return batched(*sample_fn.args, keys, images, **sample_fn.keywords)
  return batched(keys, images)


def probs(logits_fn: Callable, images: Array) -> Array:
  """float32 softmax probabilities of ``logits_fn(images)``."""
  return jax.nn.softmax(jnp.asarray(logits_fn(images), jnp.float32), axis=-1)
