r"""Runs a study's jobs on a scheduler through submitit (optional extra).

  pip install -e ".[cluster]"

  # Slurm: the pretraining jobs as one array, the cells as another that
  # starts when they succeed; preempted or timed-out jobs are requeued and
  # resume from their orbax checkpoints.
  python -m experiments.study.launch \
    --config=experiments/configs/study_paper.py \
    --executor=slurm --slurm_partition=gpu --timeout_min=720 --gpus=1

  # n workers that each run the shard i/n (Slurm or this machine).
  python -m experiments.study.launch \
    --config=experiments/configs/study_smoke.py \
    --executor=local --workers=2

Each submitted job runs ``python -m experiments.study --config=... --cell=ID``
(or ``--shard=i/n``) in a fresh process, with the --config overrides,
--workdir and --results_dir given here; the job contract (ids,
dependencies, claims, atomic records, SIGTERM) is experiments/study/runner.py's,
so any other scheduler (a TPU VM per shard, XManager, Ray) runs the same
commands: see docs/cluster.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from absl import app, flags, logging

from experiments import main as main_lib
from experiments.study import runner as study

_EXECUTOR = flags.DEFINE_enum(
  "executor", "local", ["local", "slurm"], "submitit's executor."
)
_FOLDER = flags.DEFINE_string(
  "submitit_dir", None, "submitit's logs; default <workdir>/submitit."
)
_WORKERS = flags.DEFINE_integer(
  "workers",
  0,
  "Submit this many shard jobs (--shard=i/n) instead of one job per "
  "pretraining and cell (0).",
)
_TIMEOUT_MIN = flags.DEFINE_integer("timeout_min", 60, "Minutes per job.")
_PARTITION = flags.DEFINE_string("slurm_partition", None, "Slurm partition.")
_GPUS = flags.DEFINE_integer("gpus", 0, "GPUs per job.")
_CPUS = flags.DEFINE_integer("cpus", 2, "CPUs per job (Slurm).")
_PARALLEL = flags.DEFINE_integer(
  "array_parallelism", 64, "Slurm: most jobs of an array at once."
)
_WAIT = flags.DEFINE_bool(
  "wait", True, "Wait for every job and fail if one failed."
)


class StudyCommand:
  """One job: ``python -m experiments.study <args>`` in a fresh process.

  A ``submitit.helpers.Checkpointable`` when submitted (see `submit`):
  preempted or timed out, submitit requeues it, and the study resumes from
  the cell's checkpoints.
  """

  def __init__(self, args: list[str]):
    self.args = list(args)
    self._process = None

  def __getstate__(self) -> dict:
    return {"args": self.args, "_process": None}

  def __call__(self) -> int:
    command = [sys.executable, "-m", "experiments.study", *self.args]
    self._process = subprocess.Popen(command)
    status = self._process.wait()
    if status != 0:
      raise RuntimeError(f"{' '.join(command)} exited with status {status}")
    return status

  def stop(self, timeout_s: float = 120.0) -> None:
    """Asks the running study process to checkpoint and exit (SIGTERM)."""
    if self._process is not None and self._process.poll() is None:
      self._process.send_signal(signal.SIGTERM)
      try:
        self._process.wait(timeout=timeout_s)
      except subprocess.TimeoutExpired:
        self._process.kill()


def _checkpointable(args: list[str]):
  import submitit  # The optional extra: only the launcher needs it.

  class _Job(StudyCommand, submitit.helpers.Checkpointable):
    def checkpoint(self, *args, **kwargs):
      # Slurm's warning before a timeout or preemption (SIGUSR2) reaches
      # this process: the study process checkpoints and exits first, then
      # submitit requeues the same command, which resumes.
      self.stop()
      return super().checkpoint(*args, **kwargs)

  return _Job(args)


def study_args(argv: list[str], workdir: str, results_dir: str) -> list[str]:
  """The study's command line: the --config flags of ``argv`` (file and
  overrides), the work and results directories.

  Example:
    >>> study_args(["launch", "--config=c.py", "--config.seed=3",
    ...             "--workers=2"], "w", "r")
    ['--config=c.py', '--config.seed=3', '--workdir=w', '--results_dir=r']
  """
  kept = [a for a in argv[1:] if a.startswith("--config")]
  return [*kept, f"--workdir={workdir}", f"--results_dir={results_dir}"]


def make_executor(folder: str):
  """submitit's executor for --executor, with this launcher's resources."""
  import submitit

  if _EXECUTOR.value == "local":
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=_TIMEOUT_MIN.value)
    return executor
  executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
  executor.update_parameters(
    timeout_min=_TIMEOUT_MIN.value,
    slurm_partition=_PARTITION.value,
    gpus_per_node=_GPUS.value,
    cpus_per_task=_CPUS.value,
    slurm_array_parallelism=_PARALLEL.value,
  )
  return executor


def submit(
  executor,
  config,
  args: list[str],
  workdir: str,
  results_dir: str,
  workers: int,
):
  """Submits the study's pending work; returns the submitit jobs.

  With ``workers`` > 0, one job per shard ``i/workers``. Else one job per
  unfinished pretraining, then one per unrecorded cell; on Slurm the cells
  start when every pretraining job has succeeded (``afterok``), elsewhere
  a cell waits for its pretraining under the claim (`study.run_jobs`).
  """
  if workers > 0:
    with executor.batch():
      shards = [
        executor.submit(_checkpointable([*args, f"--shard={i}/{workers}"]))
        for i in range(workers)
      ]
    return shards
  todo = [
    job
    for job in study.jobs(config)
    if not study.job_done(config, job, workdir, results_dir)
  ]
  first = [j for j in todo if j.pretraining]
  with executor.batch():
    pre = [
      executor.submit(_checkpointable([*args, f"--cell={j.id}"])) for j in first
    ]
  if pre and _EXECUTOR.value == "slurm":
    ids = ":".join(job.job_id for job in pre)
    executor.update_parameters(
      slurm_additional_parameters={"dependency": f"afterok:{ids}"}
    )
  with executor.batch():
    cells = [
      executor.submit(_checkpointable([*args, f"--cell={j.id}"]))
      for j in todo
      if not j.pretraining
    ]
  return pre + cells


def main(argv: list[str]) -> None:
  config = main_lib.setup([argv[0]], "experiments/configs/study_smoke.py")
  study.validate_study(config.study)
  name = config.study.name
  workdir = os.path.abspath(
    main_lib._WORKDIR.value or os.path.join("workdir", name)
  )
  results_dir = os.path.abspath(
    study._RESULTS_DIR.value or os.path.join("results", name)
  )
  args = study_args(sys.argv, workdir, results_dir)
  folder = _FOLDER.value or os.path.join(workdir, "submitit")
  jobs = submit(
    make_executor(folder), config, args, workdir, results_dir, _WORKERS.value
  )
  logging.info("Submitted %d jobs (logs in %s)", len(jobs), folder)
  if not _WAIT.value:
    return
  failed = []
  for job in jobs:
    try:
      job.result()
    except Exception as e:  # noqa: BLE001 - reported together below.
      failed.append(f"{job.job_id}: {e}")
  if failed:
    raise RuntimeError("jobs failed:\n" + "\n".join(failed))
  study.study_report.aggregate(results_dir, config.study)
  logging.info("Wrote %s", os.path.join(results_dir, "RESULTS.md"))


if __name__ == "__main__":
  app.run(main)
