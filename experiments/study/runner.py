r"""A study: a grid of (variant x sparsity x seed) runs, one record a cell.

  python -m experiments.study --config=experiments/configs/study_cpu.py
  python -m experiments.study --config=experiments/configs/study_cpu.py \
    --aggregate   # only re-aggregate the committed records

A study config is an experiment config (experiments/configs/default.py)
with a ``study`` section: the variants (experiments/study/variants.py) run at
the main sparsity, the variants also run at the extra sparsities, and the seeds.
Each cell is one `experiments.experiment.run` in its own work directory,
``<workdir>/<cell id>``; every cell of a seed shares that seed's pretraining
(the pretraining checkpoints live in ``<workdir>/pretrain/<key>``, where
every cell of the seed reads them, ``<key>`` a hash of every field
pretraining reads).

The grid is also a list of jobs for a scheduler (`jobs`; docs/cluster.md):
each shared pretraining, then each cell needing it. ``--list`` prints them,
``--cell=ID`` runs one, ``--shard=i/n`` runs a deterministic slice. Workers
claim a job before running it (`experiments.storage.claim`), write records
atomically, and on SIGTERM checkpoint and exit with `PREEMPTED_STATUS`.

A finished cell writes ``<results_dir>/cells/<cell id>.json``: a small,
self-contained record (the cell's config, accuracies, certificates with the
per-image certified indicators, corruption accuracy, wall times) meant to be
committed. Cells whose record exists are skipped, so a study resumes cell
by cell, on this machine or another, and `experiments.study.report`
re-aggregates the records into ``RESULTS.md``, ``summary.json`` and plots
without rerunning anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import ml_collections
from absl import app, flags, logging

from experiments import config_validation, experiment, run_artifacts, storage
from experiments import main as main_lib
from experiments import provenance as provenance_lib
from experiments.reports import report_metrics
from experiments.robustness import evaluation
from experiments.study import pretraining as study_pretraining
from experiments.study import report as study_report
from experiments.study import variants
from experiments.training import checkpointing, methods, stages, train

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
_LIST = flags.DEFINE_bool(
  "list", False, "Print the jobs (id, the jobs it needs, state); run nothing."
)
_CELL = flags.DEFINE_string(
  "cell", None, "Run one job (a cell or a pretraining) by its --list id."
)
_SHARD = flags.DEFINE_string(
  "shard", None, "Run the slice i/n of the jobs: every n-th from the i-th."
)
_WAIT_S = flags.DEFINE_float(
  "wait_s",
  86400.0,
  "How long a cell waits for a pretraining another worker is running.",
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


# The exit status of a worker stopped by SIGTERM (128 + 15, as a shell
# reports it): its work is checkpointed; rerun the same command to resume.
PREEMPTED_STATUS = 143


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
  baselines = study.get("baselines", ())
  if isinstance(baselines, str) or not all(
    isinstance(b, str) for b in baselines
  ):
    raise ValueError(
      f"study.baselines must be a tuple of variant names, got {baselines!r}"
    )
  guard = study.get("guard_reference", "hydra")
  if not isinstance(guard, str):
    raise ValueError(
      f"study.guard_reference must be a variant name, got {guard!r}"
    )
  reuse = study.get("reuse_dirs", ())
  if isinstance(reuse, str) or not all(isinstance(d, str) for d in reuse):
    raise ValueError(
      f"study.reuse_dirs must be a tuple of results directories, got {reuse!r}"
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


def shared_dir(workdir: str, cfg: ml_collections.ConfigDict) -> str:
  """``<workdir>/pretrain/<key>``: the pretraining checkpoints every cell
  of ``cfg``'s key (`pretrain_key`) shares (``pretrain_sgd/``,
  ``pretrain_sam/``)."""
  return os.path.join(workdir, "pretrain", pretrain_key(cfg))


class Job(NamedTuple):
  """One unit of work for a scheduler: a shared pretraining or a cell.

  Attributes:
    id: the job id: a cell's id, or ``pretrain__seed<seed>__<key>``.
    cell: the cell (a pretraining job: the first cell that needs it).
    methods: the methods whose stages the job runs (a pretraining job: one
      per shared role its cells need, run through their shared stages).
    needs: ids of the jobs that must finish first.
  """

  id: str
  cell: Cell
  methods: tuple[str, ...]
  needs: tuple[str, ...]

  @property
  def pretraining(self) -> bool:
    """True for a shared-pretraining job."""
    return not self.needs


def jobs(config: ml_collections.ConfigDict) -> list[Job]:
  """The study as jobs: every shared pretraining first, then the cells in
  grid order (`cells`), each needing its seed's pretraining.

  Example:
    >>> from experiments.configs import study_cpu
    >>> grid = jobs(study_cpu.get_config())
    >>> [j.id[:15] for j in grid[:4]]
    ['pretrain__seed0', 'pretrain__seed1', 'pretrain__seed2', 'csam__s0.90__se']
    >>> grid[3].needs == (grid[0].id,), grid[0].methods
    (True, ('csam', 'sam_prune'))
  """
  pretraining: dict[str, tuple[Cell, dict[str, str]]] = {}
  out = []
  for cell in cells(config.study):
    cfg = cell_config(config, cell)
    job_id = f"pretrain__seed{cell.seed}__{pretrain_key(cfg)}"
    _, roles = pretraining.setdefault(job_id, (cell, {}))
    for method in cfg.methods:
      for spec in methods.get_recipe(method):
        if spec.shared:
          roles.setdefault(spec.role, method)
    out.append(Job(cell.id, cell, tuple(cfg.methods), (job_id,)))
  first = [
    Job(job_id, cell, tuple(dict.fromkeys(roles.values())), ())
    for job_id, (cell, roles) in pretraining.items()
  ]
  return first + out


def shard(all_jobs: list[Job], spec: str) -> list[Job]:
  """The slice ``i/n`` of ``all_jobs``: every n-th job from the i-th
  (0-based), in order, so a scheduler's array index maps onto a shard and
  each shard runs its pretraining jobs before its cells.

  Example:
    >>> grid = [Job(str(k), None, (), ()) for k in range(5)]
    >>> [j.id for j in shard(grid, "1/2")]
    ['1', '3']

  Raises:
    ValueError: ``spec`` is not ``i/n`` with ``0 <= i < n``.
  """
  try:
    i, n = (int(x) for x in spec.split("/"))
  except ValueError:
    i = n = -1
  if not 0 <= i < n:
    raise ValueError(
      f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {spec!r}"
    )
  return all_jobs[i::n]


def record(
  cell: Cell,
  cfg: ml_collections.ConfigDict,
  entry: dict,
) -> dict:
  """The committed record of a finished cell (JSON-able): the run entry's
  fields a report needs, the cross-entropy of the search stage's last
  logged interval (the guard of `experiments.study.report` compares
  C-SAM's with HYDRA's), provenance and the cell's config."""
  records = entry.get("stages", [])
  search = run_artifacts.stage_summary(records, "search").get("last", {})
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
    search_cross_entropy=search.get("cross_entropy"),
    flatness=entry.get("flatness"),
    evaluation_split=evaluation.evaluation_split(cfg),
    provenance=provenance_lib.provenance(),
    config=json.loads(cfg.to_json()),
  )


