"""One step of every method under smoke.py on mock TFDS data (end to end)."""

from __future__ import annotations

import json
import os

# Runs experiments.main inside tfds.testing.mock_data (random CIFAR-10-shaped
# examples generated from the builder's features; no files, no network).
_MOCK_MAIN = """
import sys
import tensorflow_datasets as tfds
from absl import app
from experiments import main
with tfds.testing.mock_data(num_examples=48,
                            policy=tfds.testing.MockPolicy.USE_CODE):
  app.run(main.main, argv=sys.argv)
"""


def test_one_step_of_every_method_on_mock_tfds(tmp_path, run_main):
  workdir = str(tmp_path / "mock")
  proc = run_main(
    "--config=experiments/configs/smoke.py",
    f"--workdir={workdir}",
    "--config.data.source=tfds",
    "--config.data.name=cifar10",
    "--config.data.channels=3",
    "--config.data.train_split=train",
    "--config.data.eval_split=test",
    "--config.evaluation.batch_size=16",
    "--config.evaluation.max_examples=32",
    program=_MOCK_MAIN,
    timeout=400,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  runs = {r["method"]: r for r in results["runs"]}
  assert list(runs) == [
    "dense",
    "dense_sam",
    "sam_prune",
    "prune_sam",
    "gmp",
    "hydra",
    "csam",
  ]
  for method, run in runs.items():
    assert run["dataset"] == "tfds:cifar10"
    assert 0.0 <= run["clean_accuracy"] <= 1.0
    # Exactly one training step per stage with steps (smoke.py), the
    # one-shot prune stage has none; dense stages: pretrain + continuation.
    steps = {s["name"]: s["steps"] for s in run["stages"]}
    if method in ("sam_prune", "prune_sam"):
      assert steps == {"pretrain": 1, "prune": 0, "finetune": 2}
    elif method in ("dense", "dense_sam"):
      assert steps == {"pretrain": 1, "finetune": 2}
    else:
      assert steps == {
        "pretrain": 1,
        method if method == "gmp" else "search": 1,
        "finetune": 1,
      }
    expected = 0.0 if method.startswith("dense") else 0.8
    assert abs(run["sparsity_reached"] - expected) < 1e-3, method
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  trained = {(r["run"], r["stage"]) for r in rows}
  assert ("csam", "search") in trained and ("hydra", "search") in trained
  assert ("pretrain_sgd", "pretrain") in trained
  assert ("pretrain_sam", "pretrain") in trained
  assert all(
    set(r) >= {"loss", "accuracy", "steps_per_second", "step"} for r in rows
  )


def test_methods_stages_of_one_role_consume_identical_batches(
  tmp_path, monkeypatch
):
  """Paired runs: hydra's and csam's search stages see the same batches,
  and so do their fine-tuning stages (seeded by role, not by method)."""
  import numpy as np

  from experiments import experiment, input_pipeline
  from experiments.configs import smoke

  streams = []
  real = input_pipeline.train_batches

  def recording(*args, **kwargs):
    stream = []
    streams.append(stream)
    for batch in real(*args, **kwargs):
      stream.append((batch["image"].copy(), batch["label"].copy()))
      yield batch

  monkeypatch.setattr(input_pipeline, "train_batches", recording)
  config = smoke.get_config()
  config.methods = ("hydra", "csam")
  for section in ("pretrain", "search", "finetune"):
    config[section].num_steps = 3
  runs = experiment.run(config, str(tmp_path / "w"))["runs"]
  # C-SAM reports how much of the kept mask its perturbation flipped.
  csam = runs[1]
  assert 0.0 <= csam["flip_fraction"] <= 1.0
  assert "classifier/kernel" in csam["flip_fraction_per_layer"]
  assert "flip_fraction" not in runs[0]  # HYDRA has no perturbation
  # pretrain (shared, once), hydra search, hydra finetune, csam search,
  # csam finetune.
  assert len(streams) == 5 and all(len(s) == 3 for s in streams)

  def same(a, b):
    return all(
      np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
      for x, y in zip(a, b, strict=True)
    )

  _, hydra_search, hydra_finetune, csam_search, csam_finetune = streams
  assert same(hydra_search, csam_search)
  assert same(hydra_finetune, csam_finetune)
  assert not same(hydra_search, hydra_finetune)  # roles differ
