"""The methods: each one a recipe, a sequence of declared stages.

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

A stage declares its ``role`` (which batches and keys it draws, and whether
it is a pretraining run shared by every method of a work directory), its
``kind`` (what one step does, experiments/stages.py), the config sections
whose epochs it spends and the one whose optimizer trains it. Stages of the
same role draw the same batches in the same order and the same per-step
keys, whatever the method, so paired methods differ only in what they do.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections

STAGE_KINDS = ("pretrain", "prune", "search", "gmp", "finetune")
SEARCH_ALGOS = ("hydra", "csam")
# Roles: the two shared pretraining runs, then where in the
# post-pretraining budget a stage starts ("from_search": the search-budget
# stages of gmp/hydra/csam and the continuations of the other methods;
# "from_finetune": the fine-tuning after a search). The order is part of
# every key and batch stream (experiments/keys.py): append, never reorder.
ROLES = ("pretrain_sgd", "pretrain_sam", "from_search", "from_finetune")
SHARED_ROLES = ("pretrain_sgd", "pretrain_sam")


class StageSpec(NamedTuple):
  """One declared stage of a method (experiments/stages.py builds it).

  Attributes:
    name: stage name (directories, logs), unique within the method.
    role: one of ``ROLES``.
    kind: one of ``STAGE_KINDS``: what a step of the stage does.
    epochs: config sections whose step budgets add up to this stage's steps.
    optimizer: config section whose ``optimizer`` field trains this stage.
    sam: weight-space SAM (config.sam) for weight-training stages.
    algo: the search algorithm for ``kind == "search"`` ("hydra", "csam").
  """

  name: str
  role: str
  kind: str
  epochs: tuple[str, ...] = ()
  optimizer: str = ""
  sam: bool = False
  algo: str | None = None

  @property
  def shared(self) -> bool:
    """True for the pretraining runs shared by every method."""
    return self.role in SHARED_ROLES


def _pretrain(*, sam: bool) -> StageSpec:
  return StageSpec(
    name="pretrain",
    role="pretrain_sam" if sam else "pretrain_sgd",
    kind="pretrain",
    epochs=("pretrain",),
    optimizer="pretrain",
    sam=sam,
  )


def _continue(*, sam: bool) -> StageSpec:
  """Weight training over the search and fine-tuning budgets."""
  return StageSpec(
    name="finetune",
    role="from_search",
    kind="finetune",
    epochs=("search", "finetune"),
    optimizer="finetune",
    sam=sam,
  )


_PRUNE = StageSpec(name="prune", role="from_search", kind="prune")
_FINETUNE = StageSpec(
  name="finetune",
  role="from_finetune",
  kind="finetune",
  epochs=("finetune",),
  optimizer="finetune",
)


def _search(algo: str) -> StageSpec:
  return StageSpec(
    name="search",
    role="from_search",
    kind="search",
    epochs=("search",),
    optimizer="search",
    algo=algo,
  )


RECIPES: dict[str, tuple[StageSpec, ...]] = {
  "dense": (_pretrain(sam=False), _continue(sam=False)),
  "dense_sam": (_pretrain(sam=True), _continue(sam=True)),
  "sam_prune": (_pretrain(sam=True), _PRUNE, _continue(sam=False)),
  "prune_sam": (_pretrain(sam=False), _PRUNE, _continue(sam=True)),
  "gmp": (
    _pretrain(sam=False),
    StageSpec(
      name="gmp",
      role="from_search",
      kind="gmp",
      epochs=("search",),
      optimizer="gmp",
    ),
    _FINETUNE,
  ),
  "hydra": (_pretrain(sam=False), _search("hydra"), _FINETUNE),
  "csam": (_pretrain(sam=False), _search("csam"), _FINETUNE),
}
METHODS = tuple(RECIPES)
# Stage kinds that set masks: a method with none of them stays dense.
MASKING_KINDS = ("prune", "gmp", "search")


def prunes(method: str) -> bool:
  """True when a stage of ``method``'s recipe sets masks.

  Example:
    >>> prunes("dense_sam"), prunes("gmp")
    (False, True)
  """
  return any(s.kind in MASKING_KINDS for s in get_recipe(method))


def searches_with(method: str, algo: str) -> bool:
  """True when ``method``'s recipe has a mask search by ``algo``."""
  return any(s.algo == algo for s in get_recipe(method))


def get_recipe(method: str) -> tuple[StageSpec, ...]:
  """Returns the recipe of ``method``: its stages, in order.

  Args:
    method: one of ``METHODS``.

  Returns:
    The method's stages, in order.

  Raises:
    ValueError: unknown method.

  Example:
    >>> [(s.name, s.role) for s in get_recipe("csam")]
    [('pretrain', 'pretrain_sgd'), ('search', 'from_search'), ('finetune', 'from_finetune')]
  """  # noqa: E501 - a doctest output line.
  if method not in RECIPES:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
  return RECIPES[method]


def section_steps(
  section: ml_collections.ConfigDict, steps_per_epoch: int
) -> int:
  """Steps of one budget section: num_steps if > 0, else epochs * steps."""
  if section.num_steps > 0:
    return int(section.num_steps)
  return int(round(section.epochs * steps_per_epoch))


def stage_steps(
  config: ml_collections.ConfigDict, stage: StageSpec, steps_per_epoch: int
) -> int:
  """Number of training steps of ``stage`` (0 for one-shot pruning).

  Example:
    >>> from experiments.configs import default
    >>> cfg = default.get_config()
    >>> cfg.search.num_steps, cfg.finetune.num_steps = 3, 4
    >>> stage_steps(cfg, get_recipe("dense")[1], steps_per_epoch=10)
    7
  """
  return sum(section_steps(config[s], steps_per_epoch) for s in stage.epochs)


def method_steps(
  config: ml_collections.ConfigDict, method: str, steps_per_epoch: int
) -> int:
  """Total training steps of a method (equal for all methods)."""
  return sum(
    stage_steps(config, s, steps_per_epoch) for s in get_recipe(method)
  )
