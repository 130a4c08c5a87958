r"""A study: a grid of (variant x sparsity x seed) runs, one record a cell.

  python -m experiments.study --config=experiments/configs/study_cpu.py
  python -m experiments.study --config=experiments/configs/study_cpu.py \
    --aggregate   # only re-aggregate the committed records

A study config is an experiment config (experiments/configs/default.py)
with a ``study`` section: the variants (experiments/variants.py) run at the
main sparsity, the variants also run at the extra sparsities, and the seeds.
Each cell is one `experiments.experiment.run` in its own work directory,
``<workdir>/<cell id>``; every cell of a seed shares that seed's pretraining
(the pretraining checkpoints live in ``<workdir>/pretrain/<key>`` and are
linked into each cell, ``<key>`` a hash of every field pretraining reads).

A finished cell writes ``<results_dir>/cells/<cell id>.json``: a small,
self-contained record (the cell's config, accuracies, certificates with the
per-image certified indicators, corruption accuracy, wall times) meant to be
committed. Cells whose record exists are skipped, so a study resumes cell
by cell, on this machine or another, and `experiments.study_report`
re-aggregates the records into ``RESULTS.md``, ``summary.json`` and plots
without rerunning anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import ml_collections
from absl import app, flags, logging

from experiments import (
  evaluation,
  experiment,
  logging_utils,
  methods,
  stages,
  study_report,
  variants,
)
from experiments import main as main_lib
from experiments import provenance as provenance_lib

# --config and --workdir are experiments.main's flags (one definition: both
# modules may be imported in one process).
_CONFIG = main_lib._CONFIG
_WORKDIR = main_lib._WORKDIR
_RESULTS_DIR = flags.DEFINE_string(
  "results_dir", None, "Where records and reports go; default results/<name>."
)
_AGGREGATE = flags.DEFINE_bool(
  "aggregate", False, "Only aggregate the existing records; run nothing."
)

# Config fields that only act after pretraining (or not on results): they do
# not change the pretraining checkpoints, so cells differing only there
# share them.
POST_PRETRAINING = (
  "name",
  "overwrite",
  "methods",
  "sparsity",
  "scope",
  "structure",
  "search",
  "gmp",
  "cram",
  "safe",
  "finetune",
  "checkpoint",
  "logging",
  "evaluation",
  "certify",
  "corruptions",
  "flatness",
  "compilation_cache_dir",  # how fast programs compile, not what they do
)


class Cell(NamedTuple):
  """One run of the grid."""

  variant: str
  sparsity: float
  seed: int

  @property
  def id(self) -> str:
    """File-name id, e.g. ``csam__s0.90__seed0``."""
    return f"{self.variant}__s{self.sparsity:.2f}__seed{self.seed}"


def validate_study(study: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad field of a ``study`` section."""
  if not study.name or not isinstance(study.name, str):
    raise ValueError(f"study.name must be a non-empty str, got {study.name!r}")
  for field in ("variants", "extra_variants"):
    for name in study[field]:
      variants.get_variant(name)
  if not study.variants:
    raise ValueError("study.variants must name at least one variant")
  outside = [v for v in study.extra_variants if v not in study.variants]
  if outside:
    raise ValueError(
      f"study.extra_variants {outside} must also be in study.variants"
    )
  for s in (study.sparsity, *study.extra_sparsities):
    if not 0.0 < float(s) < 1.0:
      raise ValueError(f"study sparsities must be in (0, 1), got {s}")
  seeds = list(study.seeds)
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"study.seeds must be distinct ints, got {seeds}")
  image_seed = study.get("image_seed")
  if image_seed is not None and (
    isinstance(image_seed, bool) or not isinstance(image_seed, int)
  ):
    raise ValueError(
      f"study.image_seed must be an int or None, got {image_seed!r}"
    )
  sweep_dir = study.get("sweep_dir")
  if sweep_dir is not None and not isinstance(sweep_dir, str):
    raise ValueError(
      f"study.sweep_dir must be a directory path or None, got {sweep_dir!r}"
    )
  for pair in study.get("pairs", ()):
    if (
      len(pair) != 2
      or pair[0] == pair[1]
      or not set(pair) <= set(study.variants)
    ):
      raise ValueError(
        f"study.pairs: {tuple(pair)!r} must be two different variants of "
        f"study.variants {tuple(study.variants)}"
      )
  if study.main_variant not in study.variants:
    raise ValueError(
      f"study.main_variant={study.main_variant!r} must be one of "
      f"study.variants {tuple(study.variants)}"
    )


