r"""Certifies any model: ``python -m experiments.certify_model``.

The model is one of:

* an exported artifact (``experiments.export``): ``--model=DIR`` (its
  narrow.npz, else sparse.npz), ``--model=DIR/sparse.npz``,
  ``DIR/model.jax_export``, ``DIR/saved_model`` or ``DIR/model.tflite``;
* a Flax checkpoint of a run: ``--workdir=W --method=M`` (the harness's
  deployed model, ``W * TopK(M)``);
* a model trained outside this project: a Flax module and its variables
  saved with orbax (``--flax_module=package.module:Class``,
  ``--flax_kwargs='{"num_classes": 10}'``, ``--orbax_checkpoint=PATH``,
  ``--mean``, ``--std``, ``--call_kwargs``; see ``flax_orbax_logits_fn``).

The settings (dataset: any ``config.data`` source; distributions, sample
counts, smoothing: ``config.certify``; corruption accuracy:
``config.corruptions``) come from ``--config=FILE`` (with
``--config.<field>=...`` overrides), else from the ``config.json`` that
``experiments.export`` copies next to the artifact, else from the run's
work directory. ``--set=field=value`` (repeatable, Python literals)
overrides fields of any of them, e.g.
``--set=certify.distributions='("semantic", "corruptions")'``.

The images, keys and code are the harness's
(``experiments.experiment.evaluate_robustness``): a model certified here
with its run's settings gets exactly the numbers of the run. Writes
``results.json``, ``results.md`` and the plots of
``experiments.reports.run_report`` to ``--out``; logs progress and an ETA.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

import csam_jax
from experiments import (
  config_validation,
  entry,
  experiment,
  input_pipeline,
  run_artifacts,
)
from experiments.deploy import export
from experiments.reports import run_report
from experiments.robustness import evaluation
from experiments.training import logging_utils

PyTree = Any


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
  """Sets ``field.path=value`` overrides (values are Python literals, or
  strings when they do not parse).

  Raises:
    ValueError: a malformed override or an unknown field.

  Example:
    >>> cfg = ml_collections.ConfigDict({"a": {"n": 1, "d": ["x"]}})
    >>> out = apply_overrides(cfg, ["a.n=3", "a.d=('y', 'z')"]).a.to_dict()
    >>> out == {"n": 3, "d": ["y", "z"]}
    True
  """
  for item in overrides:
    field, sep, text = item.partition("=")
    if not sep or not field:
      raise ValueError(f"--set expects field=value, got {item!r}")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, name = field.split(".")
    node = config
    for p in parents:
      if p not in node:
        raise ValueError(f"--set: unknown config field {field!r}")
      node = node[p]
    if name not in node:
      raise ValueError(f"--set: unknown config field {field!r}")
    old = node[name]
    if isinstance(old, list | tuple) and isinstance(value, list | tuple):
      value = type(old)(value)
    node[name] = value
  return config


def flax_orbax_logits_fn(
  module: Any,
  checkpoint: str,
  *,
  mean: Sequence[float],
  std: Sequence[float],
  call_kwargs: dict[str, Any] | None = None,
) -> jax.tree_util.Partial:
  """The adapter for a model trained outside this project.

  Args:
    module: a ``flax.linen.Module`` instance mapping normalised NHWC float32
      images to logits.
    checkpoint: an orbax checkpoint of its variables (a dict with "params"
      and e.g. "batch_stats", or the params alone), as written by
      ``orbax.checkpoint.StandardCheckpointer().save(path, variables)``.
    mean: per-channel mean of the [0, 1] pixels the model was trained with.
    std: per-channel standard deviation.
    call_kwargs: extra keyword arguments of ``module.apply`` (e.g.
      ``{"train": False}``).

  Returns:
    ``logits_fn(images01) -> float32 logits`` (weights as Partial args).
  """
  import orbax.checkpoint as ocp  # noqa: PLC0415 - only this adapter.

  with export.reading(checkpoint, "orbax checkpoint"):
    variables = ocp.StandardCheckpointer().restore(os.path.abspath(checkpoint))
  if "params" not in variables:
    variables = {"params": variables}
  kwargs = dict(call_kwargs or {})
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)

  @jax.jit
  def apply(variables, images01):
    x = (images01 - mean) / std
    return module.apply(variables, x, **kwargs).astype(jnp.float32)

  return jax.tree_util.Partial(apply, variables)


def _config_next_to(path: str) -> str | None:
  here = path if os.path.isdir(path) else os.path.dirname(path)
  for folder in (here, os.path.dirname(os.path.abspath(here))):
    candidate = os.path.join(folder, export.FILES["config"])
    if os.path.exists(candidate):
      return candidate
  return None


def _manifest_next_to(path: str) -> dict[str, Any]:
  found = _config_next_to(path)
  if found is None:
    return {}
  manifest = os.path.join(os.path.dirname(found), export.FILES["manifest"])
  if not os.path.exists(manifest):
    return {}
  with open(manifest) as f:
    return json.load(f)


def resolve_config(
  config: ml_collections.ConfigDict | None,
  *,
  model_path: str | None = None,
  workdir: str | None = None,
) -> ml_collections.ConfigDict:
  """The settings: ``config``, else the config.json of the artifact's
  export directory, else the run's.

  Raises:
    ValueError: none is available.
  """
  if config is not None:
    return ml_collections.ConfigDict(config.to_dict())
  if model_path is not None:
    found = _config_next_to(model_path)
    if found is not None:
      return run_artifacts.load_config(os.path.dirname(found))
  if workdir is not None:
    return run_artifacts.load_config(workdir)
  raise ValueError(
    "No settings: pass --config=FILE (e.g. experiments/configs/"
    "quickstart.py), or a model exported with its config.json."
  )


class ProgressLogits:
  """Wraps a ``logits_fn`` to log forward-pass progress and an ETA.

  Each call of the wrapped function inside the certifiers' compiled
  programs triggers a host callback (no operands: the program's numbers
  are unchanged) that adds the batch size to the count of images run.

  Args:
    total: the expected number of images run (an estimate).
    label: prefix of the progress lines.
    every_s: seconds between lines.
  """

  def __init__(self, total: int, label: str = "certify", every_s: float = 10):
    self.progress = logging_utils.Progress(f"{label} images", 0, int(total))
    self.done = 0
    self.every_s = every_s
    self._last = time.time()

  def _tick(self, n: int) -> None:
    self.done += n
    if time.time() - self._last >= self.every_s:
      self._last = time.time()
      self.progress.log(self.done, {})

  def wrap(self, fn: Callable) -> Callable:
    """``fn`` with the progress callback; a ``Partial`` stays a Partial
    over the same arguments (the weights stay arguments of the compiled
    programs rather than constants, as in the harness)."""
    tick = self._tick

    def with_tick(inner):
      def wrapped(*args):
        images = args[-1]
        jax.debug.callback(functools.partial(tick, int(images.shape[0])))
        return inner(*args)

      return wrapped

    if isinstance(fn, jax.tree_util.Partial):
      return jax.tree_util.Partial(
        with_tick(functools.partial(fn.func, **fn.keywords)), *fn.args
      )
    return with_tick(fn)


def expected_images(config: ml_collections.ConfigDict) -> int:
  """Forward-pass images of ``evaluate_robustness`` (approximately: the
  certifiers pad their last chunk)."""
  total = 0
  cert = config.certify
  if cert.get("enabled", False):
    draws = cert.num_samples * cert.num_bounds + 1
    total += cert.num_images * draws * len(cert.distributions)
    if cert.smoothing.enabled:
      sm = cert.smoothing
      total += min(sm.num_images, cert.num_images) * (sm.n0 + sm.n)
  corr = config.corruptions
  if corr.get("enabled", False):
    names = len(corr.get("names", ()) or ()) or 15
    total += corr.num_images * (names * len(corr.severities) + 1)
  return max(total, 1)


def clean_accuracy(config: ml_collections.ConfigDict, logits_fn) -> float:
  """Top-1 accuracy on the evaluation split (first
  ``config.evaluation.max_examples``), each example counted once."""
  correct = total = 0
  for batch in input_pipeline.eval_batches(
    config.data,
    batch_size=config.evaluation.batch_size,
    normalize=False,
    max_examples=config.evaluation.max_examples,
  ):
    pred = np.argmax(np.asarray(logits_fn(jnp.asarray(batch["image"]))), -1)
    ok = (pred == batch["label"]) & batch["mask"]
    correct, total = correct + int(ok.sum()), total + int(batch["mask"].sum())
  return correct / max(total, 1)


def certify(
  config: ml_collections.ConfigDict,
  logits_fn: Callable,
  out: str,
  *,
  name: str,
  model: str = "",
  sparsity: float = math.nan,
  sparsity_reached: float = math.nan,
) -> dict[str, Any]:
  """Certifies a model with the harness's images and keys; writes reports.

  Args:
    config: the settings (data, certify, corruptions, seed, evaluation).
    logits_fn: ``logits_fn(images01) -> logits``.
    out: output directory (results.json, results.md, plots).
    name: the row's name in the table (the "method" column).
    model: the model column.
    sparsity: target sparsity (NaN: unknown).
    sparsity_reached: fraction of zero kernel weights (NaN: unknown).

  Returns:
    The run entry written to results.json.
  """
  config_validation.validate_config(config)
  t0 = time.time()
  progress = ProgressLogits(expected_images(config))
  entry = dict(
    method=name,
    model=model,
    dataset=config.data.source
    + (f":{config.data.name}" if config.data.get("name") else ""),
    sparsity=float(sparsity),
    sparsity_reached=float(sparsity_reached),
    seed=int(config.seed),
    clean_accuracy=clean_accuracy(config, logits_fn),
  )
  entry.update(experiment.evaluate_robustness(config, progress.wrap(logits_fn)))
  progress.progress.log(progress.done, {})
  entry["wall_time_s"] = time.time() - t0
  os.makedirs(out, exist_ok=True)
  run_report.write_results(out, json.loads(config.to_json()), [entry])
  return entry


def _kernel_sparsity(params: PyTree) -> float:
  return float(csam_jax.sparsity(params)["global"])


def load_model(flags_values: dict[str, Any]) -> dict[str, Any]:
  """``{"logits_fn", "name", "model", "sparsity", "sparsity_reached",
  "config"}`` for the model named by the flags (see the module docstring).

  Raises:
    ValueError: none or several model sources, or a bad flag.
  """
  f = flags_values
  sources = [
    bool(f.get("model")),
    bool(f.get("workdir") or f.get("method")),
    bool(f.get("flax_module") or f.get("orbax_checkpoint")),
  ]
  if sum(sources) != 1:
    raise ValueError(
      "Give exactly one model: --model=ARTIFACT, --workdir=W --method=M, "
      "or --flax_module=pkg.mod:Class --orbax_checkpoint=PATH."
    )
  if f.get("model"):
    manifest = _manifest_next_to(f.get("model"))
    return dict(
      logits_fn=export.load_logits_fn(
        f.get("model"), num_threads=f.get("threads")
      ),
      name=f"{manifest.get('method', 'model')}:"
      f"{os.path.basename(os.path.normpath(f['model']))}",
      model=manifest.get("model", ""),
      sparsity=manifest.get("sparsity", math.nan),
      sparsity_reached=manifest.get("sparsity_reached", math.nan),
      config=resolve_config(f.get("config"), model_path=f.get("model")),
    )
  if f.get("workdir"):
    if not f.get("method"):
      raise ValueError("--workdir needs --method.")
    config, model, state = run_artifacts.load_method(
      f.get("workdir"), f.get("method")
    )
    return dict(
      logits_fn=evaluation.make_logits_fn(model, state, config),
      name=f.get("method"),
      model=config.model.name,
      sparsity=0.0
      if f.get("method").startswith("dense")
      else float(config.sparsity),
      sparsity_reached=evaluation.sparsity_reached(state, config),
      config=resolve_config(f.get("config"), workdir=f.get("workdir")),
    )
  module_path, sep, cls = (f.get("flax_module") or "").partition(":")
  if (
    not sep
    or not f.get("orbax_checkpoint")
    or not f.get("mean")
    or not f.get("std")
  ):
    raise ValueError(
      "An outside model needs --flax_module=package.module:Class, "
      "--orbax_checkpoint, --mean and --std."
    )
  module = getattr(importlib.import_module(module_path), cls)(
    **json.loads(f.get("flax_kwargs") or "{}")
  )
  fn = flax_orbax_logits_fn(
    module,
    f.get("orbax_checkpoint"),
    mean=[float(m) for m in f.get("mean")],
    std=[float(s) for s in f.get("std")],
    call_kwargs=json.loads(f.get("call_kwargs") or "{}"),
  )
  return dict(
    logits_fn=fn,
    name=cls,
    model=f.get("flax_module"),
    sparsity=math.nan,
    sparsity_reached=_kernel_sparsity(fn.args[0]["params"]),
    config=resolve_config(f.get("config")),
  )


def define_flags() -> dict[str, Any]:
  """Defines the command-line flags (only when run as a program, so that
  importing this module defines none)."""
  _CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Settings file (experiments/configs/*.py); optional."
  )
  _MODEL = flags.DEFINE_string("model", None, "An exported artifact.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "A run's work directory.")
  _METHOD = flags.DEFINE_string("method", None, "The method (with --workdir).")
  _FLAX_MODULE = flags.DEFINE_string(
    "flax_module", None, "Outside model: package.module:Class."
  )
  _FLAX_KWARGS = flags.DEFINE_string(
    "flax_kwargs", "{}", "JSON constructor kwargs of --flax_module."
  )
  _CALL_KWARGS = flags.DEFINE_string(
    "call_kwargs", "{}", 'JSON kwargs of module.apply, e.g. {"train": false}.'
  )
  _ORBAX = flags.DEFINE_string(
    "orbax_checkpoint", None, "Outside model: orbax checkpoint of variables."
  )
  _MEAN = flags.DEFINE_list("mean", None, "Outside model: channel means.")
  _STD = flags.DEFINE_list("std", None, "Outside model: channel stds.")
  _SET = flags.DEFINE_multi_string("set", [], "field=value overrides.")
  _OUT = flags.DEFINE_string("out", None, "Output directory (required).")
  _NAME = flags.DEFINE_string("name", None, "Row name in the table.")
  _THREADS = flags.DEFINE_integer("threads", None, "TFLite threads.")
  return dict(
    config=_CONFIG,
    model=_MODEL,
    workdir=_WORKDIR,
    method=_METHOD,
    flax_module=_FLAX_MODULE,
    flax_kwargs=_FLAX_KWARGS,
    call_kwargs=_CALL_KWARGS,
    orbax=_ORBAX,
    mean=_MEAN,
    std=_STD,
    set=_SET,
    out=_OUT,
    name=_NAME,
    threads=_THREADS,
  )


_FLAGS: dict[str, Any] = {}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _FLAGS["out"].value:
    raise app.UsageError("--out is required.")
  entry.prepare_process()
  loaded = load_model(
    dict(
      model=_FLAGS["model"].value,
      workdir=_FLAGS["workdir"].value,
      method=_FLAGS["method"].value,
      flax_module=_FLAGS["flax_module"].value,
      flax_kwargs=_FLAGS["flax_kwargs"].value,
      call_kwargs=_FLAGS["call_kwargs"].value,
      orbax_checkpoint=_FLAGS["orbax"].value,
      mean=_FLAGS["mean"].value,
      std=_FLAGS["std"].value,
      config=_FLAGS["config"].value,
      threads=_FLAGS["threads"].value,
    )
  )
  config = apply_overrides(loaded["config"], _FLAGS["set"].value)
  result = certify(
    config,
    loaded["logits_fn"],
    _FLAGS["out"].value,
    name=_FLAGS["name"].value or loaded["name"],
    model=loaded["model"],
    sparsity=loaded["sparsity"],
    sparsity_reached=loaded["sparsity_reached"],
  )
  with open(os.path.join(_FLAGS["out"].value, "results.md")) as f:
    print(f.read())
  logging.info("Wrote %s (%.1fs)", _FLAGS["out"].value, result["wall_time_s"])


def run_command() -> None:
  """Defines the flags and runs ``python -m experiments.certify_model``."""
  _FLAGS.update(define_flags())
  app.run(main)


if __name__ == "__main__":
  run_command()
