"""Training driver: runs a method's stages with checkpoints and resume.

``run_method`` walks through a method's recipe
(experiments/training/methods.py), building each declared stage once
(experiments/training/stages.py) and handing it to ``run_stage``: the stage
``begin``s (new masks / optimizer state), steps over deterministic, resumable
batches (running its per-step ``hook`` first, when it has one), ``finalize``s
(hard masks) and saves a stage-end checkpoint. The loop knows no method by name.
On start it resumes from the newest readable checkpoint of the latest stage that
has one, so a run killed at any point (SIGKILL included) and restarted ends with
bitwise the same params on CPU: the state,
the per-step keys (``fold_in(stage_key, step)``) and the batches
(``train_batches(start_step=step)``) are all functions of the step. Keys
and batch streams come from the stage's role (experiments/keys.py), not the
method, so every method's stages of one role see the same batches and keys.

A NaN/Inf loss raises NonFiniteLossError naming the method, stage and step;
non-finite states are never saved, so the last good checkpoint remains.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from experiments import input_pipeline, keys, models
from experiments.robustness import evaluation, samplers
from experiments.training import (
  checkpointing,
  logging_utils,
  methods,
  parallel,
  stages,
)
from experiments.training import state as state_lib
from experiments.training.methods import StageSpec

PyTree = Any


class NonFiniteLossError(FloatingPointError):
  """A training loss became NaN or Inf."""


class Preempted(RuntimeError):
  """SIGTERM stopped the run; its state was checkpointed at the last step."""


_STOP = threading.Event()


@contextlib.contextmanager
def stop_on_sigterm():
  """Within the block, SIGTERM (a preemption, ``scancel``, a TPU VM's
  maintenance event) makes the training loop save a checkpoint after the
  step it is in and raise `Preempted`; the next attempt resumes from that
  checkpoint. Main thread only (Python's signal handlers)."""
  previous = signal.signal(signal.SIGTERM, lambda *_: _STOP.set())
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)
    _STOP.clear()


def stop_requested(collective: bool = True) -> bool:
  """True once SIGTERM arrived under `stop_on_sigterm`. With several
  processes, True when any of them got it, asked only where ``collective``
  (every process must then call it at the same point), else False."""
  if jax.process_count() == 1:
    return _STOP.is_set()
  if not collective:
    return False
  flags = multihost_utils.process_allgather(np.array(_STOP.is_set()))
  return bool(np.any(flags))


class Context(NamedTuple):
  """What every stage of every method shares.

  Attributes:
    config: the experiment config.
    workdir: the work directory.
    shared_dir: where the shared (pretraining) stages keep their
      checkpoints, ``<workdir>/checkpoints`` unless a study shares them
      between cells.
    mesh: the 1-D "data" mesh.
    model: the model and its input normalisation.
    info: the dataset's DatasetInfo.
    steps_per_epoch: global batches per training epoch.
    keys: the run's keys and data seeds by purpose (experiments/keys.py).
    writer: metrics writer (writes on process 0 only).
    stages: every stage of the configured methods' recipes, built once
      (``{spec: Stage}``): methods sharing a stage share its compiled
      functions.
    cache: the jitted model init and evaluation functions, compiled once
      per run.
  """

  config: Any
  workdir: str
  shared_dir: str
  mesh: Any
  model: state_lib.Model
  info: Any
  steps_per_epoch: int
  keys: keys.RunKeys
  writer: logging_utils.MetricWriter
  stages: dict[StageSpec, stages.Stage]
  cache: dict


