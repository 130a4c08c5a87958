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

``METHODS`` (these seven) is the default set of a config. ``ALL_METHODS``
adds the compression-aware trainings, run only when named (their stage 2
spends the search and fine-tuning budgets; stage 3 is one-shot pruning and
BatchNorm re-tuning, forward passes only):

  ========== ===================== ============================= ===========
  method     stage 1 (pretrain)    stage 2                       stage 3
  ========== ===================== ============================= ===========
  cram       SGD                   CrAM training (s.+f.)         prune + BNT
  cram_plus  SGD                   CrAM+ Multi training (s.+f.)  prune + BNT
  safe       SGD                   SAFE ADMM + SAM (s.+f.)       project + BNT
  ========== ===================== ============================= ===========

A stage declares its ``role`` (which batches and keys it draws, and whether
it is a pretraining run shared by every method of a work directory), its
``kind`` (what one step does, experiments/training/stages.py), the config
sections whose epochs it spends and the one whose optimizer trains it. Stages of
the same role draw the same batches in the same order and the same per-step
keys, whatever the method, so paired methods differ only in what they do.
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections

STAGE_KINDS = (
  "pretrain",
  "prune",
  "search",
  "gmp",
  "finetune",
  "compression",
  "retune",
)
SEARCH_ALGOS = ("hydra", "csam")
# Algorithms of the "compression" and "retune" stages (experiments/
# compression.py).
COMPRESSION_ALGOS = ("cram", "cram_plus", "safe")
# Roles: the two shared pretraining runs, then where in the
# post-pretraining budget a stage starts ("from_search": the search-budget
# stages of gmp/hydra/csam and the continuations of the other methods;
# "from_finetune": the fine-tuning after a search). The order is part of
# every key and batch stream (experiments/keys.py): append, never reorder.
ROLES = ("pretrain_sgd", "pretrain_sam", "from_search", "from_finetune")
SHARED_ROLES = ("pretrain_sgd", "pretrain_sam")


class StageSpec(NamedTuple):
  """One declared stage of a method (experiments/training/stages.py builds it).

  Attributes:
    name: stage name (directories, logs), unique within the method.
    role: one of ``ROLES``.
    kind: one of ``STAGE_KINDS``: what a step of the stage does.
    epochs: config sections whose step budgets add up to this stage's steps.
    optimizer: config section whose ``optimizer`` field trains this stage.
    sam: weight-space SAM (config.sam) for weight-training stages.
    algo: the search algorithm for ``kind == "search"`` (``SEARCH_ALGOS``),
      the compression-aware one for ``"compression"`` and ``"retune"``
      (``COMPRESSION_ALGOS``).
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
# The default set of a config (config.methods): the paper's seven. A recipe
# registered in RECIPES is runnable (ALL_METHODS), not a default.
METHODS = (
  "dense",
  "dense_sam",
  "sam_prune",
  "prune_sam",
  "gmp",
  "hydra",
  "csam",
)


def config_section(algo: str) -> str:
  """The config section of a compression-aware algorithm's settings.

  Example:
    >>> config_section("cram_plus")
    'cram'
  """
  if algo not in COMPRESSION_ALGOS:
    raise ValueError(f"algo must be one of {COMPRESSION_ALGOS}, got {algo!r}.")
  return algo.removesuffix("_plus")


def _compression(algo: str) -> tuple[StageSpec, ...]:
  """Compression-aware training, then one-shot pruning and BN re-tuning."""
  return (
    _pretrain(sam=False),
    StageSpec(
      name=algo,
      role="from_search",
      kind="compression",
      epochs=("search", "finetune"),
      optimizer=config_section(algo),
      algo=algo,
    ),
    StageSpec(name="prune", role="from_finetune", kind="retune", algo=algo),
  )


RECIPES.update({algo: _compression(algo) for algo in COMPRESSION_ALGOS})
# Every method a config may name.
ALL_METHODS = tuple(RECIPES)
# Stage kinds that set masks: a method with none of them stays dense.
MASKING_KINDS = ("prune", "gmp", "search", "retune")


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
    method: one of ``ALL_METHODS``.

  Returns:
    The method's stages, in order.

  Raises:
    ValueError: unknown method.

  Example:
    >>> [(s.name, s.role) for s in get_recipe("csam")]
    [('pretrain', 'pretrain_sgd'), ('search', 'from_search'), ('finetune', 'from_finetune')]
  """  # noqa: E501 - a doctest output line.
  if method not in RECIPES:
    raise ValueError(f"method must be one of {ALL_METHODS}, got {method!r}.")
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
  """Number of steps of ``stage`` (0 for one-shot pruning).

  A re-tuning stage takes ``config.<algo's section>.retune_batches`` steps
  (forward passes), outside the training budget.

  Example:
    >>> from experiments.configs import default
    >>> cfg = default.get_config()
    >>> cfg.search.num_steps, cfg.finetune.num_steps = 3, 4
    >>> stage_steps(cfg, get_recipe("dense")[1], steps_per_epoch=10)
    7
  """
  if stage.kind == "retune":
    return int(config[config_section(stage.algo)].retune_batches)
  return sum(section_steps(config[s], steps_per_epoch) for s in stage.epochs)


def method_steps(
  config: ml_collections.ConfigDict, method: str, steps_per_epoch: int
) -> int:
  """Total training steps of a method (equal for all methods; re-tuning's
  forward passes are not training steps)."""
  return sum(
    stage_steps(config, s, steps_per_epoch)
    for s in get_recipe(method)
    if s.kind != "retune"
  )
