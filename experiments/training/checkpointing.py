"""Orbax checkpoints of a stage, with fallback over corrupt checkpoints.

Each stage of each method has its own directory (``checkpoints/<method>/
<index>_<stage>``; shared pretraining in ``checkpoints/<pretrain_sgd|sam>``)
holding the last ``max_to_keep`` checkpoints: every ``every_steps`` steps and
at the end of the stage (``meta["done"] = True``, after finalisation). A
checkpoint stores the whole ``TrainState`` and a JSON ``meta`` dict.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Sharding


def abstract_like(tree: Any, sharding: Sharding) -> Any:
  """ShapeDtypeStructs of ``tree`` (arrays or ShapeDtypeStructs) placed on
  ``sharding``: the restore target."""
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree
  )


def latest_meta(directory: str) -> dict[str, Any] | None:
  """The ``meta`` of the newest checkpoint in a stage's ``directory``,
  read without its state, or None when the directory holds none.

  Example:
    >>> latest_meta("/no/such/stage") is None
    True
  """
  if "://" not in str(directory) and not os.path.isdir(directory):
    return None
  options = ocp.CheckpointManagerOptions(read_only=True)
  with ocp.CheckpointManager(directory, options=options) as manager:
    steps = manager.all_steps()
    if not steps:
      return None
    restored = manager.restore(
      max(steps), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    )
  return dict(restored.meta)


class StageCheckpointer:
  """Saves and restores one stage's checkpoints.

  Args:
    directory: the stage's checkpoint directory.
    max_to_keep: number of checkpoints kept.
    every_steps: periodic save interval (0 disables periodic saves).
    enabled: False turns every save and restore into a no-op.
  """

  def __init__(
    self,
    directory: str,
    *,
    max_to_keep: int,
    every_steps: int,
    enabled: bool = True,
  ):
    # A bucket path (gs://...) as given: orbax writes there itself.
    local = "://" not in str(directory)
    self.directory = os.path.abspath(directory) if local else str(directory)
    self.every_steps = int(every_steps)
    self.enabled = enabled
    self._manager = None
    self._unreadable: set[int] = set()
    if enabled:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=False,
      )
      self._manager = ocp.CheckpointManager(self.directory, options=options)

  def should_save(self, step: int, num_steps: int) -> bool:
    """True for periodic saves strictly inside the stage."""
    return (
      self.enabled
      and self.every_steps > 0
      and 0 < step < num_steps
      and step % self.every_steps == 0
    )

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Writes a checkpoint (all processes must call this).

    Args:
      step: the stage step of ``state``.
      state: the TrainState.
      meta: JSON-serialisable metadata (method, stage, done ...).
    """
    if not self.enabled:
      return
    if step in self._unreadable:
      # Replace a corrupt checkpoint skipped by restore_latest, so that later
      # resumes do not fall back past it again.
      self._manager.delete(step)
      self._unreadable.discard(step)
    elif step in self._manager.all_steps():
      # A stage-end save after a resume that found that very checkpoint.
      return
    self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
      ),
      force=True,
    )
    self._manager.wait_until_finished()

  def restore_latest(self, template: Any) -> tuple[Any, dict[str, Any]] | None:
    """Restores the newest readable checkpoint.

    A checkpoint that fails to restore (truncated or corrupt files) is
    skipped with a warning and the previous one is tried.

    Args:
      template: abstract TrainState (``abstract_like``) giving structure,
        dtypes and shardings.

    Returns:
      ``(state, meta)`` or None when no readable checkpoint exists.
    """
    if not self.enabled:
      return None
    for step in sorted(self._manager.all_steps(read=True), reverse=True):
      try:
        restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template),
            meta=ocp.args.JsonRestore(),
          ),
        )
      except Exception as e:  # noqa: BLE001 - any read error means corrupt.
        self._unreadable.add(step)
        logging.warning(
          "Skipping unreadable checkpoint %s/%d (%s: %s); trying the "
          "previous one.",
          self.directory,
          step,
          type(e).__name__,
          str(e)[:300],
        )
        continue
      return restored.state, dict(restored.meta)
    return None

  def close(self) -> None:
    """Releases the manager."""
    if self._manager is not None:
      self._manager.close()
