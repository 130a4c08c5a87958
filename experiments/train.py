"""Training driver: runs a method's stages with checkpoints and resume.

``run_method`` walks through the stages of a method (experiments/methods.py).
Each stage ``begin``s (new masks / optimizer state), steps over
deterministic, resumable batches, ``finalize``s (hard masks) and saves a
stage-end checkpoint. On start it resumes from the newest readable checkpoint
of the latest stage that has one, so a run killed at any point (SIGKILL
included) and restarted ends with bitwise the same params on CPU: the state,
the per-step keys (``fold_in(stage_key, step)``) and the batches
(``train_batches(start_step=step)``) are all functions of the step. Keys
and batch streams are seeded by the stage's role (`stage_role`), not by the
method, so every method's stages of one role see the same batches and keys.

A NaN/Inf loss raises NonFiniteLossError naming the method, stage and step;
non-finite states are never saved, so the last good checkpoint remains.
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging

from experiments import (
  checkpointing,
  evaluation,
  input_pipeline,
  logging_utils,
  methods,
  parallel,
  stages,
)
from experiments import state as state_lib

PyTree = Any


class NonFiniteLossError(FloatingPointError):
  """A training loss became NaN or Inf."""


class Context(NamedTuple):
  """What every stage of every method shares.

  Attributes:
    config: the experiment config.
    workdir: the work directory.
    mesh: the 1-D "data" mesh.
    model: the model and its input normalisation.
    info: the dataset's DatasetInfo.
    steps_per_epoch: global batches per training epoch.
    writer: metrics writer (writes on process 0 only).
    sample_fn: C-SAM input-variation sampler (or None).
    cache: jitted functions keyed by (stage, name), shared by the methods
      that run the same stage (one compilation each); also the wall-clock
      time of each method's first training step, ``("first_step_time",
      method)``.
  """

  config: Any
  workdir: str
  mesh: Any
  model: state_lib.ModelFns
  info: Any
  steps_per_epoch: int
  writer: logging_utils.MetricWriter
  sample_fn: Any
  cache: dict


def _jitted(ctx: Context, key: tuple, fn, **jit_kwargs):
  if key not in ctx.cache:
    ctx.cache[key] = jax.jit(fn, **jit_kwargs)
  return ctx.cache[key]


def stage_fns(ctx: Context, stage: methods.Stage) -> stages.StageFns:
  """The stage's functions; built once per context (stages are hashable)."""
  key = (stage, "fns")
  if key not in ctx.cache:
    num_steps = methods.stage_steps(ctx.config, stage, ctx.steps_per_epoch)
    ctx.cache[key] = stages.make_stage_fns(
      ctx.config,
      stage,
      ctx.model,
      num_steps,
      ctx.steps_per_epoch,
      ctx.sample_fn,
    )
  return ctx.cache[key]


# Keys and batch streams by the role of a stage, never by the method: two
# methods' stages of the same role draw the same batches in the same order
# and the same per-step keys, so paired methods differ only in what they do.
ROLES = ("pretrain_sgd", "pretrain_sam", "from_search", "from_finetune")


def stage_role(stage: methods.Stage) -> str:
  """The role of a stage: its shared pretraining run, or where in the
  post-pretraining budget it starts ("from_search": the search-budget
  stages of gmp/hydra/csam and the continuations of the other methods;
  "from_finetune": the fine-tuning after a search).

  Example:
    >>> [stage_role(s) for s in methods.get_stages("hydra")]
    ['pretrain_sgd', 'from_search', 'from_finetune']
    >>> [stage_role(s) for s in methods.get_stages("dense")]
    ['pretrain_sgd', 'from_search']
  """
  if stage.shared_id is not None:
    return stage.shared_id
  if stage.budget[:1] == ("finetune",):
    return "from_finetune"
  return "from_search"


def stage_uid(stage: methods.Stage) -> int:
  """Integer id of a stage's role (its keys and data seed)."""
  return ROLES.index(stage_role(stage))