def record_path(results_dir: str, cell: Cell) -> str:
  """``<results_dir>/cells/<cell id>.json``."""
  return os.path.join(results_dir, "cells", cell.id + ".json")


def _done_marker(shared: str) -> str:
  return os.path.join(shared, "DONE.json")


def run_pretraining(
  config: ml_collections.ConfigDict, job: Job, workdir: str
) -> None:
  """Runs (or resumes) a pretraining job's shared stages; marks it done."""
  cfg = cell_config(config, job.cell)
  with cfg.unlocked():
    cfg.methods = job.methods
  info = config_validation.validate_config(cfg)
  shared = shared_dir(workdir, cfg)
  logging.info("study %s: %s", config.study.name, job.id)
  ctx = train.make_context(cfg, os.path.join(shared, "run"), info, shared)
  stages_by_role = {}
  for method in job.methods:
    run = train.run_method(ctx, method, shared_only=True)
    stages_by_role[study_pretraining.role(method)] = run.records
  ctx.writer.flush()
  # The stage records identify this pretraining run (`reused_record`).
  storage.write_json(
    _done_marker(shared), dict(job=job.id, stages=stages_by_role)
  )


def ensure_pretraining(
  config: ml_collections.ConfigDict,
  job: Job,
  workdir: str,
  wait_s: float,
  poll_s: float = 5.0,
) -> None:
  """Returns once ``job``'s pretraining is done: runs it under a claim
  (`experiments.storage.claim`), or waits for the worker that holds the
  claim, at most ``wait_s`` seconds.

  Raises:
    TimeoutError: another worker still holds it after ``wait_s``.
  """
  shared = shared_dir(workdir, cell_config(config, job.cell))
  claim = os.path.join(workdir, "claims", job.id)
  waited = 0.0
  while not storage.path(_done_marker(shared)).exists():
    if storage.claim(claim):
      try:
        run_pretraining(config, job, workdir)
      finally:
        storage.release(claim)
      return
    if waited >= wait_s:
      raise TimeoutError(
        f"pretraining job {job.id} is claimed by "
        f"{storage.owner(claim)} ({claim}) and not done after {wait_s:g}s; "
        "rerun later, or remove the claim if that worker is gone."
      )
    time.sleep(poll_s)
    waited += poll_s


