"""The methods registry: each method is a sequence of stages.

Every method trains for the same budget, ``pretrain + search + finetune``
epochs (config sections of those names):

  ========== ===================== ============================= ===========
  method     stage 1 (pretrain)    stage 2                       stage 3
  ========== ===================== ============================= ===========
  dense      SGD                   dense fine-tune (search+fine.)
  dense_sam  SAM                   dense SAM fine-tune (s.+f.)
  sam_prune  SAM                   one-shot prune (0 steps)      fine-tune
                                                                 (s.+f.)
  prune_sam  SGD                   one-shot prune (0 steps)      SAM fine-
                                                                 tune (s.+f.)
  gmp        SGD                   gradual pruning (search)      fine-tune
  hydra      SGD                   HYDRA score search (search)   fine-tune
  csam       SGD                   C-SAM mask search (search)    fine-tune
  ========== ===================== ============================= ===========

The pretraining stages depend only on ``sam`` and the config, so they are
shared between methods (see ``Stage.shared_id``).
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections

STAGE_KINDS = ("pretrain", "prune", "search", "gmp", "finetune")
SEARCH_ALGOS = ("hydra", "csam")


class Stage(NamedTuple):
  """One stage of a method.

  Attributes:
    name: stage name (directories, logs), unique within the method.
    kind: one of ``STAGE_KINDS``.
    sam: weight-space SAM (config.sam) for weight-training stages.
    algo: the search algorithm for ``kind == "search"`` ("hydra", "csam").
    budget: config sections whose step budgets add up to this stage's steps.
    optimizer: config section whose ``optimizer`` field trains this stage.
  """

  name: str
  kind: str
  sam: bool = False
  algo: str | None = None
  budget: tuple[str, ...] = ()
  optimizer: str = ""

  @property
  def shared_id(self) -> str | None:
    """Name of the work-dir-wide shared run of this stage (pretrain only)."""
    if self.kind != "pretrain":
      return None
    return "pretrain_sam" if self.sam else "pretrain_sgd"


def _pretrain(sam: bool) -> Stage:
  return Stage("pretrain", "pretrain", sam, None, ("pretrain",), "pretrain")


_PRUNE = Stage("prune", "prune")
_REST = ("search", "finetune")
_FINETUNE = Stage(
  "finetune", "finetune", False, None, ("finetune",), "finetune"
)

METHOD_STAGES: dict[str, tuple[Stage, ...]] = {
  "dense": (
    _pretrain(False),
    Stage("finetune", "finetune", False, None, _REST, "finetune"),
  ),
  "dense_sam": (
    _pretrain(True),
    Stage("finetune", "finetune", True, None, _REST, "finetune"),
  ),
  "sam_prune": (
    _pretrain(True),
    _PRUNE,
    Stage("finetune", "finetune", False, None, _REST, "finetune"),
  ),
  "prune_sam": (
    _pretrain(False),
    _PRUNE,
    Stage("finetune", "finetune", True, None, _REST, "finetune"),
  ),
  "gmp": (
    _pretrain(False),
    Stage("gmp", "gmp", False, None, ("search",), "gmp"),
    _FINETUNE,
  ),
  "hydra": (
    _pretrain(False),
    Stage("search", "search", False, "hydra", ("search",), "search"),
    _FINETUNE,
  ),
  "csam": (
    _pretrain(False),
    Stage("search", "search", False, "csam", ("search",), "search"),
    _FINETUNE,
  ),
}
METHODS = tuple(METHOD_STAGES)


def get_stages(method: str) -> tuple[Stage, ...]:
  """Returns the stages of ``method``.

  Args:
    method: one of ``METHODS``.

  Returns:
    The method's stages, in order.

  Raises:
    ValueError: unknown method.

  Example:
    >>> [s.name for s in get_stages("csam")]
    ['pretrain', 'search', 'finetune']
  """
  if method not in METHOD_STAGES:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
  return METHOD_STAGES[method]


def section_steps(
  section: ml_collections.ConfigDict, steps_per_epoch: int
) -> int:
  """Steps of one budget section: num_steps if > 0, else epochs * steps."""
  if section.num_steps > 0:
    return int(section.num_steps)
  return int(round(section.epochs * steps_per_epoch))


def stage_steps(
  config: ml_collections.ConfigDict, stage: Stage, steps_per_epoch: int
) -> int:
  """Number of training steps of ``stage`` (0 for one-shot pruning).

  Example:
    >>> from experiments.configs import default
    >>> cfg = default.get_config()
    >>> cfg.search.num_steps, cfg.finetune.num_steps = 3, 4
    >>> stage_steps(cfg, get_stages("dense")[1], steps_per_epoch=10)
    7
  """
  return sum(section_steps(config[s], steps_per_epoch) for s in stage.budget)


def method_steps(
  config: ml_collections.ConfigDict, method: str, steps_per_epoch: int
) -> int:
  """Total training steps of a method (equal for all methods)."""
  return sum(
    stage_steps(config, s, steps_per_epoch) for s in get_stages(method)
  )
