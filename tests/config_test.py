"""Config files load and validate; every bad field gives its named error
before any compute."""

from __future__ import annotations

import json
import os

import data_files
import pytest

from experiments import config_validation, experiment
from experiments.configs import (
  celebahq,
  cifar10c,
  default,
  flowers102,
  quickstart,
  smoke,
)
from experiments.training import methods


@pytest.mark.parametrize(
  "module", [default, cifar10c, flowers102, celebahq, quickstart, smoke]
)
def test_configs_define_every_method_and_section(module):
  config = module.get_config()
  assert tuple(config.methods) == methods.METHODS
  for section in (
    "model",
    "data",
    "sam",
    "pretrain",
    "search",
    "gmp",
    "finetune",
    "checkpoint",
    "logging",
    "evaluation",
    "certify",
    "corruptions",
  ):
    assert section in config, section
  assert 0.0 <= config.sparsity < 1.0


def test_quickstart_and_smoke_validate():
  for module in (quickstart, smoke):
    info = config_validation.validate_config(module.get_config())
    assert info.num_classes == 10


def test_cifar10c_validates_offline_on_the_npz_copy():
  config = cifar10c.get_config()
  config.data.source = "npz"
  config.data.path = data_files.cifar10_npz()
  info = config_validation.validate_config(config)
  assert info.num_classes == 10
  assert info.num_examples == {"train": 50_000, "eval": 10_000}
  assert info.image_shape == (32, 32, 3)


def test_methods_accept_comma_lists():
  assert config_validation.normalize_methods(("dense,csam",)) == (
    "dense",
    "csam",
  )
  with pytest.raises(ValueError, match="duplicates"):
    config_validation.normalize_methods(("dense", "dense"))


def _bad(field: str, value):
  config = smoke.get_config()
  parts = field.split(".")
  node = config
  for p in parts[:-1]:
    node = node[p]
  node[parts[-1]] = value
  return config


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("methods", ("dense", "snip"), r"config.methods='snip'.*'dense_sam'"),
    ("model.name", "vgg16", r"config.model.name='vgg16'.*'resnet18'"),
    ("data.source", "imagenet", r"data.source='imagenet'.*'tfds'"),
    ("sparsity", 1.0, r"config.sparsity=1.0 must be in \[0, 1\)"),
    ("sparsity", -0.1, r"config.sparsity=-0.1 must be in \[0, 1\)"),
    ("sam.rho", -0.05, r"config.sam.rho=-0.05 must be >= 0"),
    ("search.csam.rho", -1.0, r"config.search.csam.rho=-1.0 must be >= 0"),
    ("search.csam.init", "random", r"search.csam.init='random'.*'hydra'"),
    ("search.csam.forward", "hard", r"search.csam.forward='hard'.*'ste'"),
    ("search.csam.hinge_bn", "eval", r"search.csam.hinge_bn='eval'.*'batch'"),
    ("search.csam.radius", "local", r"search.csam.radius='local'.*'layerwise'"),
    ("scope", "model", r"config.scope='model'.*'layer'"),
    ("structure", "2:4", r"config.structure='2:4'.*1 - N/M"),
    ("pretrain.optimizer.name", "lion", r"pretrain.optimizer.*'adamw'"),
    ("finetune.optimizer.schedule", "exp", r"finetune.optimizer.*'cosine'"),
    ("gmp.initial_sparsity", 0.95, r"gmp.initial_sparsity=0.95"),
    ("batch_size", 0, r"config.batch_size=0 must be a positive multiple"),
    ("data.num_classes", 5, r"config.data.*num_classes=5"),
  ],
)
def test_bad_config_raises_named_error(field, value, message):
  config = _bad(field, value)
  with pytest.raises(ValueError, match=message):
    config_validation.validate_config(config)


def test_structure_must_fit_the_model():
  # tiny_cnn's first kernel has 3 input channels: no 2:4 groups along them.
  config = _bad("structure", "2:4")
  config.sparsity = 0.5
  config.methods = ("dense", "hydra", "csam")
  with pytest.raises(ValueError, match=r"config.structure='2:4' does not fit"):
    config_validation.validate_config(config)


