"""Which pretraining run each committed cell starts from."""

import json
import os

import pytest

from experiments.study import pretraining

CELLS = "results/{}/cells/{}.json"


def _record(study: str, cell: str) -> dict:
  with open(CELLS.format(study, cell)) as f:
    return json.load(f)


def test_records_of_two_pretraining_runs_of_one_config_are_told_apart():
  # study_structure's hydra_aug and study_peers' cram (seed 0) share the
  # pretraining config but not the run: the peers study pretrained again,
  # on another machine and code version (64.48% against 63.92%).
  structure = _record("study_structure", "hydra_aug__s0.90__seed0")
  peers = _record("study_peers", "cram__s0.90__seed0")
  a, b = (pretraining.signature(r["stages"]) for r in (structure, peers))
  assert a["pretrain/steps"] == b["pretrain/steps"] == 1170
  assert not pretraining.same_run(a, b)
  (group,) = pretraining.runs([peers, structure])
  assert (group["seed"], group["role"]) == (0, "pretrain_sgd")
  assert [(r["eval_accuracy"], r["cells"]) for r in group["runs"]] == [
    (0.6448, [peers["cell"]]),  # as many cells each: in cell order
    (0.6392, [structure["cell"]]),
  ]
  assert "seed 0 (pretrain_sgd), 2 runs" in pretraining.describe([group])


@pytest.mark.parametrize(
  "study, seeds",
  [("study_structure", range(5)), ("study_cpu", range(3))],
)
def test_the_committed_studies_start_every_seed_from_one_run(study, seeds):
  """Within a study, every seed's cells share one pretraining run; in the
  structure study, its controls (run on another machine) share one run of
  their own per seed, the peers' where the peers have the seed."""
  import glob

  from experiments.configs import study_structure

  paths = sorted(glob.glob(f"results/{study}/cells/*.json"))
  records = [json.load(open(p)) for p in paths]
  assert {r["seed"] for r in records} == set(seeds)
  controls = [
    r
    for r in records
    if study == "study_structure" and r["variant"] in study_structure.CONTROLS
  ]
  first = [r for r in records if r not in controls]
  assert pretraining.runs(first) == [] and pretraining.runs(controls) == []
  for rec in controls:
    peers = f"cram__s0.90__seed{rec['seed']}"
    if os.path.exists(CELLS.format("study_peers", peers)):
      assert pretraining.runs([rec, _record("study_peers", peers)]) == []
  # dense_sam's SAM pretraining is a role of its own, not a second run.
  roles = {pretraining.role(r["method"]) for r in records}
  assert roles == (
    {"pretrain_sgd", "pretrain_sam"}
    if study == "study_cpu"
    else {"pretrain_sgd"}
  )
