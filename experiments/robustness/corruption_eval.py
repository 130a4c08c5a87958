"""Accuracy under CIFAR-10-C corruptions (generated in JAX or from TFDS).

``evaluate_corruptions(cfg, key, logits_fn, images, labels, indices)``
returns ``{"per_corruption": {name: {"1": acc, ..., "5": acc}},
"mean_corruption_accuracy": float, "mean_without_frost": float,
"source": "generated" | "tfds", "num_images": int}``. Both sources evaluate
the same test images: ``indices`` are the rows of the evaluation split that
``images`` hold (the harness's seeded random subset), and the TFDS path
reads exactly those rows of ``cifar10_corrupted``. Generated corruptions use
``csam_jax.variations.corrupt`` with the key
``fold_in(fold_in(key, i), severity)``, i the corruption's index in
``CORRUPTIONS + EXTRA_CORRUPTIONS``, and one key per image
(``split(that_key, n)``), so results do not depend on the batch size.

Frost is marked wherever it is reported: the published CIFAR-10-C frost
blends crops of six frost photographs, which do not ship with any package
we can depend on, so our generated frost is a synthetic texture matched to
their statistics (`GENERATED_TEXTURES`); the mean is also reported without
it (``mean_without_frost``). From TFDS, frost is the published one.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from csam_jax import variations
from experiments.reports import markdown

ALL_CORRUPTIONS = variations.CORRUPTIONS + variations.EXTRA_CORRUPTIONS
# Generated corruptions that stand in for the published photographs.
GENERATED_TEXTURES = ("frost",)
# TFDS cifar10_corrupted config names that differ from ours.
TFDS_NAMES = {
  "elastic_transform": "elastic",
  "glass_blur": "frosted_glass_blur",
}


def validate_corruptions_config(cfg: Any) -> None:
  """Raises ValueError naming the bad field of ``config.corruptions``."""
  names = tuple(cfg.names)
  if not names:
    raise ValueError("config.corruptions.names must be non-empty.")
  for name in names:
    if name not in ALL_CORRUPTIONS:
      raise ValueError(
        f"config.corruptions.names: unknown corruption {name!r}; valid "
        f"names: {ALL_CORRUPTIONS}."
      )
  severities = tuple(cfg.severities)
  if not severities or any(
    isinstance(s, bool) or s not in (1, 2, 3, 4, 5) for s in severities
  ):
    raise ValueError(
      "config.corruptions.severities must be a non-empty list of ints in "
      f"1..5, got {list(severities)}."
    )
  for field in ("num_images", "batch_size"):
    value = cfg[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(
        f"config.corruptions.{field} must be a positive int, got {value!r}."
      )


@functools.cache
def _corrupt_batch(name: str, severity: int) -> Callable:
  one = lambda k, im: variations.corrupt(k, im, name, severity)
  return jax.jit(jax.vmap(one))


def _accuracy(
  logits_fn, images, labels, batch_size, corrupt_fn=None, keys=None
):
  """Accuracy over fixed-size (padded) batches: one compilation each."""
  n = images.shape[0]
  correct = 0
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    pad = batch_size - (stop - start)
    batch = np.pad(images[start:stop], ((0, pad), (0, 0), (0, 0), (0, 0)))
    if corrupt_fn is not None:
      batch_keys = jnp.concatenate(
        [keys[start:stop], jnp.repeat(keys[:1], pad, axis=0)]
      )
      batch = corrupt_fn(batch_keys, jnp.asarray(batch))
    predictions = np.asarray(jnp.argmax(logits_fn(batch), axis=-1))
    correct += int(np.sum(predictions[: stop - start] == labels[start:stop]))
  return correct / n


def tfds_configs(names, severities) -> list[str]:
  """TFDS ``cifar10_corrupted`` config names for the (name, severity) grid.

  Example:
    >>> tfds_configs(["glass_blur"], [2])
    ['cifar10_corrupted/frosted_glass_blur_2']
  """
  return [
    f"cifar10_corrupted/{TFDS_NAMES.get(n, n)}_{s}"
    for n in names
    for s in severities
  ]


def tfds_available(names, severities, data_dir: str | None) -> bool:
  """Whether every needed ``cifar10_corrupted`` config is prepared."""
  import tensorflow_datasets as tfds  # Heavy; only when asked for.

  try:
    return all(
      tfds.builder(c, data_dir=data_dir).is_prepared()
      for c in tfds_configs(names, severities)
    )
  except Exception as e:  # noqa: BLE001 - unregistered / unreadable: absent.
    logging.info("cifar10_corrupted not usable (%s); generating.", e)
    return False


def _tfds_examples(config_name, data_dir, indices, labels):
  """Rows ``indices`` of a ``cifar10_corrupted`` test split, in [0, 1].

  Raises:
    ValueError: when the rows' labels differ from ``labels`` (the images
      evaluated are not those rows of the CIFAR-10 test split).
  """
  import tensorflow_datasets as tfds

  ds = tfds.builder(config_name, data_dir=data_dir).as_dataset(split="test")
  rows = list(tfds.as_numpy(ds))
  data = {k: np.stack([r[k] for r in rows]) for k in ("image", "label")}
  total = len(rows)
  if indices.size and (indices.min() < 0 or indices.max() >= total):
    raise ValueError(
      f"indices must lie in [0, {total}) for {config_name}, got "
      f"[{indices.min()}, {indices.max()}]"
    )
  c_labels = np.asarray(data["label"])[indices]
  if not np.array_equal(c_labels, labels):
    raise ValueError(
      f"{config_name}: the labels of test rows {indices[:8].tolist()}... "
      "differ from the labels of the images evaluated, so these images are "
      "not those rows of the TFDS CIFAR-10 test split (e.g. a data source "
      "in another order); set config.corruptions.tfds=False to generate "
      "the corruptions from the images instead"
    )
  images = np.asarray(data["image"])[indices].astype(np.float32) / 255.0
  return images, c_labels


def evaluate_corruptions(
  cfg: Any,
  key: jax.Array,
  logits_fn: Callable[[jax.Array], jax.Array],
  images: Any,
  labels: Any,
  indices: Any = None,
) -> dict[str, Any]:
  """Per-corruption, per-severity accuracy and the mean over all of them.

  Args:
    cfg: the ``config.corruptions`` section (corruptions_config.py).
    key: PRNG key for the generated corruptions.
    logits_fn: maps float32 NHWC images in [0, 1] to logits.
    images: float32 [0, 1] NHWC test images (numpy or jax).
    labels: int labels of ``images``.
    indices: the rows of the evaluation split that ``images`` hold (the
      TFDS source reads the same rows of ``cifar10_corrupted``); None means
      the first ``len(images)`` rows.

  Returns:
    A JSON-serialisable dict (see the module docstring).

  Raises:
    ValueError: a bad config field, or images / labels of wrong shape.
  """
  validate_corruptions_config(cfg)
  images = np.asarray(images, np.float32)[: cfg.num_images]
  labels = np.asarray(labels).astype(np.int64)[: cfg.num_images]
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
      f"`images` must be NHWC with 3 channels, got shape {images.shape}."
    )
  if labels.shape != images.shape[:1]:
    raise ValueError(
      f"`labels` must have shape {images.shape[:1]}, got {labels.shape}."
    )
  if indices is None:
    indices = np.arange(len(images))
  indices = np.asarray(indices, np.int64)[: cfg.num_images]
  if indices.shape != labels.shape:
    raise ValueError(
      f"`indices` must have shape {labels.shape} (one row per image), got "
      f"{indices.shape}."
    )
  names, severities = tuple(cfg.names), tuple(cfg.severities)
  use_tfds = bool(cfg.tfds) and tfds_available(names, severities, cfg.data_dir)
  per_corruption: dict[str, dict[str, float]] = {}
  for name in names:
    name_key = jax.random.fold_in(key, ALL_CORRUPTIONS.index(name))
    per_corruption[name] = {}
    for severity in severities:
      if use_tfds:
        config_name = tfds_configs([name], [severity])[0]
        c_images, c_labels = _tfds_examples(
          config_name, cfg.data_dir, indices, labels
        )
        acc = _accuracy(logits_fn, c_images, c_labels, cfg.batch_size)
      else:
        keys = jax.random.split(
          jax.random.fold_in(name_key, severity), len(images)
        )
        acc = _accuracy(
          logits_fn,
          images,
          labels,
          cfg.batch_size,
          _corrupt_batch(name, severity),
          keys,
        )
      per_corruption[name][str(severity)] = acc
      logging.info("corruption %s-%d: accuracy %.4f", name, severity, acc)
  return {
    "per_corruption": per_corruption,
    "mean_corruption_accuracy": _mean(per_corruption),
    "mean_without_frost": _mean(
      {n: a for n, a in per_corruption.items() if n not in GENERATED_TEXTURES}
    ),
    "source": "tfds" if use_tfds else "generated",
    "num_images": int(len(images)),
  }


def _mean(per_corruption: dict[str, dict[str, float]]) -> float:
  """Mean over every (corruption, severity) cell; NaN when there is none."""
  cells = [a for row in per_corruption.values() for a in row.values()]
  return float(np.mean(cells)) if cells else float("nan")


def display_name(name: str, source: str = "generated") -> str:
  """A corruption's name in tables: generated textures are marked.

  Example:
    >>> display_name("frost"), display_name("fog"), display_name("frost",
    ...   "tfds")
    ('frost (generated texture)', 'fog', 'frost')
  """
  if source == "generated" and name in GENERATED_TEXTURES:
    return f"{name} (generated texture)"
  return name


def corruption_columns(corr_dict: dict[str, Any]) -> dict[str, float]:
  """Columns for the results table: the mean corruption accuracy.

  When the generated frost texture is part of the mean, the column says so
  and a second column gives the mean without frost.

  Example:
    >>> corruption_columns({"mean_corruption_accuracy": 0.5,
    ...                   "per_corruption": {"fog": {"1": 0.5}}})
    {'corruption acc.': 0.5}
    >>> corruption_columns({"mean_corruption_accuracy": 0.5,
    ...   "mean_without_frost": 0.6, "source": "generated",
    ...   "per_corruption": {"fog": {"1": 0.6}, "frost": {"1": 0.4}}})
    {'corruption acc. (incl. generated frost)': 0.5, 'corruption acc. (excl. frost)': 0.6}
  """  # noqa: E501 - a doctest output line.
  mean = float(corr_dict["mean_corruption_accuracy"])
  if not _has_generated_texture(corr_dict):
    return {"corruption acc.": mean}
  return {
    "corruption acc. (incl. generated frost)": mean,
    "corruption acc. (excl. frost)": float(corr_dict["mean_without_frost"]),
  }


def _has_generated_texture(corr_dict: dict[str, Any]) -> bool:
  return corr_dict.get("source", "generated") == "generated" and any(
    n in GENERATED_TEXTURES for n in corr_dict.get("per_corruption", {})
  )


def markdown_table(corr_dict: dict[str, Any]) -> str:
  """The per-corruption accuracy table (rows: corruptions; cols: severity).

  Example:
    >>> print(markdown_table({"per_corruption": {"fog": {"1": 0.9, "2": 0.8},
    ...   "frost": {"1": 0.5, "2": 0.3}}, "mean_corruption_accuracy": 0.625,
    ...   "mean_without_frost": 0.85, "source": "generated"}))
    | corruption | 1 | 2 | mean |
    | --- | --- | --- | --- |
    | fog | 0.9000 | 0.8000 | 0.8500 |
    | frost (generated texture) | 0.5000 | 0.3000 | 0.4000 |
    | mean (generated) |  |  | 0.6250 |
    | mean without frost (generated) |  |  | 0.8500 |
  """
  rows = corr_dict["per_corruption"]
  source = corr_dict["source"]
  severities = list(next(iter(rows.values())))
  body = []
  for name, accs in rows.items():
    values = [accs[s] for s in severities]
    body.append(
      [display_name(name, source)]
      + [f"{v:.4f}" for v in values]
      + [f"{np.mean(values):.4f}"]
    )
  blanks = [""] * len(severities)
  mean = corr_dict["mean_corruption_accuracy"]
  body.append([f"mean ({source})", *blanks, f"{mean:.4f}"])
  if _has_generated_texture(corr_dict):
    without = corr_dict["mean_without_frost"]
    body.append([f"mean without frost ({source})", *blanks, f"{without:.4f}"])
  return markdown.table(["corruption", *severities, "mean"], body)


def methods_table(runs: list[dict[str, Any]]) -> str:
  """Accuracy per corruption (mean over severities), one column a method.

  Returns "" when no run has corruption results.

  Example:
    >>> run = lambda m, a: {"method": m, "corruptions": {"source":
    ...   "generated", "per_corruption": {"fog": {"1": a, "2": a},
    ...   "frost": {"1": a / 2, "2": a / 2}}, "mean_corruption_accuracy":
    ...   0.75 * a, "mean_without_frost": a}}
    >>> print(methods_table([run("dense", 0.8), run("csam", 0.6)]))
    | corruption | dense | csam |
    | --- | --- | --- |
    | fog | 0.8000 | 0.6000 |
    | frost (generated texture) | 0.4000 | 0.3000 |
    | mean | 0.6000 | 0.4500 |
    | mean without frost | 0.8000 | 0.6000 |
  """
  runs = [r for r in runs if r.get("corruptions")]
  if not runs:
    return ""
  results = [r["corruptions"] for r in runs]
  names = list(dict.fromkeys(n for c in results for n in c["per_corruption"]))
  body = []

  def row(label, values):
    body.append([label] + ["-" if v is None else f"{v:.4f}" for v in values])

  for name in names:
    label = display_name(name, results[0]["source"])
    accs = [c["per_corruption"].get(name) for c in results]
    row(
      label,
      [None if a is None else float(np.mean(list(a.values()))) for a in accs],
    )
  row("mean", [c["mean_corruption_accuracy"] for c in results])
  if any(_has_generated_texture(c) for c in results):
    row("mean without frost", [c["mean_without_frost"] for c in results])
  return markdown.table(["corruption", *(r["method"] for r in runs)], body)
