"""Progress lines, metrics.jsonl and TensorBoard scalars (process 0 only)."""

from __future__ import annotations

import json
import logging as logging_std
import math
import os
import threading
import time
from typing import Any, NamedTuple

import jax
from absl import logging

from experiments import storage


class _DropInfoFrom(logging_std.Filter):
  """Drops INFO-and-below records logged from files under ``fragment``."""

  def __init__(self, fragment: str):
    super().__init__()
    self.fragment = fragment

  def filter(self, record: logging_std.LogRecord) -> bool:
    return record.levelno > logging_std.INFO or self.fragment not in (
      record.pathname or ""
    )


def quiet_library_logs(fragments: tuple[str, ...] = ("/orbax/",)) -> None:
  """Hides the per-save INFO chatter of orbax (warnings still show)."""
  handler = logging.get_absl_handler()
  for fragment in fragments:
    handler.addFilter(_DropInfoFrom(fragment))


class MetricWriter:
  """Appends metrics to ``<workdir>/metrics.jsonl`` and TensorBoard.

  TensorBoard event files go to ``<workdir>/tensorboard/<run>`` (one run per
  method or shared pretraining), tags ``<stage>/<metric>``, written with
  ``tf.summary``. Only the process with ``enabled=True`` (process 0)
  writes.

  Args:
    workdir: the work directory.
    enabled: whether this process writes.
    tensorboard: also write TensorBoard event files.
  """

  def __init__(self, workdir: str, *, enabled: bool, tensorboard: bool):
    self.workdir = workdir
    self.enabled = enabled
    self.tensorboard = tensorboard and enabled
    self._writers: dict[str, Any] = {}

  def _tb_writer(self, run: str):
    if run not in self._writers:
      import tensorflow as tf  # Lazy: only TensorBoard needs it here.

      self._writers[run] = tf.summary.create_file_writer(
        os.path.join(self.workdir, "tensorboard", run)
      )
    return self._writers[run]

  def write(
    self, run: str, stage: str, step: int, metrics: dict[str, float]
  ) -> None:
    """Writes one row of scalars.

    Args:
      run: method name or shared-pretraining name.
      stage: stage name.
      step: step within the stage.
      metrics: scalar name -> value.
    """
    if not self.enabled:
      return
    row = {"run": run, "stage": stage, "step": int(step), "time": time.time()}
    row.update({k: float(v) for k, v in metrics.items()})
    storage.append_text(
      os.path.join(self.workdir, "metrics.jsonl"), json.dumps(row) + "\n"
    )
    if self.tensorboard:
      import tensorflow as tf

      metadata = _scalar_metadata()
      with self._tb_writer(run).as_default():
        for name, value in metrics.items():
          # tf.summary.write with the "scalars" plugin metadata is what
          # tensorboard's tf.summary.scalar does; calling it directly avoids
          # depending on the tensorboard package (tensorflow-cpu lacks it).
          tf.summary.write(
            f"{stage}/{name}",
            tf.constant(float(value), tf.float32),
            step=int(step),
            metadata=metadata,
          )

  def flush(self) -> None:
    """Flushes TensorBoard writers."""
    for w in self._writers.values():
      w.flush()


class StageSummary:
  """Running summary of a stage's logged training metrics, kept by the loop.

  Each row holds the mean over the steps since the previous row (what
  metrics.jsonl gets, without its steps/s), so the stage's mean of a metric
  is the row values weighted by their widths, summed in step order. The
  state is JSON and goes into every checkpoint's meta: a stage resumed from
  a checkpoint continues the sums of the steps before it, and the steps
  recomputed after it count once, as their rows in metrics.jsonl are
  superseded.

  Example:
    >>> s = StageSummary()
    >>> s.add(2, {"loss": 1.0})
    >>> s.add(3, {"loss": 4.0})
    >>> s.result()
    {'means': {'loss': 2.0}, 'last': {'loss': 4.0}, 'from_step': 0}
    >>> StageSummary.from_json(s.to_json()).result() == s.result()
    True
  """

  def __init__(self, from_step: int = 0):
    self.from_step = from_step
    self.step = from_step
    self.sums: dict[str, float] = {}
    self.weights: dict[str, int] = {}
    self.last: dict[str, float] = {}

  def add(self, step: int, row: dict[str, float]) -> None:
    """Adds the row logged at ``step`` (the mean over the steps since the
    previous row)."""
    width, self.step = step - self.step, step
    for key, value in row.items():
      self.sums[key] = self.sums.get(key, 0.0) + width * value
      self.weights[key] = self.weights.get(key, 0) + width
    self.last = dict(row)

  def result(self) -> dict[str, Any]:
    """``means`` (step-weighted over the stage), ``last`` (the last logged
    interval) and ``from_step`` (0 unless the stage resumed from a checkpoint
    that predates summaries: then the means cover the steps from there)."""
    means = {
      k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k]
    }
    return dict(means=means, last=dict(self.last), from_step=self.from_step)

  def to_json(self) -> dict[str, Any]:
    """The state, for a checkpoint's meta."""
    return dict(
      from_step=self.from_step,
      step=self.step,
      sums=dict(self.sums),
      weights=dict(self.weights),
      last=dict(self.last),
    )

  @classmethod
  def from_json(cls, state: dict[str, Any]) -> StageSummary:
    """The summary a checkpoint's meta holds (``to_json``)."""
    summary = cls(int(state["from_step"]))
    summary.step = int(state["step"])
    summary.sums = {k: float(v) for k, v in state["sums"].items()}
    summary.weights = {k: int(v) for k, v in state["weights"].items()}
    summary.last = {k: float(v) for k, v in state["last"].items()}
    return summary