def _same_run(a: dict, b: dict) -> bool:
  """Two cell configs that differ at most in their name."""
  return {k: v for k, v in a.items() if k != "name"} == {
    k: v for k, v in b.items() if k != "name"
  }


def local_pretraining(
  config: ml_collections.ConfigDict, cell: Cell, workdir: str
) -> dict[str, Any]:
  """The signature (`study_pretraining.signature`) of the pretraining run
  this work directory holds for ``cell`` (empty when it has not run).

  The stage records come from the done marker, or, for a marker written
  before it held them, from the stage-end checkpoint of the last shared
  stage (the same records: `run_pretraining` writes that checkpoint's).
  """
  cfg = cell_config(config, cell)
  shared = shared_dir(workdir, cfg)
  marker = storage.path(_done_marker(shared))
  if not marker.exists():
    return {}
  (method,) = cfg.methods  # a cell runs one method
  by_role = storage.read_json(marker).get("stages") or {}
  stages = by_role.get(study_pretraining.role(method))
  recipe = methods.get_recipe(method)
  shared_stages = [i for i, spec in enumerate(recipe) if spec.shared]
  if stages is None and shared_stages:
    last = shared_stages[-1]
    meta = checkpointing.latest_meta(
      train.stage_directory(workdir, method, last, recipe[last], shared)
    )
    stages = meta["records"] if meta and meta.get("done") else []
  return study_pretraining.signature(stages or [])


def reused_record(
  config: ml_collections.ConfigDict, cell: Cell, pretrained: dict[str, Any]
) -> dict | None:
  """The record of ``cell`` from one of ``study.reuse_dirs`` (another
  study's results) whose config, read through the upgrade path of older
  runs, is the cell's own but for its name, and whose pretraining run is
  ``pretrained`` (`local_pretraining`: the one this study's other cells of
  the seed start from): the same run, not run twice. It gains
  ``reused_from`` (that directory). A record there with the cell's id but
  another config or another pretraining run is not reused (a warning names
  it) and the cell runs.
  """
  own = json.loads(cell_config(config, cell).to_json())
  for directory in config.study.get("reuse_dirs", ()):
    path = storage.path(record_path(directory, cell))
    if not path.exists():
      continue
    rec = storage.read_json(path)
    # Through the upgrade path: a record of an older version holds the
    # config of its day.
    if not _same_run(
      config_validation.stored_config(rec.get("config", {})), own
    ):
      logging.warning(
        "%s: not reused, its config differs from this study's cell", path
      )
    elif not study_pretraining.same_run(
      study_pretraining.signature(rec.get("stages", [])), pretrained
    ):
      logging.warning(
        "%s: not reused, it starts from another pretraining run than this "
        "work directory's (%s)",
        path,
        "its stage records differ" if pretrained else "none recorded here",
      )
    else:
      return dict(rec, reused_from=directory)
  return None


def run_cell(
  config: ml_collections.ConfigDict,
  job: Job,
  workdir: str,
  results_dir: str,
) -> bool:
  """Runs (or resumes) one cell and writes its record atomically.

  Returns:
    False when another worker holds the cell's claim (nothing run).
  """
  cell = job.cell
  claim = os.path.join(workdir, "claims", job.id)
  if not storage.claim(claim):
    logging.warning(
      "study %s: %s is claimed by %s; skipped.",
      config.study.name,
      job.id,
      storage.owner(claim),
    )
    return False
  try:
    cfg = cell_config(config, cell)
    cell_dir = os.path.join(workdir, cell.id)
    logging.info("study %s: cell %s", config.study.name, cell.id)
    (entry,) = experiment.run(cfg, cell_dir, shared_dir(workdir, cfg))["runs"]
    storage.write_json(
      record_path(results_dir, cell),
      record(cell, cfg, entry),
    )
  finally:
    storage.release(claim)
  return True