def cells(study: ml_collections.ConfigDict) -> list[Cell]:
  """The grid, in the order that answers the main question first.

  Three tiers: the main comparison (``extra_variants``, i.e. the main
  variant and the strongest baselines, at the main sparsity) seed by seed,
  so each seed completes its paired comparisons; then the other variants at
  the main sparsity, then ``extra_variants`` at the extra sparsities, each
  variant on every seed before the next, so each control or ablation
  completes its comparison with the main variant in turn. A study stopped
  part-way has its headline on every seed before any ablation.

  Example:
    >>> from experiments.configs import study_cpu
    >>> grid = cells(study_cpu.get_config().study)
    >>> [c.id for c in grid[:4]]  # doctest: +NORMALIZE_WHITESPACE
    ['csam__s0.90__seed0', 'hydra_aug__s0.90__seed0', 'hydra__s0.90__seed0',
     'csam__s0.90__seed1']
    >>> [c.id for c in grid[9:11]]
    ['gmp__s0.90__seed0', 'gmp__s0.90__seed1']
    >>> len(grid), len({c.seed for c in grid})
    (60, 3)
  """
  main = float(study.sparsity)
  seeds = [int(seed) for seed in study.seeds]
  first = [
    Cell(name, main, seed) for seed in seeds for name in study.extra_variants
  ]
  rest = [v for v in study.variants if v not in study.extra_variants]
  later = [(name, main) for name in rest] + [
    (name, float(s))
    for s in study.extra_sparsities
    for name in study.extra_variants
  ]
  return first + [
    Cell(name, sparsity, seed) for name, sparsity in later for seed in seeds
  ]


def cell_config(
  config: ml_collections.ConfigDict, cell: Cell
) -> ml_collections.ConfigDict:
  """The experiment config of one cell (the study section removed)."""
  out = variants.variant_config(config, cell.variant)
  with out.unlocked():
    del out["study"]
  out.name = f"{config.study.name}-{cell.id}"
  out.seed = cell.seed
  out.sparsity = cell.sparsity
  out.certify.per_image = True
  # One image set for every model and seed of the study (None: each seed
  # its own, as studies before this field).
  out.evaluation.image_seed = config.study.get("image_seed")
  return out


def pretrain_key(cfg: ml_collections.ConfigDict) -> str:
  """Hash of every config field that pretraining reads (the rest dropped)."""
  kept = {k: v for k, v in cfg.to_dict().items() if k not in POST_PRETRAINING}
  blob = json.dumps(kept, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:12]


def link_pretraining(workdir: str, cfg: ml_collections.ConfigDict) -> str:
  """Links the shared pretraining checkpoints into ``workdir``; returns the
  shared directory."""
  shared = os.path.join(os.path.dirname(workdir), "pretrain", pretrain_key(cfg))
  checkpoints = os.path.join(workdir, "checkpoints")
  os.makedirs(checkpoints, exist_ok=True)
  for run in ("pretrain_sgd", "pretrain_sam"):
    target = os.path.join(shared, run)
    os.makedirs(target, exist_ok=True)
    link = os.path.join(checkpoints, run)
    if not os.path.lexists(link):
      os.symlink(os.path.abspath(target), link)
  return shared


