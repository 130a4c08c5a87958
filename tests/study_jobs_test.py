"""A study's cells as scheduler jobs: ids, shards, claims, atomic records,
SIGTERM, the submitit launcher and paths on a bucket."""

import copy
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.memory import MemoryFileSystem
from matplotlib.figure import Figure

from experiments import experiment, storage
from experiments.configs import smoke, study_cpu, study_smoke
from experiments.study import pretraining as study_pretraining
from experiments.study import report as study_report
from experiments.study import runner as study

SMOKE = "--config=experiments/configs/study_smoke.py"


def test_jobs_put_pretraining_first_and_cells_after_their_seed():
  config = study_cpu.get_config()
  all_jobs = study.jobs(config)
  pre = [j for j in all_jobs if j.pretraining]
  cells = [j for j in all_jobs if not j.pretraining]
  assert all_jobs[: len(pre)] == pre  # every pretraining before any cell
  assert [j.cell for j in cells] == study.cells(config.study)
  assert len({j.id for j in all_jobs}) == len(all_jobs)
  by_id = {j.id: j for j in pre}
  for job in cells:
    (needed,) = job.needs
    assert by_id[needed].cell.seed == job.cell.seed
  # One pretraining per seed, which runs the SGD and the SAM pretraining
  # (sam_prune's cells need the latter).
  assert [j.cell.seed for j in pre] == [0, 1, 2]
  assert pre[0].methods == ("csam", "sam_prune")


def test_shards_partition_the_jobs_in_order():
  all_jobs = study.jobs(study_cpu.get_config())
  for n in (1, 2, 7, 100):
    parts = [study.shard(all_jobs, f"{i}/{n}") for i in range(n)]
    assert sorted(j.id for p in parts for j in p) == sorted(
      j.id for j in all_jobs
    )
    for part in parts:  # each keeps the global order
      positions = [all_jobs.index(j) for j in part]
      assert positions == sorted(positions)
  for bad in ("2/2", "-1/2", "1", "a/b", "0/0"):
    with pytest.raises(ValueError, match="--shard must be i/n"):
      study.shard(all_jobs, bad)


