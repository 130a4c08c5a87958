"""experiments.certify_model: exported, checkpointed and outside models."""

from __future__ import annotations

import json
import os

import export_runs
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import models
from experiments.deploy import certify_model, export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, export dir) of the shared run, csam exported."""
  workdir = export_runs.channel_run(tmp_path_factory)
  out = str(tmp_path_factory.mktemp("certify_export"))
  export.export_method(
    workdir, "csam", out, forms=("sparse", "jax_export"), num_images=8
  )
  return workdir, out


def _harness_entry(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    (entry,) = json.load(f)["runs"]
  return entry


def test_exported_model_reproduces_the_harness_certificates(run, tmp_path):
  workdir, out = run
  harness = _harness_entry(workdir)
  certified = [
    harness["certification"][d]["cc_cert"]["1e-02"]
    for d in ("semantic", "brightness")
  ]
  assert max(certified) > 0  # a meaningful comparison
  loaded = certify_model.load_model(
    dict(model=os.path.join(out, "model.jax_export"), config=None, threads=1)
  )
  entry = certify_model.certify(
    loaded["config"],
    loaded["logits_fn"],
    str(tmp_path / "cert"),
    name=loaded["name"],
    model=loaded["model"],
    sparsity=loaded["sparsity"],
    sparsity_reached=loaded["sparsity_reached"],
  )
  # Same images, keys and counts: every number of the run, exactly.
  assert entry["certification"] == harness["certification"]
  assert entry["clean_accuracy"] == harness["clean_accuracy"]
  assert entry["sparsity_reached"] == harness["sparsity_reached"]
  assert entry["method"] == "csam:model.jax_export"
  with open(tmp_path / "cert" / "results.json") as f:
    assert json.load(f)["runs"][0]["certification"] == entry["certification"]
  table = (tmp_path / "cert" / "results.md").read_text().splitlines()
  assert table[4].startswith("| csam:model.jax_export | tiny_cnn | 0.3000 |")
  assert (tmp_path / "cert" / "certified_vs_eps.png").exists()


def test_cli_certifies_an_export_directory_with_overrides(
  run, tmp_path, run_main
):
  _, out = run
  proc = run_main(
    f"--model={out}",  # the directory: its sparse.npz
    f"--config={REPO}/experiments/configs/quickstart.py",
    "--set=certify.num_images=4",
    "--set=certify.distributions=('brightness',)",
    "--set=certify.smoothing.enabled=False",
    "--set=corruptions.enabled=False",
    "--set=evaluation.max_examples=64",
    f"--out={tmp_path / 'cli'}",
    module="experiments.certify_model",
    xla_flags=None,  # XLA_FLAGS as inherited from pytest
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "[certify images] step" in proc.stderr and "ETA=" in proc.stderr
  with open(tmp_path / "cli" / "results.json") as f:
    (entry,) = json.load(f)["runs"]
  assert "brightness" in entry["certification"]
  assert "semantic" not in entry["certification"]
  assert entry["certification"]["num_images"] == 4
  assert "| brightness CC-Cert@1e-2 |" in proc.stdout


def test_outside_flax_model_through_the_orbax_adapter(tmp_path):
  module = models.get_model("tiny_cnn", num_classes=10)
  images = np.random.RandomState(0).rand(5, 8, 8, 3).astype(np.float32)
  variables = module.init(jax.random.key(3), images, train=False)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(str(tmp_path / "ckpt"), variables)
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  fn = certify_model.flax_orbax_logits_fn(
    module,
    str(tmp_path / "ckpt"),
    mean=mean,
    std=std,
    call_kwargs={"train": False},
  )
  expected = module.apply(
    variables, (images - np.array(mean)) / np.array(std), train=False
  )
  np.testing.assert_allclose(fn(jnp.asarray(images)), expected, atol=1e-6)


def test_overrides_and_bad_sources_are_refused():
  cfg = ml_collections.ConfigDict({"certify": {"num_images": 3}})
  assert (
    certify_model.apply_overrides(cfg, ["certify.num_images=5"])["certify"][
      "num_images"
    ]
    == 5
  )
  with pytest.raises(ValueError, match="unknown config field"):
    certify_model.apply_overrides(cfg, ["certify.num_imgs=5"])
  with pytest.raises(ValueError, match="field=value"):
    certify_model.apply_overrides(cfg, ["certify.num_images"])
  with pytest.raises(ValueError, match="exactly one model"):
    certify_model.load_model(
      dict(
        model="a.tflite",
        workdir="w",
        method="csam",
        flax_module=None,
        orbax_checkpoint=None,
      )
    )


def test_a_broken_orbax_checkpoint_gets_an_error_naming_it(tmp_path):
  from experiments.deploy import export

  broken = tmp_path / "ckpt"
  broken.mkdir()
  (broken / "_METADATA").write_text("{not json")
  module = models.get_model("tiny_cnn", num_classes=3)
  with pytest.raises(
    export.ArtifactError, match=r"ckpt: not a readable orbax checkpoint"
  ):
    certify_model.flax_orbax_logits_fn(
      module, str(broken), mean=(0.5,), std=(0.25,)
    )
  with pytest.raises(FileNotFoundError, match="no such orbax checkpoint"):
    certify_model.flax_orbax_logits_fn(
      module, str(tmp_path / "none"), mean=(0.5,), std=(0.25,)
    )