def record(
  cell: Cell,
  cfg: ml_collections.ConfigDict,
  entry: dict,
  search_cross_entropy: float | None = None,
) -> dict:
  """The committed record of a finished cell (JSON-able)."""
  records = entry.get("stages", [])
  own = [s for s in records if s.get("kind") != "pretrain"]
  return dict(
    cell=cell.id,
    variant=cell.variant,
    method=entry["method"],
    overrides=dict(variants.get_variant(cell.variant).overrides),
    sparsity=cell.sparsity,
    seed=cell.seed,
    clean_accuracy=entry["clean_accuracy"],
    sparsity_reached=entry["sparsity_reached"],
    wall_time_s=sum(s["wall_time_s"] for s in own),
    pretrain_wall_time_s=sum(
      s["wall_time_s"] for s in records if s.get("kind") == "pretrain"
    ),
    stages=records,
    certification=entry.get("certification"),
    corruptions=entry.get("corruptions"),
    # Model passes per training step of each post-pretraining stage.
    passes_per_step={
      spec.name: stages.passes_per_step(cfg, spec)
      for spec in methods.get_recipe(entry["method"])
      if not spec.shared
    },
    flip_fraction=entry.get("flip_fraction"),
    flip_fraction_per_layer=entry.get("flip_fraction_per_layer"),
    perturbation=entry.get("perturbation"),
    search_cross_entropy=search_cross_entropy,
    flatness=entry.get("flatness"),
    evaluation_split=evaluation.evaluation_split(cfg),
    provenance=provenance_lib.provenance(),
    config=json.loads(cfg.to_json()),
  )


def final_search_loss(cell_dir: str, method: str) -> float | None:
  """Cross-entropy of the last logged interval of the search stage (the
  guard of `experiments.study_report` compares C-SAM's with HYDRA's)."""
  path = os.path.join(cell_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  last = None
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      if row.get("run") == method and row.get("stage") == "search":
        if last is None or row["step"] >= last["step"]:
          last = row
  return None if last is None else last.get("cross_entropy")


def write_json(path: str, data: Any) -> None:
  """Writes ``data`` atomically (a crash leaves the old file or none)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=1)
  os.replace(tmp, path)


def pending(
  config: ml_collections.ConfigDict, results_dir: str
) -> Iterator[Cell]:
  """Cells without a record, in grid order."""
  for cell in cells(config.study):
    if not os.path.exists(
      os.path.join(results_dir, "cells", cell.id + ".json")
    ):
      yield cell


def run_study(
  config: ml_collections.ConfigDict, workdir: str, results_dir: str
) -> dict[str, Any]:
  """Runs every pending cell, records each, then aggregates.

  Returns:
    The summary written by `experiments.study_report.aggregate`.
  """
  validate_study(config.study)
  for cell in pending(config, results_dir):
    cfg = cell_config(config, cell)
    cell_dir = os.path.join(workdir, cell.id)
    # The cell's config.json first: the harness then sees the linked
    # checkpoints as its own run's and resumes from them.
    config_path = os.path.join(cell_dir, "config.json")
    if not os.path.exists(config_path):
      write_json(config_path, json.loads(cfg.to_json()))
    link_pretraining(cell_dir, cfg)
    logging.info("study %s: cell %s", config.study.name, cell.id)
    (entry,) = experiment.run(cfg, cell_dir)["runs"]
    write_json(
      os.path.join(results_dir, "cells", cell.id + ".json"),
      record(cell, cfg, entry, final_search_loss(cell_dir, entry["method"])),
    )
    study_report.aggregate(results_dir, config.study)
  return study_report.aggregate(results_dir, config.study)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError(
      "--config is required, e.g. --config=experiments/configs/study_cpu.py"
    )
  logging_utils.quiet_library_logs()
  config = _CONFIG.value
  name = config.study.name
  results_dir = _RESULTS_DIR.value or os.path.join("results", name)
  if _AGGREGATE.value:
    validate_study(config.study)
    study_report.aggregate(results_dir, config.study)
  else:
    run_study(
      config, _WORKDIR.value or os.path.join("workdir", name), results_dir
    )
  logging.info("Wrote %s", os.path.join(results_dir, "RESULTS.md"))


if __name__ == "__main__":
  app.run(main)
