"""Data-parallel (4 forced CPU devices) and multi-process (2 processes, gloo)
runs match the single-device run."""

from __future__ import annotations

import json
import os
import socket

import pytest

# Faster compiles (level 0 miscompiles the C-SAM step to NaN on this
# XLA version); every run in a comparison uses the same flags.
FAST = "--xla_backend_optimization_level=1"
ARGS = [
  "--config=experiments/configs/smoke.py",
  "--config.methods=csam",
  "--config.pretrain.num_steps=3",
  "--config.search.num_steps=3",
  "--config.finetune.num_steps=2",
  "--config.evaluation.max_examples=64",
]


def _losses(workdir: str) -> list[tuple[str, str, int, float]]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [(r["run"], r["stage"], r["step"], r["loss"]) for r in rows]


def _run(run_main, workdir: str, devices: int = 1, extra=()):
  return run_main(
    f"--workdir={workdir}",
    *ARGS,
    *extra,
    xla_flags=FAST,
    devices=devices,
    background=True,
  )


def _wait(proc, timeout: int = 240) -> str:
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-3000:]
  return out


def _assert_same(a, b, tol: float):
  assert [r[:3] for r in a] == [r[:3] for r in b]
  assert len(a) >= 8  # 3 pretrain + 3 search + 2 finetune steps.
  for x, y in zip(a, b, strict=True):
    assert abs(x[3] - y[3]) <= tol, (x, y)


@pytest.fixture(scope="module")
def single(tmp_path_factory, run_main):
  workdir = str(tmp_path_factory.mktemp("single"))
  _wait(_run(run_main, workdir))
  return workdir


def test_four_devices_match_one(single, tmp_path, run_main):
  workdir = str(tmp_path / "four")
  out = _wait(_run(run_main, workdir, devices=4))
  _assert_same(_losses(single), _losses(workdir), 1e-5)
  with open(os.path.join(single, "results.json")) as f:
    one = json.load(f)["runs"][0]
  with open(os.path.join(workdir, "results.json")) as f:
    four = json.load(f)["runs"][0]
  assert four["clean_accuracy"] == pytest.approx(
    one["clean_accuracy"], abs=1e-9
  )
  assert four["sparsity_reached"] == one["sparsity_reached"]
  assert "Non-finite" not in out


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(single, tmp_path, run_main):
  workdir = str(tmp_path / "two")
  port = _free_port()
  procs = [
    _run(
      run_main,
      workdir,
      extra=[
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        "--cpu_collectives=gloo",
      ],
    )
    for i in range(2)
  ]
  try:
    for p in procs:
      _wait(p)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  _assert_same(_losses(single), _losses(workdir), 1e-5)
  with open(os.path.join(workdir, "results.json")) as f:
    runs = json.load(f)["runs"]
  with open(os.path.join(single, "results.json")) as f:
    expected = json.load(f)["runs"]
  assert runs[0]["clean_accuracy"] == pytest.approx(
    expected[0]["clean_accuracy"], abs=1e-9
  )