def make_context(
  config: ml_collections.ConfigDict,
  workdir: str,
  info: Any,
  shared_dir: str | None = None,
) -> Context:
  """Builds the model, mesh, keys, writer and stages every method shares
  (``shared_dir``: see `Context`)."""
  module = models.from_config(config.model, info.num_classes)
  uses_variations = (
    "csam" in config.methods or config.finetune.augment_variations
  )
  csam = config.search.csam
  sampler = (
    samplers.make_sampler(csam.distribution, csam.variations)
    if uses_variations
    else None
  )
  model = state_lib.Model(module, tuple(info.mean), tuple(info.std))
  mesh = parallel.make_mesh()
  steps_per_epoch = max(info.num_examples["train"] // config.batch_size, 1)
  specs = dict.fromkeys(
    spec for method in config.methods for spec in methods.get_recipe(method)
  )
  return Context(
    config=config,
    workdir=workdir,
    shared_dir=shared_dir or os.path.join(workdir, "checkpoints"),
    mesh=mesh,
    model=model,
    info=info,
    steps_per_epoch=steps_per_epoch,
    keys=keys.run_keys(config.seed),
    writer=logging_utils.MetricWriter(
      workdir,
      enabled=jax.process_index() == 0,
      tensorboard=config.logging.tensorboard,
    ),
    stages={
      spec: stages.build(
        config,
        spec,
        model,
        steps_per_epoch,
        sampler,
        out_sharding=parallel.replicated(mesh),
      )
      for spec in specs
    },
    cache={},
  )


def stage_directory(
  workdir: str,
  method: str,
  index: int,
  spec: StageSpec,
  shared_dir: str | None = None,
) -> str:
  """Checkpoint directory of a stage run; shared ones by their role, in
  ``shared_dir`` (default ``<workdir>/checkpoints``)."""
  if spec.shared:
    return os.path.join(
      shared_dir or os.path.join(workdir, "checkpoints"), spec.role
    )
  return os.path.join(workdir, "checkpoints", method, f"{index}_{spec.name}")


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


def _flush_metrics(ctx, sr, pending, progress) -> None:
  """Checks pending per-step metrics for NaN/Inf, logs and writes their mean
  (one metrics.jsonl row), and adds it to the stage's summary.

  Raises:
    NonFiniteLossError: naming the first step with a non-finite loss.
  """
  if not pending:
    return
  label = sr.label
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
    sr.run, label[1], last, dict(mean, steps_per_second=progress.rate(last))
  )
  sr.summary.add(last, mean)  # The training metrics; no timing.
  pending.clear()


class StageRun(NamedTuple):
  """One stage of one method being run.

  Attributes:
    label: (method, stage name) for messages.
    run: run name for metrics (method or shared pretraining role).
    stage: the built stage.
    ckpt: the stage's checkpointer.
    meta: metadata saved with each checkpoint (``step``, ``done``,
      ``elapsed_s`` added); ``meta["records"]`` lists the earlier stages.
    data_seed: seed of the stage's batches.
    t0: wall-clock start of the stage (earlier, resumed time included).
    started: wall-clock start of the stage in this session (before
      ``begin``), for the time to its first training step.
    compile0: compilation totals at ``started``.
    step: the stage's step: ``stage.step`` or the program compiled ahead
      for it (``_compile_ahead``).
    summary: the running summary of the stage's logged metrics (its state
      goes into every checkpoint's meta, its result into the stage record).
  """

  label: tuple[str, str]
  run: str
  stage: stages.Stage
  ckpt: checkpointing.StageCheckpointer
  meta: dict[str, Any]
  data_seed: int
  t0: float
  started: float
  compile0: logging_utils.CompileTotals
  step: Callable[..., Any]
  summary: logging_utils.StageSummary


def _first_step_started(sr: StageRun) -> float:
  """Logs and returns the time to the start of the stage's first step.

  Called when the first training step has been dispatched: its program is
  compiled (or read from the persistent cache) and queued; its own compute
  runs asynchronously and is not included. The time runs from the stage's
  start in this session (before ``begin``).
  """
  now = time.time()
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


def run_stage(
  ctx: Context, sr: StageRun, state: state_lib.TrainState
) -> tuple[state_lib.TrainState, list[dict[str, Any]]]:
  """Steps a stage from ``state.step`` to its end, then finalizes and saves.

  Each step runs the stage's ``hook`` (when it has one), then its ``step``
  on the next batch; metrics are flushed and checkpoints saved
  periodically.

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
  stage, config = sr.stage, ctx.config
  n, start = stage.num_steps, int(parallel.to_host(state.step))
  first_step_s = None
  if start < n:
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
      if stage.hook is not None:
        state = stage.hook(state, t)
      batch = parallel.global_batch(next(batches), ctx.mesh)
      state, metrics = sr.step(state, batch)
      if t == start:
        first_step_s = _first_step_started(sr)
      pending.append((t, metrics))
      flush = (t + 1) % log_every == 0 or t + 1 == n
      # Several processes agree on a stop at flush steps only (a collective).
      stop = t + 1 < n and stop_requested(collective=flush)
      saving = sr.ckpt.should_save(t + 1, n) or stop
      if saving or flush:
        _flush_metrics(ctx, sr, pending, progress)
      if saving:
        meta = dict(
          sr.meta,
          step=t + 1,
          done=False,
          elapsed_s=time.time() - sr.t0,
          summary=sr.summary.to_json(),
        )
        sr.ckpt.save(t + 1, state, meta)
      if stop:
        raise Preempted(
          f"{'/'.join(sr.label)}: stopped by SIGTERM at step {t + 1}/{n}, "
          "checkpointed; the next attempt resumes there."
        )
  return _finish(ctx, sr, stage.finalize(state), first_step_s)


def _finish(ctx, sr, state, first_step_s):
  """The stage's record (and evaluation); saves the stage-end checkpoint."""
  n = sr.stage.num_steps
  record = dict(
    name=sr.stage.spec.name,
    kind=sr.stage.spec.kind,
    steps=n,
    wall_time_s=time.time() - sr.t0,
    time_to_first_step_s=first_step_s,
    summary=sr.summary.result(),
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
    sr.meta, step=n, done=True, elapsed_s=record["wall_time_s"], records=records
  )
  sr.ckpt.save(n, state, meta)
  return state, records


