"""One path layer for work directories, records and reports.

Every path a run or a study writes or reads outside its checkpoints goes
through `etils.epath` (the path library TFDS and orbax use), so a work
directory or a results directory may be local or on a bucket (``gs://``,
``s3://``): orbax writes the checkpoints there itself.

Writes are atomic where it matters: a JSON record is written under a
temporary name unique to the writer and then renamed over the final name,
so a reader sees the old file, the new one or none, never a torn one, even
with two workers writing the same record. On object stores (GCS, S3) an
object appears whole when its upload completes, which gives the same
guarantee.

Example:
  >>> import tempfile
  >>> d = tempfile.mkdtemp()
  >>> write_json(f"{d}/cells/a.json", {"x": 1})
  >>> read_json(f"{d}/cells/a.json")
  {'x': 1}
  >>> claim(f"{d}/claims/a", "worker-1"), claim(f"{d}/claims/a", "worker-2")
  (True, False)
  >>> owner(f"{d}/claims/a")["worker"]
  'worker-1'
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any

from etils import epath

PathLike = str | os.PathLike


def path(p: PathLike, *parts: str) -> epath.Path:
  """``p`` (joined with ``parts``) as an `epath.Path`: local, ``gs://``,
  ``s3://`` ..."""
  return epath.Path(p, *parts)


def is_local(p: PathLike) -> bool:
  """True for a path on the local file system (no ``scheme://``)."""
  return "://" not in os.fspath(p)


def write_json(p: PathLike, data: Any, indent: int = 1) -> None:
  """Writes ``data`` as JSON atomically: a crash or a second writer leaves
  the old file, the new one or none, never a torn file."""
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(data, indent=indent)
  if not is_local(target):
    # An object store publishes an object whole when its upload ends.
    target.write_text(text)
    return
  tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
  tmp.write_text(text)
  os.replace(tmp, target)


def append_text(p: PathLike, text: str) -> None:
  """Appends ``text`` to the file at ``p`` (created when absent). Object
  stores have no append: there the object is rewritten whole."""
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_local(target):
    with open(target, "a") as f:
      f.write(text)
    return
  old = target.read_text() if target.exists() else ""
  target.write_text(old + text)


def save_figure(fig: Any, p: PathLike) -> None:
  """Saves a matplotlib figure as PNG at ``p`` (local or on a bucket)."""
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  with target.open("wb") as f:
    fig.savefig(f, format="png", dpi=120, bbox_inches="tight")


def read_json(p: PathLike) -> Any:
  """The JSON document at ``p``.

  Raises:
    FileNotFoundError: ``p`` does not exist.
    ValueError: ``p`` is not valid JSON (the error names the file).
  """
  target = path(p)
  if not target.exists():
    raise FileNotFoundError(f"{target}: no such file")
  text = target.read_text()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{target} is not valid JSON ({e})") from e


def worker_id() -> str:
  """This worker's identity: ``$CSAM_WORKER_ID``, else the scheduler's job
  (Slurm's job and array task; a requeued job keeps them), else
  ``host:pid``."""
  explicit = os.environ.get("CSAM_WORKER_ID")
  if explicit:
    return explicit
  job = os.environ.get("SLURM_JOB_ID")
  if job:
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"slurm:{job}" + (f"_{task}" if task else "")
  return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def owner(p: PathLike) -> dict[str, Any] | None:
  """The owner record of the claim at ``p``, None when unclaimed."""
  target = path(p)
  if not target.exists():
    return None
  try:
    return json.loads(target.read_text())
  except json.JSONDecodeError:
    return {"worker": "?", "host": "?", "pid": -1}


def _stale(held: dict[str, Any]) -> bool:
  """A claim of a process of this host that no longer runs."""
  return (
    held.get("host") == socket.gethostname()
    and int(held.get("pid", -1)) > 0
    and not _pid_alive(int(held["pid"]))
    and str(held.get("worker", "")).endswith(f":{held['pid']}")
  )


def claim(p: PathLike, worker: str | None = None) -> bool:
  """Claims the job whose claim file is ``p`` for ``worker``.

  True when this worker holds the claim: it created the file, or the file
  names this worker already (a requeued job resuming its own work), or its
  owner was a process of this host that has died. False when another
  worker holds it. Local claims are created with ``O_EXCL`` (atomic on
  local and NFS disks); on an object store the claim is written, read back
  and compared, which narrows but cannot close the race (two workers on one
  job there is a scheduler error; their records are still written
  atomically).
  """
  worker = worker or worker_id()
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  mine = dict(worker=worker, host=socket.gethostname(), pid=os.getpid())
  text = json.dumps(mine)
  for _ in range(2):
    if is_local(target):
      try:
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        pass
      else:
        with os.fdopen(fd, "w") as f:
          f.write(text)
        return True
    elif not target.exists():
      target.write_text(text)
    held = owner(target)
    if held is None:
      continue  # Released meanwhile: try again.
    if held.get("worker") == worker:
      if not is_local(target) or held.get("pid") == os.getpid():
        return True
      target.write_text(text)  # A requeued job: the same worker, a new pid.
      return True
    if _stale(held):
      release(target)
      continue
    return False
  return False


def release(p: PathLike) -> None:
  """Removes the claim at ``p`` (no-op when absent)."""
  target = path(p)
  if target.exists():
    target.unlink()