def stage_directory(
  workdir: str, method: str, index: int, stage: methods.Stage
) -> str:
  """Checkpoint directory of a stage run."""
  if stage.shared_id is not None:
    return os.path.join(workdir, "checkpoints", stage.shared_id)
  return os.path.join(workdir, "checkpoints", method, f"{index}_{stage.name}")


def _stage_key(config, uid: int) -> jax.Array:
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), uid)


def _data_seed(config, uid: int) -> int:
  return int(config.seed) * 1_000_003 + uid


def _checkpointer(
  ctx: Context, directory: str
) -> checkpointing.StageCheckpointer:
  c = ctx.config.checkpoint
  return checkpointing.StageCheckpointer(
    directory,
    max_to_keep=c.max_to_keep,
    every_steps=c.every_steps,
    enabled=c.enabled,
  )


def _flush_metrics(ctx, label, run, stage, pending, progress) -> None:
  """Checks pending per-step metrics for NaN/Inf, logs and writes their mean.

  Raises:
    NonFiniteLossError: naming the first step with a non-finite loss.
  """
  if not pending:
    return
  host = [(t, parallel.to_host(m)) for t, m in pending]
  for t, m in host:
    finite = m.pop("finite", True)
    if not np.isfinite(m["loss"]) or not finite:
      raise NonFiniteLossError(
        f"Non-finite loss ({float(m['loss'])}) or parameters (finite: "
        f"{bool(finite)}) in method {label[0]!r}, stage {label[1]!r}, step "
        f"{t}; the last good checkpoint is kept."
      )
  last = host[-1][0] + 1
  mean = {k: float(np.mean([m[k] for _, m in host])) for k in host[0][1]}
  # Per-layer metrics ("flip/<layer>") go to metrics.jsonl, not the log line.
  progress.log(last, {k: v for k, v in mean.items() if "/" not in k})
  ctx.writer.write(
    run, stage, last, dict(mean, steps_per_second=progress.rate(last))
  )
  pending.clear()


class StageRun(NamedTuple):
  """One stage of one method being run.

  Attributes:
    label: (method, stage name) for messages.
    run: run name for metrics (method or shared pretraining).
    stage: the stage.
    ckpt: the stage's checkpointer.
    meta: metadata saved with each checkpoint (``step``, ``done``,
      ``elapsed_s`` added); ``meta["records"]`` lists the earlier stages.
    data_seed: seed of the stage's batches.
    t0: wall-clock start of the stage (earlier, resumed time included).
    started: wall-clock start of the stage in this session (before
      ``begin``), for the time to its first training step.
    compile0: compilation totals at ``started``.
  """

  label: tuple[str, str]
  run: str
  stage: methods.Stage
  ckpt: checkpointing.StageCheckpointer
  meta: dict[str, Any]
  data_seed: int
  t0: float
  started: float
  compile0: logging_utils.CompileTotals


def _first_step_started(ctx: Context, sr: StageRun) -> float:
  """Logs and returns the time to the start of the stage's first step.

  Called when the first training step has been dispatched: its program is
  compiled (or read from the persistent cache) and queued; its own compute
  runs asynchronously and is not included. The time runs from the stage's
  start in this session (before ``begin``). The first of the method's
  stages to get here also sets the method's first-step time
  (``ctx.cache[("first_step_time", method)]``, a wall-clock time).
  """
  now = time.time()
  ctx.cache.setdefault(("first_step_time", sr.label[0]), now)
  compiled = logging_utils.compile_totals().since(sr.compile0)
  logging.info(
    "[%s] first training step started %.1fs after the stage start "
    "(compilation %.1fs: %d programs, %d from the persistent cache)",
    "/".join(sr.label),
    now - sr.started,
    compiled.seconds,
    compiled.compilations,
    compiled.cache_hits,
  )
  return now - sr.started