def test_gmp_cannot_reach_an_n_of_m_pattern_gradually():
  config = _bad("structure", "2:4")
  config.sparsity = 0.5
  assert "gmp" in config.methods
  with pytest.raises(ValueError, match=r"'2:4' cannot be used with the gmp"):
    config_validation.validate_config(config)


def test_corruptions_need_rgb():
  config = _bad("data.channels", 1)
  config_validation.validate_config(config)  # corruptions disabled: fine
  config.corruptions.enabled = True
  with pytest.raises(ValueError, match=r"needs RGB.*config.data.channels=1"):
    config_validation.validate_config(config)


def test_validation_runs_before_any_output(tmp_path):
  config = _bad("sam.rho", -1.0)
  with pytest.raises(ValueError, match="sam.rho"):
    experiment.run(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w")


def test_batch_not_divisible_by_device_count(tmp_path, run_main):
  proc = run_main(
    "--config=experiments/configs/smoke.py",
    "--config.batch_size=18",
    f"--workdir={tmp_path / 'w'}",
    xla_flags="",  # only the forced device count
    devices=4,
    timeout=120,
  )
  assert proc.returncode != 0
  assert (
    "config.batch_size=18 must be a positive multiple of the device count (4)"
    in proc.stderr
  )
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_cifar10c_certifies_under_semantic_and_corruption_distributions():
  config = cifar10c.get_config()
  assert tuple(config.certify.distributions) == (
    "semantic",
    "gamma",
    "contrast",
    "brightness",
    "rotation",
    "translation",
    "gaussian_blur",
    "corruptions",
  )
  assert config.certify.variations.contrast_center == "zero"  # CC-Cert's
  assert config.corruptions.enabled
  assert config.model.name == "resnet18" and config.sparsity == 0.9


def test_training_variations_match_certification_by_default():
  config = default.get_config()
  train_var, cert = config.search.csam.variations, config.certify.variations
  assert config.search.csam.distribution == "semantic"
  # One config shape: the same fields with the same values.
  assert train_var.to_dict() == cert.to_dict()


def _old_shape(config_dict):
  """A config dict as runs before the sampler sections were unified wrote
  it (and before search.hydra.rank_by_abs existed)."""
  old = json.loads(json.dumps(config_dict))
  cert = old["certify"]
  variations = cert.pop("variations")
  cert["corruptions"] = dict(
    names=variations.pop("corruption_names"),
    severities=variations.pop("corruption_severities"),
  )
  cert["semantic"] = variations
  csam = old["search"]["csam"]
  csam["variations"]["kind"] = csam.pop("distribution")
  del csam["variations"]["corruption_names"]
  del csam["variations"]["corruption_severities"]
  del old["search"]["hydra"]["rank_by_abs"]
  return old


def test_configs_that_say_variation_kind_load_as_distribution():
  new = json.loads(quickstart.get_config().to_json())
  old = json.loads(json.dumps(new))
  old["search"]["csam"]["variation_kind"] = old["search"]["csam"].pop(
    "distribution"
  )
  assert experiment.differing_fields(old, new) == []
  stored = config_validation.stored_config(old)
  assert "variation_kind" not in stored["search"]["csam"]
  assert stored["search"]["csam"]["distribution"] == "semantic"


def test_runs_written_before_the_renames_resume(tmp_path):
  new = json.loads(quickstart.get_config().to_json())
  old = _old_shape(new)
  assert "variations" not in old["certify"]
  upgraded = config_validation.upgrade_config_dict(old)
  assert experiment.differing_fields(upgraded, new) == []
  # A real difference still refuses the directory.
  other = json.loads(json.dumps(old))
  other["certify"]["semantic"]["ranges"]["brightness"] = 0.3
  other = config_validation.upgrade_config_dict(other)
  assert experiment.differing_fields(other, new) == [
    "certify.variations.ranges.brightness"
  ]
  workdir = tmp_path / "old"
  (workdir / "runs").mkdir(parents=True)
  (workdir / "config.json").write_text(json.dumps(old))
  experiment.prepare_workdir(str(workdir), new, overwrite=False)  # resumes
  assert json.loads((workdir / "config.json").read_text()) == new
  (workdir / "config.json").write_text(
    json.dumps(_old_shape(dict(new, sparsity=0.5)))
  )
  with pytest.raises(FileExistsError, match=r"\['sparsity'\]"):
    experiment.prepare_workdir(str(workdir), new, overwrite=False)
