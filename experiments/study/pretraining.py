"""Which pretraining run each cell of a study started from.

Every cell of a seed is meant to start from that seed's one pretrained model
(per pretraining role: SGD, or SAM for ``dense_sam``), so that a paired
comparison differs only in what follows the pretraining. Pretraining runs
once per work directory; a record reused from another study
(``study.reuse_dirs``), or run on another machine or code version, may come
from another run of the same config, and XLA's numerics on another machine
or after a code change need not reproduce it bit for bit.

A record identifies its pretraining run by its pretraining stage records
(kind ``pretrain``): the steps, the dense test accuracy after the stage
and, in records since the stage summaries (2026-12), the means of the
logged training metrics over every step. Two records come from the same
run when these agree on every field both hold (`same_run`); a record with
no such field matches nothing.
"""

from __future__ import annotations

import collections
from typing import Any

from experiments.training import methods


def signature(stages: list[dict]) -> dict[str, Any]:
  """The fields of the pretraining stage records that identify the run.

  Example:
    >>> signature([dict(name="pretrain", kind="pretrain", steps=3,
    ...   eval_accuracy=0.5, summary=dict(means=dict(loss=1.25))),
    ...   dict(name="search", kind="search", steps=2)])
    {'pretrain/steps': 3, 'pretrain/eval_accuracy': 0.5, 'pretrain/mean_loss': 1.25}
  """  # noqa: E501 - a doctest output line.
  out: dict[str, Any] = {}
  for stage in stages:
    if stage.get("kind") != "pretrain":
      continue
    name = stage["name"]
    out[f"{name}/steps"] = stage.get("steps")
    out[f"{name}/eval_accuracy"] = stage.get("eval_accuracy")
    means = (stage.get("summary") or {}).get("means") or {}
    for metric, value in sorted(means.items()):
      out[f"{name}/mean_{metric}"] = value
  return {k: v for k, v in out.items() if v is not None}


def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
  """Whether two signatures agree on every field both hold (and share one).

  Example:
    >>> same_run({"p/steps": 3, "p/eval_accuracy": 0.5},
    ...   {"p/steps": 3, "p/eval_accuracy": 0.5, "p/mean_loss": 1.0})
    True
    >>> same_run({"p/eval_accuracy": 0.5}, {"p/eval_accuracy": 0.6})
    False
    >>> same_run({}, {"p/eval_accuracy": 0.5})
    False
  """
  common = a.keys() & b.keys()
  return bool(common) and all(a[k] == b[k] for k in common)


def role(method: str) -> str:
  """The pretraining role(s) of ``method``'s recipe, e.g. ``pretrain_sgd``.

  Example:
    >>> role("hydra"), role("dense_sam")
    ('pretrain_sgd', 'pretrain_sam')
  """
  shared = [s.role for s in methods.get_recipe(method) if s.shared]
  return "+".join(shared) or "none"


def runs(records: list[dict]) -> list[dict[str, Any]]:
  """The pretraining runs behind the records, per seed and role: one entry
  per (seed, role) whose cells come from more than one run, each run with
  its dense test accuracy and its cells (the run of most cells first).

  Example:
    >>> stage = lambda acc: [dict(name="pretrain", kind="pretrain",
    ...   steps=3, eval_accuracy=acc)]
    >>> rec = lambda v, acc: dict(cell=v + "__seed0", variant=v, seed=0,
    ...   method="hydra", stages=stage(acc))
    >>> runs([rec("a", 0.5), rec("b", 0.5)])
    []
    >>> out = runs([rec("a", 0.5), rec("b", 0.5), rec("c", 0.4)])
    >>> [(r["eval_accuracy"], r["cells"]) for r in out[0]["runs"]]
    [(0.5, ['a__seed0', 'b__seed0']), (0.4, ['c__seed0'])]
  """
  groups = collections.defaultdict(list)
  for rec in records:
    groups[(rec["seed"], role(rec["method"]))].append(rec)
  out = []
  for (seed, group_role), recs in sorted(groups.items()):
    found: list[tuple[dict, list[dict]]] = []
    for rec in sorted(recs, key=lambda r: r["cell"]):
      sig = signature(rec.get("stages", []))
      for first_sig, members in found:
        if same_run(first_sig, sig):
          members.append(rec)
          break
      else:
        found.append((sig, [rec]))
    if len(found) > 1:
      found.sort(key=lambda run: -len(run[1]))
      out.append(
        dict(
          seed=seed,
          role=group_role,
          runs=[
            dict(
              eval_accuracy=_eval_accuracy(sig),
              cells=[m["cell"] for m in members],
            )
            for sig, members in found
          ],
        )
      )
  return out


def _eval_accuracy(sig: dict[str, Any]) -> float | None:
  """The dense test accuracy a run's `signature` holds."""
  found = [v for k, v in sig.items() if k.endswith("/eval_accuracy")]
  return found[0] if found else None


def describe(mixed: list[dict[str, Any]]) -> str:
  """RESULTS.md's sentence on the pretraining runs (`runs`' output).

  Example:
    >>> describe([])
    "Pretraining: every seed's cells start from one pretrained model (per pretraining role)."
    >>> print(describe([dict(seed=0, role="pretrain_sgd", runs=[
    ...   dict(eval_accuracy=0.6448, cells=["a__seed0", "b__seed0"]),
    ...   dict(eval_accuracy=0.6392, cells=["c__seed0"])])]))
    Pretraining: not every seed's cells start from one pretrained model, so their paired differences include the pretraining runs' (another machine, code version or study ran the others):
    - seed 0 (pretrain_sgd), 2 runs; dense test accuracy 64.48% (a__seed0, b__seed0); 63.92% (c__seed0)
  """  # noqa: E501 - doctest output lines.
  if not mixed:
    return (
      "Pretraining: every seed's cells start from one pretrained model "
      "(per pretraining role)."
    )
  lines = [
    "Pretraining: not every seed's cells start from one pretrained model, "
    "so their paired differences include the pretraining runs' (another "
    "machine, code version or study ran the others):"
  ]
  for group in mixed:
    parts = [
      f"{_percent(run['eval_accuracy'])} ({', '.join(run['cells'])})"
      for run in group["runs"]
    ]
    lines.append(
      f"- seed {group['seed']} ({group['role']}), {len(group['runs'])} "
      "runs; dense test accuracy " + "; ".join(parts)
    )
  return "\n".join(lines)


def _percent(value: float | None) -> str:
  return "n/a" if value is None else f"{100 * value:.2f}%"