def _templates(ctx, recipe):
  """Abstract states: ``[initial, after stage 0's begin, after stage 1's
  begin, ...]`` on the replicated sharding (``[1:]``: the restore
  targets)."""
  rep = parallel.replicated(ctx.mesh)
  key = jax.random.PRNGKey(0)
  abstract = jax.eval_shape(_init_fn(ctx), ctx.keys.init)
  templates = [checkpointing.abstract_like(abstract, rep)]
  for spec in recipe:
    abstract = jax.eval_shape(ctx.stages[spec].begin, abstract, key)
    templates.append(checkpointing.abstract_like(abstract, rep))
  return templates


def _find_resume(ctx, method, recipe, templates):
  """(stage index, state, meta) of the newest readable checkpoint or None."""
  for i in reversed(range(len(recipe))):
    directory = stage_directory(
      ctx.workdir, method, i, recipe[i], ctx.shared_dir
    )
    if not os.path.isdir(directory):
      continue
    ckpt = _checkpointer(ctx, directory)
    found = ckpt.restore_latest(templates[i + 1])
    ckpt.close()
    if found is not None:
      return i, found[0], found[1]
  return None


def _init_fn(ctx: Context):
  """The jitted initialisation: the run's ``init`` key -> initial state."""
  impl = ctx.config.model.get("init_prng", "threefry")
  if ("init",) not in ctx.cache:
    ctx.cache[("init",)] = jax.jit(
      lambda k: state_lib.init_train_state(
        ctx.model, state_lib.init_key(k, impl), ctx.info.image_shape
      ),
      out_shardings=parallel.replicated(ctx.mesh),
    )
  return ctx.cache[("init",)]


def init_state(ctx: Context) -> state_lib.TrainState:
  """The initial (replicated) state from the run's ``init`` key.

  The parameters are drawn with ``config.model.init_prng`` (a key derived
  from the init key, ``state.init_key``).
  """
  return _init_fn(ctx)(ctx.keys.init)


def _compile_in_thread(fn, *args) -> futures.Future:
  """Lowers the jitted ``fn`` for ``args`` (arrays or ShapeDtypeStructs)
  here and compiles it in a thread: a Future of the program, the one
  ``fn`` compiles for those shapes. Lowering traces Python and holds the
  GIL; XLA's compilation releases it."""
  lowered = fn.lower(*args)
  pool = futures.ThreadPoolExecutor(max_workers=1)
  future = pool.submit(lowered.compile)
  pool.shutdown(wait=False)
  return future


def _compile_ahead(
  ctx: Context, spec: StageSpec, template: PyTree
) -> futures.Future | None:
  """Starts compiling ``spec``'s step in a thread: a Future of the program.

  The step's argument shapes are known before the state it starts from
  exists (``template``: the state after ``begin``, on the replicated
  sharding; the batch from ``input_pipeline.train_batch_shapes``), so its
  compilation, the longest part of a cold start, runs while the initial
  state is drawn or a checkpoint is read (both compile programs of their
  own). None for a stage without a step.
  """
  step = ctx.stages[spec].step
  if step is None:
    return None
  sharding = parallel.batch_sharded(ctx.mesh)
  batch = {
    name: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    for name, (shape, dtype) in input_pipeline.train_batch_shapes(
      ctx.info, ctx.config.batch_size
    ).items()
  }
  return _compile_in_thread(step, template, batch)


def _resume(ctx, method, recipe, templates):
  """Where to start: (first stage, records, restored mid-stage state or
  None, its meta, finished state to begin the first stage from or None for
  the initial state)."""
  found = _find_resume(ctx, method, recipe, templates)
  if found is None:
    return 0, [], None, None, None
  first, restored, meta = found
  logging.info(
    "%s: resuming stage %d (%s) at step %d%s",
    method,
    first,
    recipe[first].name,
    meta["step"],
    " (done)" if meta["done"] else "",
  )
  if meta["done"]:
    return first + 1, list(meta["records"]), None, None, restored
  return first, list(meta["records"]), restored, meta, None