def test_write_json_never_shows_a_torn_record(tmp_path):
  path = tmp_path / "cells" / "x.json"
  writer = (
    "import sys; from experiments import storage\n"
    "for k in range(150):\n"
    "  storage.write_json(sys.argv[1], {'w': sys.argv[2], 'x': [k] * 5000})\n"
  )
  procs = [
    subprocess.Popen(
      [sys.executable, "-c", writer, str(path), name],
      cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    for name in ("a", "b")
  ]
  reads = 0
  while any(p.poll() is None for p in procs):
    if path.exists():
      data = json.loads(path.read_text())  # never torn
      assert data["w"] in ("a", "b") and len(data["x"]) == 5000
      reads += 1
  assert [p.returncode for p in procs] == [0, 0] and reads > 0
  assert not glob.glob(str(tmp_path / "cells" / ".*tmp"))  # no leftovers


def test_claims_are_exclusive_reentrant_and_expire_with_their_process(
  tmp_path, monkeypatch
):
  path = str(tmp_path / "claims" / "job")
  assert storage.claim(path, "w1") and not storage.claim(path, "w2")
  assert storage.claim(path, "w1")  # a requeued job resumes its own work
  storage.release(path)
  assert storage.owner(path) is None and storage.claim(path, "w2")
  storage.release(path)
  # A claim of a process of this host that has died is taken over.
  dead = subprocess.run(
    [
      sys.executable,
      "-c",
      "import sys; from experiments import storage; "
      "print(storage.claim(sys.argv[1]))",
      path,
    ],
    cwd=os.path.dirname(os.path.dirname(__file__)),
    capture_output=True,
    text=True,
    check=True,
  )
  assert dead.stdout.strip() == "True"
  assert storage.owner(path)["pid"] != os.getpid()
  assert storage.claim(path)
  assert storage.owner(path)["pid"] == os.getpid()
  monkeypatch.setenv("CSAM_WORKER_ID", "array-7")
  assert storage.worker_id() == "array-7"
  monkeypatch.delenv("CSAM_WORKER_ID")
  monkeypatch.setenv("SLURM_JOB_ID", "123")
  monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
  assert storage.worker_id() == "slurm:123_4"


def test_read_json_names_a_bad_file(tmp_path):
  (tmp_path / "r.json").write_text("{")
  with pytest.raises(ValueError, match=r"r\.json is not valid JSON"):
    storage.read_json(tmp_path / "r.json")
  with pytest.raises(FileNotFoundError, match="no such file"):
    storage.read_json(tmp_path / "none.json")


class _Bucket(MemoryFileSystem):
  """An in-memory object store answering ``gs://`` (no rename, no O_EXCL,
  no symlinks, no local path), for tests that cannot reach GCS."""

  protocol = ("gs", "gcs")
  root_marker = ""
  store: dict = {}
  pseudo_dirs = [""]

  @classmethod
  def _strip_protocol(cls, path):
    return str(path).split("://", 1)[-1].rstrip("/")


@pytest.fixture
def bucket(monkeypatch):
  """``gs://`` paths served by `_Bucket` through epath's fsspec backend."""
  import fsspec

  fsspec.register_implementation("gcs", _Bucket, clobber=True)
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  epath_backend._FileSystemSpecBackend._get_filesystem.cache_clear()
  _Bucket.store.clear()
  yield _Bucket.store
  _Bucket.store.clear()
  epath_backend._FileSystemSpecBackend._get_filesystem.cache_clear()


def test_a_run_and_a_study_report_on_a_bucket(bucket, tmp_path):
  # A run whose work directory is on the bucket (checkpoints off: orbax
  # writes gs:// through tensorstore's GCS driver, which needs the network).
  config = smoke.get_config()
  config.methods = ("hydra",)
  config.checkpoint.enabled = False
  out = experiment.run(config, "gs://b/work")
  assert set(bucket) >= {
    "b/work/config.json",
    "b/work/metrics.jsonl",
    "b/work/runs/hydra.json",
    "b/work/results.json",
    "b/work/results.md",
  }
  (entry,) = out["runs"]
  assert storage.read_json("gs://b/work/runs/hydra.json") == entry
  # results.json: the entries, stage records without their metric summary.
  records = [
    {k: v for k, v in s.items() if k != "summary"} for s in entry["stages"]
  ]
  assert records != entry["stages"]
  written = storage.read_json("gs://b/work/results.json")["runs"]
  assert written == [dict(entry, stages=records)]
  assert experiment.run(config, "gs://b/work")["runs"] == out["runs"]  # reuse
  # Records and the report of a study on the bucket, claims there too.
  cell = study.Cell("hydra", 0.5, 0)
  rec = study.record(cell, config, out["runs"][0])
  storage.write_json(study.record_path("gs://b/results", cell), rec)
  assert study_report.load_records("gs://b/results") == [rec]
  summary = study_report.aggregate(
    "gs://b/results", study_smoke.get_config().study
  )
  assert summary["num_records"] == 1
  assert {"b/results/RESULTS.md", "b/results/summary.json"} <= set(bucket)
  storage.save_figure(Figure(), "gs://b/results/f.png")  # plots too
  assert bucket["b/results/f.png"].getvalue()[:4] == b"\x89PNG"
  assert storage.claim("gs://b/claims/x", "w1")
  assert not storage.claim("gs://b/claims/x", "w2")


def _comparable(record: dict) -> dict:
  """The record without the fields that may differ between two runs of a
  cell: wall and compile times."""
  if isinstance(record, dict):
    return {
      k: _comparable(v)
      for k, v in record.items()
      if not any(t in k for t in ("wall_time", "compile_time", "first_step"))
    }
  if isinstance(record, list):
    return [_comparable(v) for v in record]
  return record


def _records(results: str) -> dict:
  return {
    os.path.basename(p): _comparable(json.loads(open(p).read()))
    for p in sorted(glob.glob(os.path.join(results, "cells", "*.json")))
  }


@pytest.fixture(scope="module")
def sequential(run_main, tmp_path_factory):
  """The smoke study's records, run sequentially in one process."""
  root = tmp_path_factory.mktemp("sequential")
  done = run_main(
    SMOKE,
    f"--workdir={root / 'w'}",
    f"--results_dir={root / 'r'}",
    module="experiments.study",
  )
  assert done.returncode == 0, done.stderr[-3000:]
  records = _records(str(root / "r"))
  assert len(records) == 4
  return records


def _concurrently(run_main, tmp_path, flags: list[str]) -> list[str]:
  """Runs the smoke study once per flag, all at once, on one work and
  results directory; asserts each succeeded; returns their outputs."""
  procs = [
    run_main(
      SMOKE,
      f"--workdir={tmp_path / 'w'}",
      f"--results_dir={tmp_path / 'r'}",
      flag,
      module="experiments.study",
      background=True,
    )
    for flag in flags
  ]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0] * len(procs), outputs[0][-3000:]
  return outputs