def run_jobs(
  config: ml_collections.ConfigDict,
  selected: list[Job],
  workdir: str,
  results_dir: str,
  wait_s: float = 0.0,
  after_record: Callable[[], Any] | None = None,
) -> int:
  """Runs the selected jobs in order, skipping recorded cells; a cell first
  makes sure its pretraining is done (`ensure_pretraining`);
  ``after_record`` runs after each cell recorded here. Returns the number
  of cells recorded here."""
  validate_study(config.study)
  if config.certify.enabled:
    report_metrics.check_levels(config.certify.eps)
  by_id = {job.id: job for job in jobs(config)}
  ran = 0
  for job in selected:
    if train.stop_requested():
      raise train.Preempted(f"stopped by SIGTERM before job {job.id}")
    if job.pretraining:
      ensure_pretraining(config, job, workdir, wait_s)
      continue
    if job_done(config, job, workdir, results_dir):
      continue
    # The pretraining first: a record is reused only if it starts from it.
    (needed,) = job.needs
    ensure_pretraining(config, by_id[needed], workdir, wait_s)
    pretrained = local_pretraining(config, job.cell, workdir)
    reused = reused_record(config, job.cell, pretrained)
    if reused is not None:
      storage.write_json(record_path(results_dir, job.cell), reused)
      logging.info("%s: reused from %s", job.id, reused["reused_from"])
    elif not run_cell(config, job, workdir, results_dir):
      continue
    ran += 1
    if after_record is not None:
      after_record()
  return ran


def run_study(
  config: ml_collections.ConfigDict, workdir: str, results_dir: str
) -> dict[str, Any]:
  """Runs every pending cell in grid order (each with its pretraining, run
  when first needed), records each and re-aggregates after each.

  Returns:
    The summary written by `experiments.study.report.aggregate`.
  """
  cell_jobs = [job for job in jobs(config) if not job.pretraining]
  run_jobs(
    config,
    cell_jobs,
    workdir,
    results_dir,
    after_record=lambda: study_report.aggregate(results_dir, config.study),
  )
  return study_report.aggregate(results_dir, config.study)


def job_done(
  config: ml_collections.ConfigDict, job: Job, workdir: str, results_dir: str
) -> bool:
  """A pretraining marked done, or a cell with its record."""
  if job.pretraining:
    shared = shared_dir(workdir, cell_config(config, job.cell))
    return storage.path(_done_marker(shared)).exists()
  return storage.path(record_path(results_dir, job.cell)).exists()


def list_jobs(
  config: ml_collections.ConfigDict, workdir: str, results_dir: str
) -> str:
  """One line a job: its id, the jobs it needs, ``done`` or ``pending``."""
  return "\n".join(
    f"{job.id}\t{','.join(job.needs) or '-'}\t"
    + ("done" if job_done(config, job, workdir, results_dir) else "pending")
    for job in jobs(config)
  )


def select(config: ml_collections.ConfigDict) -> list[Job] | None:
  """The jobs --cell or --shard names (None: neither given).

  Raises:
    app.UsageError: both given, or an unknown --cell id.
  """
  if _CELL.value and _SHARD.value:
    raise app.UsageError("--cell and --shard exclude each other")
  all_jobs = jobs(config)
  if _CELL.value:
    found = [job for job in all_jobs if job.id == _CELL.value]
    if not found:
      raise app.UsageError(
        f"--cell={_CELL.value!r} is not a job of study "
        f"{config.study.name!r}; --list prints them"
      )
    return found
  if _SHARD.value:
    try:
      return shard(all_jobs, _SHARD.value)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
  return None


def main(argv: list[str]) -> None:
  config = main_lib.setup(argv, "experiments/configs/study_cpu.py")
  name = config.study.name
  results_dir = _RESULTS_DIR.value or os.path.join("results", name)
  workdir = _WORKDIR.value or os.path.join("workdir", name)
  validate_study(config.study)
  if _LIST.value:
    print(list_jobs(config, workdir, results_dir))
    return
  if _AGGREGATE.value:
    study_report.aggregate(results_dir, config.study)
  else:
    selected = select(config)
    try:
      with train.stop_on_sigterm():
        if selected is None:
          run_study(config, workdir, results_dir)
        else:
          run_jobs(config, selected, workdir, results_dir, _WAIT_S.value)
          return
    except train.Preempted as e:
      logging.error("%s", e)
      sys.exit(PREEMPTED_STATUS)
  logging.info("Wrote %s", os.path.join(results_dir, "RESULTS.md"))


if __name__ == "__main__":
  app.run(main)
