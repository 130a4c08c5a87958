"""The main job end to end: the quickstart (fewer steps) gives results for
all ten methods (the seven of the paper, CrAM, CrAM+ and SAFE); reruns
resume; other configs are refused."""

from __future__ import annotations

import glob
import json
import os

import pytest

from experiments.training import methods

# The quickstart with two corruption families (list fields cannot be
# overridden from the command line, so a config file sets them).
_CONFIG_FILE = """
from experiments.configs import quickstart


def get_config():
  config = quickstart.get_config()
  config.corruptions.names = ["gaussian_noise", "contrast"]
  return config
"""
SHORT_QUICKSTART = [
  "--config.pretrain.num_steps=4",
  "--config.search.num_steps=4",
  "--config.finetune.num_steps=3",
  "--config.gmp.update_every=1",
  "--config.logging.log_every_steps=2",
  "--config.certify.num_images=8",
  "--config.certify.num_samples=10",
  "--config.certify.num_bounds=2",
  "--config.certify.smoothing.enabled=False",
  "--config.corruptions.num_images=8",
]


def _ok(proc) -> str:
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stderr


def _scalar_tags(event_dir: str) -> set[str]:
  import tensorflow as tf
  from tensorflow.core.util import event_pb2

  tags = set()
  for path in glob.glob(os.path.join(event_dir, "events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "scalars":
          tags.add(value.tag)
  return tags


def test_short_quickstart_all_methods(tmp_path, run_main):
  workdir = str(tmp_path / "quick")
  config_file = tmp_path / "quickstart_two_corruptions.py"
  config_file.write_text(_CONFIG_FILE)
  err = _ok(
    run_main(
      f"--workdir={workdir}",
      f"--config={config_file}",
      "--config.methods=" + ",".join(methods.ALL_METHODS),
      "--config.cram.retune_batches=2",
      "--config.safe.retune_batches=3",
      *SHORT_QUICKSTART,
    )
  )
  assert "[csam/search] step 4/4 " in err  # progress lines
  assert "steps/s=" in err and "ETA=" in err
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["config"]["name"] == "quickstart"
  runs = results["runs"]
  assert [r["method"] for r in runs] == [
    "dense",
    "dense_sam",
    "sam_prune",
    "prune_sam",
    "gmp",
    "hydra",
    "csam",
    "cram",
    "cram_plus",
    "safe",
  ]
  for run in runs:
    assert abs(run["sparsity_reached"] - run["sparsity"]) <= 1e-3, run
    assert run["sparsity"] == (
      0.0 if run["method"].startswith("dense") else 0.8
    )
    assert run["model"] == "tiny_cnn" and run["seed"] == 0
    assert 0.0 <= run["clean_accuracy"] <= 1.0 and run["wall_time_s"] > 0
    assert run["certification"]["num_images"] == 8
    per = run["corruptions"]["per_corruption"]
    assert set(per) == {"gaussian_noise", "contrast"}
    assert all(set(p) == {"3"} for p in per.values())
    steps = [(s["name"], s["steps"]) for s in run["stages"]]
    if run["method"] in methods.COMPRESSION_ALGOS:
      # Pretraining, the compression-aware training over the search and
      # fine-tuning budget, then one-shot pruning with BN re-tuning.
      retune = 3 if run["method"] == "safe" else 2
      assert steps == [
        ("pretrain", 4),
        (run["method"], 4 + 3),
        ("prune", retune),
      ]
    else:
      assert sum(n for _, n in steps) == 4 + 4 + 3
  with open(os.path.join(workdir, "results.md")) as f:
    table = f.read().splitlines()
  assert table[2].startswith("| method | model | sparsity | sparsity reached |")
  assert "CC-Cert@1e-2" in table[2] and "corruption" in table[2]
  assert table[4].startswith("| dense | tiny_cnn |")
  assert table[10].startswith("| csam | tiny_cnn |")
  assert table[13].startswith("| safe | tiny_cnn |") and table[14] == ""
  # Then the certification protocol and the accuracy per corruption.
  assert table[15].startswith("Certification: 8 test images")
  assert table[17] == "## Accuracy per corruption (mean over severities)"
  assert table[19].startswith("| corruption | dense | dense_sam |")
  assert table[19].endswith("| cram | cram_plus | safe |")
  assert [r.split(" |")[0] for r in table[21:]] == [
    "| gaussian_noise",
    "| contrast",
    "| mean",
  ]
  tags = _scalar_tags(os.path.join(workdir, "tensorboard", "csam"))
  assert {"search/loss", "search/accuracy", "finetune/loss"} <= tags


def test_rerun_resumes_and_other_config_is_refused(tmp_path, run_main):
  workdir = str(tmp_path / "w")
  small = [
    f"--workdir={workdir}",
    "--config=experiments/configs/smoke.py",
    "--config.methods=dense",
  ]
  _ok(run_main(*small))
  with open(os.path.join(workdir, "results.json")) as f:
    first = json.load(f)
  err = _ok(run_main(*small))
  assert "dense: finished earlier" in err
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == first
  refused = run_main(*small, "--config.seed=1")
  assert refused.returncode != 0
  assert "holds results of a different run" in refused.stderr
  assert (
    "'seed'" in refused.stderr and "--config.overwrite=True" in refused.stderr
  )
  _ok(run_main(*small, "--config.seed=1", "--config.overwrite=True"))
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["config"]["seed"] == 1


def test_unknown_method_fails_fast(tmp_path, run_main):
  proc = run_main(
    f"--workdir={tmp_path / 'x'}",
    "--config=experiments/configs/smoke.py",
    "--config.methods=dense,snip",
    timeout=120,
  )
  assert proc.returncode != 0
  assert "config.methods='snip' is invalid" in proc.stderr
  assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("name", ["quickstart", "cifar10c"])
def test_default_workdir_is_named_after_the_config(name):
  from experiments import main

  assert main.default_workdir(name) == os.path.join("workdir", name)