def test_concurrent_shards_and_submitit_give_the_sequential_records(
  run_main, sequential, tmp_path
):
  # Three concurrent shards: shard 2 holds cells whose pretraining the two
  # others run, and waits for it.
  _concurrently(run_main, tmp_path, [f"--shard={i}/3" for i in range(3)])
  assert _records(str(tmp_path / "r")) == sequential
  listed = run_main(
    SMOKE,
    f"--workdir={tmp_path / 'w'}",
    f"--results_dir={tmp_path / 'r'}",
    "--list",
    module="experiments.study",
  )
  lines = listed.stdout.strip().splitlines()
  assert len(lines) == 6 and all(line.endswith("\tdone") for line in lines)
  # submitit's local executor, one job per pretraining and per cell.
  launched = run_main(
    SMOKE,
    f"--workdir={tmp_path / 'sub'}",
    f"--results_dir={tmp_path / 'subr'}",
    "--timeout_min=10",
    module="experiments.study.launch",
    timeout=600,
  )
  assert launched.returncode == 0, launched.stderr[-3000:]
  assert _records(str(tmp_path / "subr")) == sequential
  assert (tmp_path / "subr" / "RESULTS.md").exists()


def test_two_processes_racing_for_one_cell(run_main, sequential, tmp_path):
  cell = "csam__s0.50__seed0.json"
  outputs = _concurrently(run_main, tmp_path, [f"--cell={cell[:-5]}"] * 2)
  assert _records(str(tmp_path / "r")) == {cell: sequential[cell]}
  # The pretraining ran once (one worker waited on the other's claim), the
  # cell ran once (the other found it claimed or recorded).
  ran = sum(o.count("study study_smoke: cell csam") for o in outputs)
  pretrained = sum(
    o.count("study study_smoke: pretrain__seed0") for o in outputs
  )
  assert (ran, pretrained) == (1, 1)
  assert not os.listdir(tmp_path / "w" / "claims")  # every claim released


def _stop_when(proc, path: str, timeout: float = 300) -> None:
  """Sends SIGTERM to ``proc`` as soon as ``path`` exists."""
  start = time.time()
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    assert time.time() - start < timeout
    time.sleep(0.01)
  proc.send_signal(signal.SIGTERM)


def test_sigterm_mid_stage_resumes_to_the_same_record(
  run_main, sequential, tmp_path
):
  cell = "hydra__s0.50__seed1"
  args = (
    SMOKE,
    f"--workdir={tmp_path / 'w'}",
    f"--results_dir={tmp_path / 'r'}",
    f"--cell={cell}",
  )
  config = study_smoke.get_config()
  (job,) = [j for j in study.jobs(config) if j.id == cell]
  claims = tmp_path / "w" / "claims"
  # Stopped in its pretraining (claimed before the first step), then in
  # the cell's first stage: each time a checkpoint at step 1, status 143.
  for claim in (job.needs[0], cell):
    proc = run_main(*args, module="experiments.study", background=True)
    _stop_when(proc, str(claims / claim))
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == study.PREEMPTED_STATUS, out[-3000:]
    assert "stopped by SIGTERM at step 1/" in out
    assert not os.listdir(claims)
  shared = study.shared_dir(
    str(tmp_path / "w"), study.cell_config(config, job.cell)
  )
  steps = os.listdir(os.path.join(shared, "pretrain_sgd"))
  assert max(map(int, steps)) == 30 and os.path.exists(f"{shared}/DONE.json")
  stage = tmp_path / "w" / cell / "checkpoints" / "hydra" / "1_search"
  assert sorted(os.listdir(stage)) == ["1"]
  resumed = run_main(*args, module="experiments.study")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming stage 1 (search) at step 1" in resumed.stderr
  # The record is the sequential run's. The stage summaries' means sum
  # other intervals (rows at the stop's step 1), equal up to rounding.
  (got,) = _records(str(tmp_path / "r")).values()
  recorded = got["stages"]
  want = sequential[cell + ".json"]
  (got, got_means), (want, want_means) = _pop_means(got), _pop_means(want)
  assert got == want
  assert len(got_means) == len(want_means) == len(want["stages"])
  for g, w in zip(got_means, want_means, strict=True):
    assert g == pytest.approx(w, rel=1e-6, abs=1e-9)
  # The done marker identifies the pretraining run the record starts from.
  marker = storage.read_json(f"{shared}/DONE.json")
  sig = study_pretraining.signature(marker["stages"]["pretrain_sgd"])
  assert "pretrain/eval_accuracy" in sig and "pretrain/mean_loss" in sig
  assert study_pretraining.same_run(sig, study_pretraining.signature(recorded))


