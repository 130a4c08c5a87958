r"""Start-up time: seconds before the first training step, cold and warm.

  python -m benchmarks.startup                     # all three parts
  python -m benchmarks.startup --parts=quickstart --full

1. ``quickstart``: the quickstart config twice, in one run, each in a fresh
   work directory and a fresh process, sharing one new (empty) persistent
   compilation cache: the first run compiles everything, the second reads
   it back. Prints the seconds from the launch of each process to the start
   of its first training step (the "first training step started" log line:
   its program compiled and dispatched) and their ratio (target: warm <=
   0.40 x cold). By default each process is stopped there (``--full`` runs
   both to the end and also checks that their results are identical).
2. ``googlenet``: the cifar10c config with ``--config.model.name=googlenet``
   on CIFAR-10, cold then warm cache: seconds to the start of the first
   training step (target: <= 30 s). ``--gn_data=pixels`` (default) decodes
   the JPEG npz (``--npz``) once into a pixel npz before timing (its decode
   time is printed); ``--gn_data=jpeg`` times the runs on the JPEG npz,
   decode included.
   ``--baseline=OTHER_CHECKOUT --rounds=R`` times cold starts of both
   checkouts instead, alternating (R rounds, the order swapped each round,
   every run with its own empty cache), and prints each checkout's median
   and their ratio: a before/after comparison on one loaded machine.
3. ``init``: compilation + run time of the jitted GoogLeNet initialisation
   with each ``config.model.init_prng`` (fresh processes, cache off).

``--repo`` points at another checkout (e.g. a worktree of an older commit)
to measure it the same way; ``--legacy`` omits the flags that older
checkouts lack (``compilation_cache_dir``, ``init_prng``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_STEP = re.compile(r"first training step started|\] step 1/")

_INIT_SCRIPT = """
import sys, time
t0 = time.time()
import jax
from experiments import models
from experiments.training import state
impl = sys.argv[1]
module = models.get_model("googlenet", num_classes=10)
# state.ModelFns in checkouts before the harness restructure (--repo).
Model = getattr(state, "Model", None) or state.ModelFns
model = Model(module, (0.5,) * 3, (0.25,) * 3)
key = jax.random.fold_in(jax.random.PRNGKey(0), 2**20)  # keys.run_keys' init
t1 = time.time()
init = jax.jit(
  lambda k: state.init_train_state(model, state.init_key(k, impl), (32, 32, 3))
)
jax.block_until_ready(init(key))
print(f"INIT {time.time() - t1:.2f}")
"""


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  return env


def time_to_first_step(
  repo: str, args: list[str], *, full: bool, timeout: float
) -> tuple[float, float | None]:
  """Launches ``experiments.main``; returns (seconds from the launch to the
  first-step log line, total seconds or None when stopped there)."""
  t0 = time.time()
  proc = subprocess.Popen(
    [sys.executable, "-m", "experiments.main", *args],
    cwd=repo,
    env=_env(),
    stderr=subprocess.PIPE,
    stdout=subprocess.DEVNULL,
    text=True,
    start_new_session=True,
  )
  first, tail = None, []
  try:
    for line in proc.stderr:
      tail = (tail + [line])[-40:]
      if first is None and FIRST_STEP.search(line):
        first = time.time() - t0
        if not full:
          break
      if time.time() - t0 > timeout:
        break
  finally:
    if proc.poll() is None and not full:
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  if first is None or (full and proc.returncode != 0):
    raise RuntimeError("run failed:\n" + "".join(tail))
  return first, (time.time() - t0 if full else None)


def _timing_free(tree):
  if isinstance(tree, dict):
    return {
      k: _timing_free(v)
      for k, v in tree.items()
      if k not in ("wall_time_s", "time_to_first_step_s", "compile_time_s")
    }
  if isinstance(tree, list):
    return [_timing_free(v) for v in tree]
  return tree


def bench_quickstart(opts, tmp: str) -> None:
  cache = os.path.join(tmp, "qs_cache")
  times, results = [], []
  for name in ("cold", "warm"):
    workdir = os.path.join(tmp, f"qs_{name}")
    args = [
      "--config=experiments/configs/quickstart.py",
      f"--workdir={workdir}",
    ]
    if not opts.legacy:
      args.append(f"--config.compilation_cache_dir={cache}")
    first, total = time_to_first_step(
      opts.repo, args, full=opts.full, timeout=opts.timeout
    )
    times.append(first)
    extra = "" if total is None else f", whole run {total:.1f}s"
    print(f"quickstart {name}: first training step after {first:.1f}s{extra}")
    if opts.full:
      with open(os.path.join(workdir, "results.json")) as f:
        results.append(_timing_free(json.load(f)["runs"]))
  ratio = times[1] / times[0]
  verdict = "met" if ratio <= 0.40 else "NOT met"
  print(
    f"quickstart warm/cold before the first step: {ratio:.3f} "
    f"(target <= 0.40: {verdict})"
  )
  if opts.full:
    print(
      f"quickstart cold and warm results identical: {results[0] == results[1]}"
    )


def pixel_npz(src: str, dst: str) -> float:
  """Decodes the JPEG npz into x_/y_ pixel arrays; returns the seconds."""
  import numpy as np
  from PIL import Image

  t0, out = time.time(), {}
  with np.load(src) as z:
    for split in ("train", "test"):
      data, off = z[f"{split}_jpeg"], z[f"{split}_offsets"]
      out[f"x_{split}"] = np.stack(
        [
          np.asarray(
            Image.open(io.BytesIO(data[off[i] : off[i + 1]].tobytes())).convert(
              "RGB"
            )
          )
          for i in range(len(off) - 1)
        ]
      )
      out[f"y_{split}"] = z[f"y_{split}"]
  seconds = time.time() - t0
  np.savez(dst, **out)
  return seconds


def _googlenet_args(data: str, workdir: str, cache: str | None) -> list[str]:
  args = [
    "--config=experiments/configs/cifar10c.py",
    "--config.model.name=googlenet",
    "--config.data.source=npz",
    f"--config.data.path={data}",
    "--config.methods=dense",
    "--config.logging.log_every_steps=1",
    f"--workdir={workdir}",
  ]
  if cache is not None:
    args.append(f"--config.compilation_cache_dir={cache}")
  return args


def _googlenet_data(opts, tmp: str) -> str:
  if opts.gn_data == "jpeg":
    return os.path.abspath(opts.npz)
  data = os.path.join(tmp, "cifar10_pixels.npz")
  seconds = pixel_npz(os.path.abspath(opts.npz), data)
  print(f"JPEG npz decoded to pixels once, before timing: {seconds:.1f}s")
  return data


def bench_googlenet(opts, tmp: str) -> None:
  data = _googlenet_data(opts, tmp)
  cache = None if opts.legacy else os.path.join(tmp, "gn_cache")
  for name in ("cold", "warm"):
    args = _googlenet_args(data, os.path.join(tmp, f"gn_{name}"), cache)
    first, _ = time_to_first_step(
      opts.repo, args, full=False, timeout=opts.timeout
    )
    verdict = "met" if first <= 30 else "NOT met"
    print(
      f"googlenet cifar10c {name} cache: first training step after "
      f"{first:.1f}s (target <= 30 s: {verdict})"
    )
    if opts.legacy:
      break  # No persistent cache: a second run is another cold run.


def bench_googlenet_baseline(opts, tmp: str) -> None:
  """Cold starts of ``--repo`` and ``--baseline``, alternating."""
  data = _googlenet_data(opts, tmp)
  repos = {"this": opts.repo, "baseline": opts.baseline}
  times = {name: [] for name in repos}
  for r in range(opts.rounds):
    order = list(repos) if r % 2 == 0 else list(repos)[::-1]
    for name in order:
      run = os.path.join(tmp, f"gn_{name}_{r}")
      cache = None if opts.legacy else run + "_cache"
      first, _ = time_to_first_step(
        repos[name],
        _googlenet_args(data, run, cache),
        full=False,
        timeout=opts.timeout,
      )
      times[name].append(first)
      print(f"round {r} {name} ({repos[name]}): cold start {first:.1f}s")
  med = {name: statistics.median(t) for name, t in times.items()}
  for name, t in times.items():
    print(
      f"googlenet cifar10c cold, {name}: median {med[name]:.1f}s "
      f"(min {min(t):.1f}, max {max(t):.1f}, {len(t)} runs)"
    )
  verdict = "met" if med["this"] <= 30 else "NOT met"
  print(
    f"ratio this/baseline {med['this'] / med['baseline']:.3f}; "
    f"target <= 30 s: {verdict}"
  )


def bench_init(opts) -> None:
  for impl in ("threefry", "rbg", "unsafe_rbg"):
    out = subprocess.run(
      [sys.executable, "-c", _INIT_SCRIPT, impl],
      cwd=opts.repo,
      env=dict(_env(), JAX_ENABLE_COMPILATION_CACHE="false"),
      capture_output=True,
      text=True,
      timeout=opts.timeout,
    )
    match = re.search(r"INIT ([0-9.]+)", out.stdout)
    if match is None:
      raise RuntimeError(out.stderr[-3000:])
    print(f"googlenet jitted init ({impl}): {float(match.group(1)):.1f}s")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default="quickstart,googlenet,init")
  parser.add_argument("--repo", default=REPO)
  parser.add_argument("--legacy", action="store_true")
  parser.add_argument("--full", action="store_true")
  parser.add_argument(
    "--npz",
    default=os.path.join(REPO, "..", "shared", "data", "cifar10_jpeg.npz"),
  )
  parser.add_argument("--gn_data", choices=("pixels", "jpeg"), default="pixels")
  parser.add_argument("--timeout", type=float, default=900)
  parser.add_argument("--baseline", default=None)
  parser.add_argument("--rounds", type=int, default=3)
  opts = parser.parse_args()
  print(
    f"repo {opts.repo}; {os.cpu_count()} CPUs; load average {os.getloadavg()}"
  )
  parts = opts.parts.split(",")
  with tempfile.TemporaryDirectory() as tmp:
    if "quickstart" in parts:
      bench_quickstart(opts, tmp)
    if "googlenet" in parts and opts.baseline:
      bench_googlenet_baseline(opts, tmp)
    elif "googlenet" in parts:
      bench_googlenet(opts, tmp)
    if "init" in parts:
      bench_init(opts)


if __name__ == "__main__":
  main()
