"""Accuracy under CIFAR-10-C corruptions (generated in JAX or from TFDS).

``evaluate_corruptions(cfg, key, logits_fn, images, labels)`` returns
``{"per_corruption": {name: {"1": acc, ..., "5": acc}},
"mean_corruption_accuracy": float, "source": "generated" | "tfds",
"num_images": int}``. Generated corruptions use
``csam_jax.variations.corrupt`` with the key
``fold_in(fold_in(key, i), severity)``, i the corruption's index in
``CORRUPTIONS + EXTRA_CORRUPTIONS``, and one key per image
(``split(that_key, n)``), so results do not depend on the batch size.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from csam_jax import variations

ALL_CORRUPTIONS = variations.CORRUPTIONS + variations.EXTRA_CORRUPTIONS
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


def _tfds_examples(config_name, data_dir, num_images):
  import tensorflow_datasets as tfds

  ds = tfds.builder(config_name, data_dir=data_dir).as_dataset(
    split=f"test[:{num_images}]"
  )
  rows = list(tfds.as_numpy(ds))[:num_images]
  images = np.stack([r["image"] for r in rows]).astype(np.float32) / 255.0
  return images, np.array([r["label"] for r in rows])


def evaluate_corruptions(
  cfg: Any,
  key: jax.Array,
  logits_fn: Callable[[jax.Array], jax.Array],
  images: Any,
  labels: Any,
) -> dict[str, Any]:
  """Per-corruption, per-severity accuracy and the mean over all of them.

  Args:
    cfg: the ``config.corruptions`` section (corruptions_config.py).
    key: PRNG key for the generated corruptions.
    logits_fn: maps float32 NHWC images in [0, 1] to logits.
    images: float32 [0, 1] NHWC test images (numpy or jax).
    labels: int labels of ``images``.

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
          config_name, cfg.data_dir, len(images)
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
  accuracies = [a for row in per_corruption.values() for a in row.values()]
  return {
    "per_corruption": per_corruption,
    "mean_corruption_accuracy": float(np.mean(accuracies)),
    "source": "tfds" if use_tfds else "generated",
    "num_images": int(len(images)),
  }


def headline_columns(corr_dict: dict[str, Any]) -> dict[str, float]:
  """Columns for the results table: the mean corruption accuracy.

  Example:
    >>> headline_columns({"mean_corruption_accuracy": 0.5})
    {'corruption acc.': 0.5}
  """
  return {"corruption acc.": float(corr_dict["mean_corruption_accuracy"])}


def markdown_table(corr_dict: dict[str, Any]) -> str:
  """The per-corruption accuracy table (rows: corruptions; cols: severity).

  Example:
    >>> print(markdown_table({"per_corruption": {"fog": {"1": 0.9, "2": 0.8}},
    ...   "mean_corruption_accuracy": 0.85, "source": "generated"}))
    | corruption | 1 | 2 | mean |
    | --- | --- | --- | --- |
    | fog | 0.9000 | 0.8000 | 0.8500 |
    | mean (generated) |  |  | 0.8500 |
  """
  rows = corr_dict["per_corruption"]
  severities = list(next(iter(rows.values())))
  lines = [
    "| corruption | " + " | ".join(severities) + " | mean |",
    "| --- |" + " --- |" * (len(severities) + 1),
  ]
  for name, accs in rows.items():
    values = [accs[s] for s in severities]
    cells = " | ".join(f"{v:.4f}" for v in values)
    lines.append(f"| {name} | {cells} | {np.mean(values):.4f} |")
  mean = corr_dict["mean_corruption_accuracy"]
  blanks = " |" * len(severities)
  lines.append(f"| mean ({corr_dict['source']}) |{blanks} {mean:.4f} |")
  return "\n".join(lines)
