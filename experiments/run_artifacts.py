"""Reading a run back from its work directory (experiments/experiment.py
writes it): its config through the one upgrade path for older runs, a
method's final state restored from its checkpoint (no stage is run) and the
metric summaries the training loop wrote into the stage records.

Users: export and certify_model (a run's model), the study (a cell's
record) and the experiment itself (a run entry).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from experiments import config_validation, storage
from experiments.training import methods, train
from experiments.training import state as state_lib


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the run in ``workdir`` (its config.json).

  Raises:
    FileNotFoundError: ``workdir`` holds no run.
  """
  path = storage.path(workdir, "config.json")
  if not path.exists():
    raise FileNotFoundError(
      f"{path} not found: --workdir must be the work directory of a run of "
      "python -m experiments.main."
    )
  stored = config_validation.stored_config(storage.read_json(path))
  return ml_collections.ConfigDict(stored)


def load_method(
  workdir: str, method: str
) -> tuple[ml_collections.ConfigDict, state_lib.Model, Any]:
  """Restores the final state of a finished method of a run.

  Args:
    workdir: the run's work directory.
    method: one of the run's ``config.methods``.

  Returns:
    ``(config, model, final TrainState)``.

  Raises:
    ValueError: the method is not part of the run or has not finished.
  """
  config = load_config(workdir)
  if method not in config.methods:
    raise ValueError(
      f"method {method!r} is not in this run; valid: {list(config.methods)}"
    )
  if not storage.path(workdir, "runs", f"{method}.json").exists():
    raise ValueError(
      f"method {method!r} has not finished in {workdir!r} (no "
      f"runs/{method}.json); run python -m experiments.main first."
    )
  recipe = methods.get_recipe(method)
  last = train.stage_directory(workdir, method, len(recipe) - 1, recipe[-1])
  if not config.checkpoint.enabled or not storage.path(last).exists():
    raise ValueError(
      f"no final checkpoint of {method!r} in {workdir!r} ({last} is "
      "missing; runs with checkpoint.enabled=False cannot be exported)."
    )
  info = config_validation.validate_config(config)
  ctx = train.make_context(config, workdir, info)
  return config, ctx.model, train.restore_final(ctx, method).state


def stage_summary(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
  """The metric summary the training loop wrote into the record of stage
  ``name`` (``means`` over the stage and the ``last`` logged interval);
  empty when the stage is absent or its run predates summaries.

  Example:
    >>> stage_summary([{"name": "search", "summary": {"last": {"a": 1}}}],
    ...               "search")
    {'last': {'a': 1}}
  """
  for r in records:
    if r.get("name") == name:
      return r.get("summary") or {}
  return {}