class MethodRun(NamedTuple):
  """What ``run_method`` gives back.

  Attributes:
    state: the final state.
    records: one record per stage (``run_stage``).
    first_step_time: wall-clock time at which the method's first training
      step of this session started; None when every stage was done before.
  """

  state: state_lib.TrainState
  records: list[dict[str, Any]]
  first_step_time: float | None


def run_method(
  ctx: Context, method: str, shared_only: bool = False
) -> MethodRun:
  """Trains ``method`` through its recipe's stages, resuming when possible.

  Args:
    ctx: the shared context.
    method: one of ``methods.ALL_METHODS``.
    shared_only: run only the recipe's shared stages (its pretraining, a
      study's job of its own).

  Returns:
    the final state, the stage records (name, kind, steps, wall time, the
    summary of the logged metrics, and clean accuracy of the stage) and
    the time of the first training step (``MethodRun``).

  Raises:
    NonFiniteLossError: on a NaN/Inf loss.
  """
  recipe = methods.get_recipe(method)
  if shared_only:
    recipe = tuple(spec for spec in recipe if spec.shared)
  templates = _templates(ctx, recipe)
  first, records, restored, meta, state = _resume(
    ctx, method, recipe, templates
  )
  ahead = begin_ahead = None
  if first < len(recipe):
    # The step first: the longest compilation, then the first begin (not
    # run when resuming mid-stage), both beside the initialisation's.
    ahead = _compile_ahead(ctx, recipe[first], templates[first + 1])
    if restored is None:
      begin_ahead = _compile_in_thread(
        ctx.stages[recipe[first]].begin,
        templates[0] if state is None else state,
        ctx.keys.stages[recipe[first].role],
      )
  if state is None and restored is None:
    state = init_state(ctx)  # While the first stage's programs compile.
  first_step_time = None
  for i in range(first, len(recipe)):
    spec = recipe[i]
    stage = ctx.stages[spec]
    elapsed, started = 0.0, time.time()
    compile0 = logging_utils.compile_totals()
    summary = logging_utils.StageSummary()
    if restored is None:
      begin = stage.begin
      if i == first and begin_ahead is not None:
        begin = begin_ahead.result()
      state = begin(state, ctx.keys.stages[spec.role])
    else:
      state, elapsed, restored = restored, float(meta["elapsed_s"]), None
      summary = _resumed_summary(meta)
    step = stage.step
    if i == first and ahead is not None:
      step = ahead.result()
    run = spec.role if spec.shared else method
    sr = StageRun(
      label=(method, spec.name),
      run=run,
      stage=stage,
      ckpt=_checkpointer(
        ctx, stage_directory(ctx.workdir, method, i, spec, ctx.shared_dir)
      ),
      meta=dict(
        method=run,
        stage=spec.name,
        kind=spec.kind,
        stage_index=i,
        records=records[:i],
      ),
      data_seed=ctx.keys.data[spec.role],
      t0=time.time() - elapsed,
      started=started,
      compile0=compile0,
      step=step,
      summary=summary,
    )
    state, records = run_stage(ctx, sr, state)
    sr.ckpt.close()
    to_first_step = records[-1]["time_to_first_step_s"]
    if first_step_time is None and to_first_step is not None:
      first_step_time = started + to_first_step
  return MethodRun(state, records, first_step_time)


def restore_final(ctx: Context, method: str) -> MethodRun:
  """The final state and stage records of a finished method, read from its
  last stage's stage-end checkpoint; nothing is trained or compiled.

  Raises:
    ValueError: the method's last stage has no stage-end checkpoint.
  """
  recipe = methods.get_recipe(method)
  found = _find_resume(ctx, method, recipe, _templates(ctx, recipe))
  if found is None or found[0] != len(recipe) - 1 or not found[2]["done"]:
    last = stage_directory(
      ctx.workdir, method, len(recipe) - 1, recipe[-1], ctx.shared_dir
    )
    raise ValueError(
      f"{method!r} has not finished in {ctx.workdir!r}: no stage-end "
      f"checkpoint in {last}."
    )
  _, state, meta = found
  return MethodRun(state, list(meta["records"]), None)


def _resumed_summary(meta: dict[str, Any]) -> logging_utils.StageSummary:
  """The summary a mid-stage checkpoint holds; a checkpoint that predates
  summaries starts one at its step."""
  if "summary" in meta:
    return logging_utils.StageSummary.from_json(meta["summary"])
  return logging_utils.StageSummary(from_step=int(meta["step"]))