class Progress:
  """Steps/s and ETA of a stage, and its progress line.

  Args:
    label: prefix of the lines, e.g. "csam/search".
    start_step: first step of this (possibly resumed) run.
    num_steps: total steps of the stage.
  """

  def __init__(self, label: str, start_step: int, num_steps: int):
    self.label = label
    self.num_steps = num_steps
    self._t0 = time.time()
    self._s0 = start_step

  def rate(self, step: int) -> float:
    """Steps per second since the start (or resume) of the stage."""
    dt = time.time() - self._t0
    return (step - self._s0) / dt if dt > 0 else 0.0

  def line(self, step: int, metrics: dict[str, float]) -> str:
    """The progress line (step, metrics, steps/s, ETA)."""
    rate = self.rate(step)
    eta = (self.num_steps - step) / rate if rate > 0 else math.inf
    parts = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    return (
      f"[{self.label}] step {step}/{self.num_steps} {parts} "
      f"steps/s={rate:.2f} ETA={_format_seconds(eta)}"
    )

  def log(self, step: int, metrics: dict[str, float]) -> None:
    """Logs the progress line with absl."""
    logging.info("%s", self.line(step, metrics))


# jax.monitoring duration events of one compilation: tracing to a jaxpr,
# lowering to MLIR and the backend compile (or its persistent-cache read).
COMPILE_EVENTS = (
  "/jax/core/compile/jaxpr_trace_duration",
  "/jax/core/compile/jaxpr_to_mlir_module_duration",
  "/jax/core/compile/backend_compile_duration",
)
_BACKEND_EVENT = COMPILE_EVENTS[-1]
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileTotals(NamedTuple):
  """Compilation totals since the process started listening.

  Attributes:
    seconds: time spent tracing, lowering and compiling (persistent-cache
      reads included, as JAX times them inside the backend compile).
    compilations: backend compilations requested (cache hits included).
    cache_hits: those served by the persistent compilation cache.
  """

  seconds: float
  compilations: int
  cache_hits: int

  def since(self, earlier: CompileTotals) -> CompileTotals:
    """The totals accumulated after ``earlier``."""
    return CompileTotals(
      self.seconds - earlier.seconds,
      self.compilations - earlier.compilations,
      self.cache_hits - earlier.cache_hits,
    )


class _CompileClock:
  """Accumulates jax.monitoring compilation events (thread-safe)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._seconds, self._count, self._hits = 0.0, 0, 0

  def on_duration(self, event: str, duration: float, **_) -> None:
    if event in COMPILE_EVENTS:
      with self._lock:
        self._seconds += duration
        self._count += event == _BACKEND_EVENT

  def on_event(self, event: str, **_) -> None:
    if event == _CACHE_HIT_EVENT:
      with self._lock:
        self._hits += 1

  def totals(self) -> CompileTotals:
    with self._lock:
      return CompileTotals(self._seconds, self._count, self._hits)


_CLOCK: _CompileClock | None = None


def compile_totals() -> CompileTotals:
  """Compilation time and counts of this process so far.

  The first call registers the jax.monitoring listeners; compilations
  before it are not counted (experiments.main calls it before any).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> before = compile_totals()
    >>> _ = jax.jit(lambda x: x * 3 + 1)(jnp.ones(3))
    >>> new = compile_totals().since(before)
    >>> new.compilations >= 1 and new.seconds > 0
    True
  """
  global _CLOCK
  if _CLOCK is None:
    _CLOCK = _CompileClock()
    jax.monitoring.register_event_duration_secs_listener(_CLOCK.on_duration)
    jax.monitoring.register_event_listener(_CLOCK.on_event)
  return _CLOCK.totals()


def _scalar_metadata() -> bytes:
  from tensorflow.core.framework import summary_pb2

  return summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
  ).SerializeToString()


def _format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
