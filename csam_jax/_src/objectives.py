"""The C-SAM objective terms (He & Chen, 2026; CC-Cert, Pautov et al., 2022).

``p`` are probability vectors (softmax outputs) along the last axis. For an
input x and a transformed copy x_T, ``Z(x; T) = ||p(x) - p(x_T)||_inf`` and
``d(x) = (p_(1)(x) - p_(2)(x)) / 2``; ``Z < d`` guarantees that the arg-max of
``p(x_T)`` equals that of ``p(x)``.
"""

import jax
import jax.numpy as jnp
import optax

from csam_jax._src import topk as topk_lib
from csam_jax._src.tree_utils import PyTree


def prediction_discrepancy(p: jax.Array, p_t: jax.Array) -> jax.Array:
  """Z = ``||p - p_t||_inf`` over the last axis.

  Example:
    >>> import jax.numpy as jnp
    >>> from csam_jax import objectives
    >>> z = objectives.prediction_discrepancy(jnp.array([.7, .2, .1]),
    ...                                       jnp.array([.5, .3, .2]))
    >>> round(float(z), 6)
    0.2
  """
  return jnp.max(jnp.abs(p - p_t), axis=-1)


def top2_margin(p: jax.Array) -> jax.Array:
  """d = ``(p_(1) - p_(2)) / 2``, half the gap between the two largest.

  Example:
    >>> import jax.numpy as jnp
    >>> from csam_jax import objectives
    >>> float(objectives.top2_margin(jnp.array([.1, .7, .2])))
    0.25
  """
  if p.shape[-1] < 2:
    raise ValueError(
      f"top2_margin needs at least 2 classes, got shape {p.shape}."
    )
  top2 = jax.lax.top_k(p, 2)[0]
  return (top2[..., 0] - top2[..., 1]) / 2


def certification_hinge(
  p: jax.Array, p_t: jax.Array, kappa: float = 0.0
) -> jax.Array:
  """``relu(Z(p, p_t) - d(p) + kappa)`` per example (take the mean for a loss).

  Zero exactly when the certification condition ``Z < d`` holds with margin
  ``kappa``.

  Example:
    >>> import jax.numpy as jnp
    >>> from csam_jax import objectives
    >>> p, p_t = jnp.array([.7, .2, .1]), jnp.array([.3, .6, .1])
    >>> round(float(objectives.certification_hinge(p, p_t)), 6)
    0.15
  """
  z = prediction_discrepancy(p, p_t)
  return jax.nn.relu(z - top2_margin(p) + kappa)


def mask_consistency(
  masks: PyTree,
  sparsity: float,
  *,
  scope: str = "global",
  structure: str = "unstructured",
) -> jax.Array:
  """``mean((C - TopK_s(C))^2)`` over all mask entries (soft/hard gap).

  The hard mask carries no gradient, so the term pulls each soft mask value
  towards the 0/1 value it is deployed with.

  Example:
    >>> import jax.numpy as jnp
    >>> from csam_jax import objectives
    >>> m = {"w": jnp.array([[0.2, 0.9], [0.4, 0.6]]), "b": None}
    >>> round(float(objectives.mask_consistency(m, 0.5)), 6)
    0.0925
  """
  hard = jax.lax.stop_gradient(
    topk_lib.topk_masks(masks, sparsity, scope=scope, structure=structure)
  )
  gap = jax.tree.map(lambda c, h: c.astype(jnp.float32) - h, masks, hard)
  count = optax.tree.size(masks)
  if count == 0:
    raise ValueError("mask_consistency needs at least one mask leaf.")
  return optax.tree.norm(gap, squared=True) / count
