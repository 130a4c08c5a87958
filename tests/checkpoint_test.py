"""Checkpoints: bitwise resume after SIGKILL, fallback over a truncated
newest checkpoint, and the NaN stop that keeps the last good checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from absl import logging

from experiments import config_validation, run_artifacts
from experiments.training import checkpointing, parallel, train
from experiments.training import state as state_lib

ARGS = [
  "--config=experiments/configs/smoke.py",
  "--config.methods=csam",
  "--config.pretrain.num_steps=4",
  "--config.search.num_steps=400",
  "--config.finetune.num_steps=4",
  "--config.checkpoint.every_steps=10",
  "--config.logging.log_every_steps=5",
  "--config.evaluation.max_examples=32",
]


def _start(run_main, workdir: str, *extra: str) -> subprocess.Popen:
  return run_main(f"--workdir={workdir}", *ARGS, *extra, background=True)


def _finish(proc: subprocess.Popen, timeout: int = 300) -> str:
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-3000:]
  return out


def _final_tree(workdir: str, stage_dir: str) -> dict:
  directory = os.path.join(workdir, "checkpoints", "csam", stage_dir)
  step = max(int(s) for s in os.listdir(directory) if s.isdigit())
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(os.path.join(directory, str(step), "state"))


def _search_steps_logged(workdir: str) -> list[int]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().splitlines()
  rows = [json.loads(x) for x in lines if x.endswith("}")]
  return [r["step"] for r in rows if r["stage"] == "search"]


def test_sigkill_mid_stage_then_resume_is_bitwise_identical(tmp_path, run_main):
  reference = str(tmp_path / "reference")
  _finish(_start(run_main, reference))
  killed = str(tmp_path / "killed")
  proc = _start(run_main, killed)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if any(s >= 30 for s in _search_steps_logged(killed)):
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
  logged = _search_steps_logged(killed)
  assert 30 <= max(logged) < 400  # killed in the middle of the search stage
  assert not os.path.exists(os.path.join(killed, "results.json"))
  ctx = _context(killed)
  with pytest.raises(ValueError, match="'csam' has not finished"):
    train.restore_final(ctx, "csam")
  out = _finish(_start(run_main, killed))
  assert "csam: resuming stage 1 (search)" in out
  want, got = (
    _final_tree(reference, "2_finetune"),
    _final_tree(killed, "2_finetune"),
  )
  flat_want, flat_got = jax.tree.leaves(want), jax.tree.leaves(got)
  assert len(flat_want) == len(flat_got) > 10
  for a, b in zip(flat_want, flat_got, strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with open(os.path.join(reference, "results.json")) as f:
    ref_entry = json.load(f)["runs"][0]
  with open(os.path.join(killed, "results.json")) as f:
    entry = json.load(f)["runs"][0]
  assert entry["clean_accuracy"] == ref_entry["clean_accuracy"]
  # The search stage's summary, kept across the kill by the checkpoint's
  # meta: the step-weighted means of the metrics.jsonl rows (a step logged
  # twice counted once, its last row winning; timing left out), equal to
  # the uninterrupted run's.
  summary = _search_summary(killed)
  assert summary["from_step"] == 0
  assert summary["means"] == _means_from_jsonl(killed)
  assert summary == _search_summary(reference)
  assert entry["flip_fraction"] == summary["means"]["flip_fraction"]
  assert "summary" not in entry["stages"][1]  # results.json: records only
  # The final state, restored without running a stage.
  restored = train.restore_final(ctx, "csam").state
  for field in ("params", "batch_stats", "masks"):
    leaves = jax.tree.leaves(getattr(restored, field))
    assert len(leaves) == len(jax.tree.leaves(got[field])) > 0
    for a, b in zip(leaves, jax.tree.leaves(got[field]), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _context(workdir: str) -> train.Context:
  config = run_artifacts.load_config(workdir)
  info = config_validation.validate_config(config)
  return train.make_context(config, workdir, info)


def _search_summary(workdir: str) -> dict:
  with open(os.path.join(workdir, "runs", "csam.json")) as f:
    (search,) = [s for s in json.load(f)["stages"] if s["name"] == "search"]
  return search["summary"]


def _means_from_jsonl(workdir: str) -> dict:
  rows = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f.read().splitlines():
      row = json.loads(line)
      if row["run"] == "csam" and row["stage"] == "search":
        rows[row["step"]] = row
  sums, weights, previous = {}, {}, 0
  for step in sorted(rows):
    width, previous = step - previous, step
    for key, value in rows[step].items():
      if key not in ("run", "stage", "step", "time", "steps_per_second"):
        sums[key] = sums.get(key, 0.0) + width * value
        weights[key] = weights.get(key, 0) + width
  return {k: sums[k] / weights[k] for k in sums}


def _small_state(value: float) -> state_lib.TrainState:
  params = {"dense": {"kernel": jnp.full((3, 2), value), "bias": jnp.zeros(2)}}
  tx = optax.sgd(0.1, momentum=0.9)
  return state_lib.TrainState(
    params=params,
    batch_stats={},
    masks={"dense": {"kernel": jnp.ones((3, 2)), "bias": None}},
    opt_state=tx.init(params),
    step=jnp.asarray(int(value), jnp.int32),
    key=jax.random.PRNGKey(0),
  )


def test_truncated_newest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  directory = str(tmp_path / "stage")
  ckpt = checkpointing.StageCheckpointer(
    directory, max_to_keep=3, every_steps=1
  )
  for step in (1, 2, 3):
    ckpt.save(step, _small_state(float(step)), {"step": step, "done": False})
  ckpt.close()
  newest = os.path.join(directory, "3", "state")
  truncated = 0
  for root, _, files in os.walk(newest):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 0 and "/d/" in path + "/":
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
        truncated += 1
  assert truncated > 0
  mesh = parallel.make_mesh()
  template = checkpointing.abstract_like(
    jax.eval_shape(lambda: _small_state(1.0)), parallel.replicated(mesh)
  )
  ckpt = checkpointing.StageCheckpointer(
    directory, max_to_keep=3, every_steps=1
  )
  logging.get_absl_handler()  # absl warnings reach caplog via propagation.
  with caplog.at_level("WARNING"):
    state, meta = ckpt.restore_latest(template)
  assert meta == {"step": 2, "done": False}
  np.testing.assert_array_equal(
    state.params["dense"]["kernel"], np.full((3, 2), 2.0)
  )
  assert state.masks["dense"]["bias"] is None
  assert any(
    "Skipping unreadable checkpoint" in r.getMessage() for r in caplog.records
  )
  # Recomputing step 3 replaces the corrupt checkpoint: a later resume finds
  # it readable and does not fall back again.
  ckpt.save(3, _small_state(3.0), {"step": 3, "done": True})
  ckpt.close()
  ckpt = checkpointing.StageCheckpointer(
    directory, max_to_keep=3, every_steps=1
  )
  state, meta = ckpt.restore_latest(template)
  ckpt.close()
  assert meta == {"step": 3, "done": True}
  np.testing.assert_array_equal(
    state.params["dense"]["kernel"], np.full((3, 2), 3.0)
  )


def test_restore_with_no_checkpoint_returns_none(tmp_path):
  ckpt = checkpointing.StageCheckpointer(
    str(tmp_path / "empty"), max_to_keep=1, every_steps=1
  )
  assert ckpt.restore_latest(jax.eval_shape(lambda: _small_state(1.0))) is None
  ckpt.close()


def test_nan_loss_stops_with_method_stage_step_and_keeps_good_checkpoint(
  tmp_path, run_main
):
  workdir = str(tmp_path / "nan")
  proc = run_main(
    f"--workdir={workdir}",
    "--config=experiments/configs/smoke.py",
    "--config.methods=prune_sam",
    "--config.pretrain.num_steps=3",
    "--config.finetune.num_steps=6",
    "--config.finetune.optimizer.learning_rate=1e30",
    "--config.finetune.optimizer.schedule=constant",
    "--config.checkpoint.every_steps=1",
    timeout=300,
  )
  assert proc.returncode != 0
  err = proc.stdout + proc.stderr
  assert "NonFiniteLossError: Non-finite loss" in err
  assert "method 'prune_sam', stage 'finetune', step " in err
  directory = os.path.join(workdir, "checkpoints", "prune_sam", "2_finetune")
  steps = sorted(int(s) for s in os.listdir(directory) if s.isdigit())
  bad_step = int(err.split("stage 'finetune', step ")[1].split(";")[0])
  assert steps and max(steps) <= bad_step  # nothing saved after the NaN
  with ocp.StandardCheckpointer() as ckpt:
    tree = ckpt.restore(os.path.join(directory, str(max(steps)), "state"))
  for leaf in jax.tree.leaves(tree["params"]):
    assert np.isfinite(np.asarray(leaf)).all()
  assert not os.path.exists(os.path.join(workdir, "results.json"))