def _pop_means(record: dict) -> tuple[dict, list[dict]]:
  """A copy of the record without its stage summaries' means, and those."""
  record = copy.deepcopy(record)
  return record, [s["summary"].pop("means") for s in record["stages"]]


def test_plan_counts_passes_and_schedules_longest_first():
  from experiments.study import plan

  config = study_smoke.get_config()
  jobs = {j.id: j for j in study.jobs(config)}
  pre = next(j for j in jobs.values() if j.pretraining)
  # 30 SGD steps of 32 images, a training pass counted as 3 forward passes.
  assert plan.job_passes(config, pre) == 30 * 32 * 3
  # C-SAM: 20 search steps of 4 passes (clean and varied objective, at the
  # mask and at its perturbation), 10 fine-tuning steps, then 16 images x
  # N = 32 draws x 1 distribution of certification.
  csam = jobs["csam__s0.50__seed0"]
  assert plan.job_passes(config, csam) == (
    20 * 32 * 4 * 3 + 10 * 32 * 3 + 16 * 32
  )
  hours = plan.job_hours(config, csam, 4500.0)
  assert hours / plan.job_hours(config, pre, 4500.0) == pytest.approx(
    plan.job_passes(config, csam) / (30 * 32 * 3)
  )
  # Longest first over 2 workers: pretraining [2, 1] -> 2, cells [3, 3, 1]
  # -> loads (3, 3) then (4, 3) -> 4.
  assert plan.wall_hours([2.0, 1.0], [3.0, 3.0, 1.0], 2) == 6.0
  assert plan.wall_hours([2.0, 1.0], [3.0, 3.0, 1.0], 1) == 10.0
  rows = plan.plan_rows([config], [1, 4], 4500.0)
  assert rows[0][:3] == ["study_smoke", "2", "4"]


def _pretrain_stage(accuracy: float) -> list[dict]:
  return [
    dict(name="pretrain", kind="pretrain", steps=30, eval_accuracy=accuracy)
  ]


def test_a_record_with_the_same_config_and_pretraining_run_is_reused(
  tmp_path, monkeypatch
):
  config = study_smoke.get_config()
  other, work = tmp_path / "other", str(tmp_path / "w")
  by_seed = {0: 0.5, 1: 0.6}  # this work directory's pretraining runs
  for job in study.jobs(config):
    if job.pretraining:
      shared = study.shared_dir(work, study.cell_config(config, job.cell))
      storage.write_json(
        f"{shared}/DONE.json",
        dict(
          job=job.id,
          stages=dict(pretrain_sgd=_pretrain_stage(by_seed[job.cell.seed])),
        ),
      )
  cell = study.Cell("hydra", 0.5, 0)
  own = json.loads(study.cell_config(config, cell).to_json())
  # Written by an older version: the field's old name, a field it predates.
  older = copy.deepcopy(dict(own, name="other-study-hydra"))
  csam = older["search"]["csam"]
  csam["variation_kind"] = csam.pop("distribution")
  del older["search"]["hydra"]["rank_by_abs"]
  stages = _pretrain_stage(0.5)
  storage.write_json(
    study.record_path(str(other), cell),
    dict(cell=cell.id, config=older, stages=stages),
  )
  odd = study.Cell("csam", 0.5, 0)  # same id, another config: runs
  storage.write_json(
    study.record_path(str(other), odd),
    dict(cell=odd.id, config=dict(own, seed=5), stages=stages),
  )
  # The same config from another pretraining run of seed 1: runs.
  moved = study.Cell("hydra", 0.5, 1)
  storage.write_json(
    study.record_path(str(other), moved),
    dict(
      cell=moved.id,
      config=json.loads(study.cell_config(config, moved).to_json()),
      stages=_pretrain_stage(0.55),
    ),
  )
  config.study.reuse_dirs = (str(other),)
  ran = []
  monkeypatch.setattr(
    study, "run_cell", lambda c, job, *_: ran.append(job.id) or True
  )
  ids = (cell.id, odd.id, moved.id)
  selected = [j for j in study.jobs(config) if j.id in ids]
  study.run_jobs(config, selected, work, str(tmp_path / "r"))
  assert sorted(ran) == sorted([odd.id, moved.id])
  rec = storage.read_json(study.record_path(str(tmp_path / "r"), cell))
  assert rec["reused_from"] == str(other) and rec["config"]["seed"] == 0
  for bad in ("results/x", (3,)):
    with config.study.ignore_type():
      config.study.reuse_dirs = bad
    with pytest.raises(ValueError, match="study.reuse_dirs must be a tuple"):
      study.validate_study(config.study)