def _step_loop(
  ctx: Context, sr: StageRun, state: state_lib.TrainState
) -> tuple[state_lib.TrainState, float | None]:
  """Steps from ``state.step`` to the end of the stage (periodic saves).

  Returns:
    ``(state, seconds from the stage start to the start of its first step
    in this session, or None when no step was run)``.
  """
  fns = stage_fns(ctx, sr.stage)
  config, n = ctx.config, fns.num_steps
  start = int(parallel.to_host(state.step))
  first_step_s = None
  if start >= n:
    return state, first_step_s
  rep = parallel.replicated(ctx.mesh)
  step_fn = _jitted(ctx, (sr.stage, "step"), fns.step, out_shardings=(rep, rep))
  if fns.gmp_update is not None:
    # The pruned count is an argument: one compilation for the schedule.
    gmp_fn = _jitted(ctx, (sr.stage, "gmp"), fns.gmp_update, out_shardings=rep)
  batches = input_pipeline.train_batches(
    config.data,
    batch_size=config.batch_size,
    seed=sr.data_seed,
    start_step=start,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    normalize=False,
  )
  progress = logging_utils.Progress("/".join(sr.label), start, n)
  pending = []
  log_every = max(int(config.logging.log_every_steps), 1)
  for t in range(start, n):
    if fns.gmp_update is not None:
      sparsity = stages.gmp_sparsity(t, n, config)
      if sparsity is not None:
        num_pruned = stages.gmp_num_pruned(state.params, sparsity, config)
        state = gmp_fn(state, num_pruned)
    batch = parallel.global_batch(next(batches), ctx.mesh)
    state, metrics = step_fn(state, batch)
    if t == start:
      first_step_s = _first_step_started(ctx, sr)
    pending.append((t, metrics))
    saving = sr.ckpt.should_save(t + 1, n)
    if saving or (t + 1) % log_every == 0 or t + 1 == n:
      _flush_metrics(ctx, sr.label, sr.run, sr.label[1], pending, progress)
    if saving:
      meta = dict(
        sr.meta, step=t + 1, done=False, elapsed_s=time.time() - sr.t0
      )
      sr.ckpt.save(t + 1, state, meta)
  return state, first_step_s


def run_stage(
  ctx: Context, sr: StageRun, state: state_lib.TrainState
) -> tuple[state_lib.TrainState, list[dict[str, Any]]]:
  """Steps a stage from ``state.step`` to its end, then finalizes and saves.

  Args:
    ctx: the shared context.
    sr: the stage run.
    state: state after ``begin`` (or restored mid-stage).

  Returns:
    ``(finalized state, records)``: the records now include this stage
    (name, kind, steps, wall_time_s, time_to_first_step_s (None when no
    step ran in this session), compile_time_s (this session's compilation
    time during the stage, evaluation included), and eval_accuracy of the
    hard-masked model when config.evaluation.every_stage).

  Raises:
    NonFiniteLossError: on a NaN/Inf loss.
  """
  fns = stage_fns(ctx, sr.stage)
  state, first_step_s = _step_loop(ctx, sr, state)
  finalize = _jitted(
    ctx,
    (sr.stage, "finalize"),
    fns.finalize,
    out_shardings=parallel.replicated(ctx.mesh),
  )
  state = finalize(state)
  record = dict(
    name=sr.stage.name,
    kind=sr.stage.kind,
    steps=fns.num_steps,
    wall_time_s=time.time() - sr.t0,
    time_to_first_step_s=first_step_s,
  )
  if ctx.config.evaluation.every_stage:
    record["eval_accuracy"] = evaluation.evaluate_accuracy(
      ctx.model, state, ctx.config, ctx.mesh, cache=ctx.cache
    )
    logging.info(
      "[%s] eval accuracy %.4f", "/".join(sr.label), record["eval_accuracy"]
    )
  record["compile_time_s"] = (
    logging_utils.compile_totals().since(sr.compile0).seconds
  )
  records = list(sr.meta["records"]) + [record]
  meta = dict(
    sr.meta,
    step=fns.num_steps,
    done=True,
    elapsed_s=record["wall_time_s"],
    records=records,
  )
  sr.ckpt.save(fns.num_steps, state, meta)
  return state, records