def test_a_done_marker_without_stage_records_reads_the_checkpoints(tmp_path):
  """A marker written before it held the stage records: the pretraining's
  signature comes from its stage-end checkpoint's meta; without one (or
  mid-stage) it is empty, and the cell's record is not reused."""
  from experiments.training import checkpointing

  config = study_smoke.get_config()
  work = str(tmp_path / "w")
  cell = study.Cell("hydra", 0.5, 0)
  shared = study.shared_dir(work, study.cell_config(config, cell))
  storage.write_json(f"{shared}/DONE.json", dict(job="pretrain"))
  assert study.local_pretraining(config, cell, work) == {}
  ckpt = checkpointing.StageCheckpointer(
    f"{shared}/pretrain_sgd", max_to_keep=2, every_steps=0
  )
  state = dict(w=np.zeros(2, np.float32))
  ckpt.save(10, state, dict(done=False, records=[]))
  assert study.local_pretraining(config, cell, work) == {}  # mid-stage
  ckpt.save(30, state, dict(done=True, records=_pretrain_stage(0.5)))
  ckpt.close()
  assert study.local_pretraining(config, cell, work) == {
    "pretrain/steps": 30,
    "pretrain/eval_accuracy": 0.5,
  }
  # The marker's own records, where it has them, win.
  storage.write_json(
    f"{shared}/DONE.json",
    dict(job="pretrain", stages=dict(pretrain_sgd=_pretrain_stage(0.6))),
  )
  signature = study.local_pretraining(config, cell, work)
  assert signature["pretrain/eval_accuracy"] == 0.6


def test_the_peers_study_shares_the_structure_studys_pretraining_and_cells():
  from experiments.configs import study_peers, study_structure

  peers, structure = study_peers.get_config(), study_structure.get_config()
  study.validate_study(peers.study)
  pre = lambda c: [j.id for j in study.jobs(c) if j.pretraining][:3]
  assert pre(peers) == pre(structure)
  for name in study_peers.BASELINES:
    cell = study.Cell(name, 0.9, 1)
    a, b = (
      json.loads(study.cell_config(c, cell).to_json())
      for c in (peers, structure)
    )
    assert a["name"] != b["name"] and study._same_run(a, b)
  assert len(study.cells(peers.study)) == 11 * 3


def test_an_npz_dataset_on_a_bucket(bucket):
  import io

  import numpy as np

  from experiments.input_pipeline import numpy_files
  from experiments.input_pipeline.spec import (
    get_default_data_config,
    resolve_spec,
  )

  rng = np.random.default_rng(0)
  arrays = dict(
    x_train=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
    y_train=np.arange(6) % 3,
    x_test=rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8),
    y_test=np.arange(3),
  )
  blob = io.BytesIO()
  np.savez(blob, **arrays)
  with storage.path("gs://b/data/tiny.npz").open("wb") as f:
    f.write(blob.getvalue())
  cfg = get_default_data_config()
  cfg.update(
    dict(source="npz", path="gs://b/data/tiny.npz", image_size=8, channels=3)
  )
  data = numpy_files.load_arrays(resolve_spec(cfg))
  np.testing.assert_array_equal(data.splits["train"].images, arrays["x_train"])
  np.testing.assert_array_equal(data.splits["eval"].labels, arrays["y_test"])
  cfg.path = "gs://b/data/none.npz"
  with pytest.raises(FileNotFoundError, match="none.npz.: no such file"):
    numpy_files.load_arrays(resolve_spec(cfg))


def test_the_celeba_attribute_file_on_a_bucket(bucket):
  import types

  from experiments.input_pipeline import tfds_source

  storage.path("gs://b/anno.txt").write_text(
    "3\nSmiling Male\n0.jpg -1 1\n1.jpg 1 -1\n2.jpg 1 1\n"
  )
  spec = types.SimpleNamespace(
    attributes_file="gs://b/anno.txt", manual_dir="", attribute="Male"
  )
  assert tfds_source._read_attribute_file(spec).tolist() == [1, 0, 1]
  spec.attributes_file = "gs://b/none.txt"
  with pytest.raises(FileNotFoundError, match="not found at 'gs://b/none"):
    tfds_source._read_attribute_file(spec)


def test_a_study_refuses_a_config_that_does_not_certify_a_reported_level(
  tmp_path,
):
  config = study_smoke.get_config()
  config.certify.eps = (1e-2, 0.1)  # no 1e-3: a report column would be empty
  with pytest.raises(ValueError, match="certify.eps lacks 1e-03"):
    study.run_jobs(config, study.jobs(config), str(tmp_path), str(tmp_path))