def _templates(ctx, method, all_fns, init_state):
  """Abstract states after each stage's begin (the restore targets)."""
  rep = parallel.replicated(ctx.mesh)
  key = jax.random.PRNGKey(0)
  templates, abstract = [], jax.eval_shape(lambda s: s, init_state)
  for fns in all_fns:
    abstract = jax.eval_shape(fns.begin, abstract, key)
    templates.append(checkpointing.abstract_like(abstract, rep))
  return templates


def _find_resume(ctx, method, stage_list, templates):
  """(stage index, state, meta) of the newest readable checkpoint or None."""
  for i in reversed(range(len(stage_list))):
    directory = stage_directory(ctx.workdir, method, i, stage_list[i])
    if not os.path.isdir(directory):
      continue
    ckpt = _checkpointer(ctx, directory)
    found = ckpt.restore_latest(templates[i])
    ckpt.close()
    if found is not None:
      return i, found[0], found[1]
  return None


def init_state(ctx: Context) -> state_lib.TrainState:
  """The initial (replicated) state from ``config.seed``.

  The parameters are drawn with ``config.model.init_prng`` (a key derived
  from the seed, ``state.init_key``).
  """
  impl = ctx.config.model.get("init_prng", "threefry")
  key = jax.random.fold_in(jax.random.PRNGKey(ctx.config.seed), 2**20)
  init = _jitted(
    ctx,
    ("init",),
    lambda k: state_lib.init_train_state(
      ctx.model, state_lib.init_key(k, impl), ctx.info.image_shape
    ),
    out_shardings=parallel.replicated(ctx.mesh),
  )
  return init(key)


def _resume(ctx, method, stage_list, state):
  """Where to start: (first stage, records, restored mid-stage state or
  None, its meta, state to begin the first stage from)."""
  all_fns = [stage_fns(ctx, s) for s in stage_list]
  found = _find_resume(
    ctx, method, stage_list, _templates(ctx, method, all_fns, state)
  )
  if found is None:
    return 0, [], None, None, state
  first, restored, meta = found
  logging.info(
    "%s: resuming stage %d (%s) at step %d%s",
    method,
    first,
    stage_list[first].name,
    meta["step"],
    " (done)" if meta["done"] else "",
  )
  if meta["done"]:
    return first + 1, list(meta["records"]), None, None, restored
  return first, list(meta["records"]), restored, meta, state


def run_method(
  ctx: Context, method: str
) -> tuple[state_lib.TrainState, list[dict[str, Any]]]:
  """Trains ``method`` through all its stages, resuming when possible.

  Args:
    ctx: the shared context.
    method: one of ``methods.METHODS``.

  Returns:
    ``(final state, stage records)``; a record holds name, kind, steps,
    wall time (and clean accuracy) of the stage.

  Raises:
    NonFiniteLossError: on a NaN/Inf loss.
  """
  stage_list = methods.get_stages(method)
  first, records, restored, meta, state = _resume(
    ctx, method, stage_list, init_state(ctx)
  )
  for i in range(first, len(stage_list)):
    stage = stage_list[i]
    uid = stage_uid(stage)
    elapsed, started = 0.0, time.time()
    compile0 = logging_utils.compile_totals()
    if restored is None:
      rep = parallel.replicated(ctx.mesh)
      begin = _jitted(
        ctx, (stage, "begin"), stage_fns(ctx, stage).begin, out_shardings=rep
      )
      state = begin(state, _stage_key(ctx.config, uid))
    else:
      state, elapsed, restored = restored, float(meta["elapsed_s"]), None
    run = stage.shared_id or method
    sr = StageRun(
      label=(method, stage.name),
      run=run,
      stage=stage,
      ckpt=_checkpointer(ctx, stage_directory(ctx.workdir, method, i, stage)),
      meta=dict(
        method=run,
        stage=stage.name,
        kind=stage.kind,
        stage_index=i,
        records=records[:i],
      ),
      data_seed=_data_seed(ctx.config, uid),
      t0=time.time() - elapsed,
      started=started,
      compile0=compile0,
    )
    state, records = run_stage(ctx, sr, state)
    sr.ckpt.close()
  return state, records
