"""Tests of experiments.robustness.corruption_eval (CIFAR-10-C accuracy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from csam_jax import variations
from experiments.configs import corruptions_config
from experiments.robustness import corruption_eval


def brightness_classifier(images):
  """Class 0 when the mean pixel is above 0.5, class 1 otherwise."""
  centred = jnp.mean(images, axis=(1, 2, 3)) - 0.5
  return jnp.stack([centred, -centred], axis=-1)


def make_config(**overrides):
  cfg = corruptions_config.get_corruptions_config()
  cfg.update(
    dict(
      names=["contrast", "brightness"],
      num_images=6,
      batch_size=4,
      tfds=False,
    )
  )
  cfg.update(overrides)
  return cfg


def constant_images():
  values = np.array([0.7, 0.25, 0.7, 0.25, 0.7, 0.25], np.float32)
  images = np.broadcast_to(values[:, None, None, None], (6, 8, 8, 3))
  return images.copy(), np.array([0, 1, 0, 1, 0, 1])


def test_hand_computed_accuracies():
  images, labels = constant_images()
  out = corruption_eval.evaluate_corruptions(
    make_config(), jax.random.key(0), brightness_classifier, images, labels
  )
  # Contrast keeps constant images; brightness adds .05 .1 .15 .2 .3 to the
  # value, so 0.25 crosses 0.5 (misclassified) only at severity 5.
  assert out["per_corruption"] == {
    "contrast": {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0, "5": 1.0},
    "brightness": {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0, "5": 0.5},
  }
  assert out["mean_corruption_accuracy"] == pytest.approx(0.95)
  assert out["source"] == "generated" and out["num_images"] == 6
  assert corruption_eval.corruption_columns(out) == {
    "corruption acc.": pytest.approx(0.95)
  }
  table = corruption_eval.markdown_table(out)
  assert "| brightness | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 0.5000 |" in table


def test_keys_and_batch_size_independence():
  rng = np.random.default_rng(0)
  images = (0.5 + rng.uniform(-0.02, 0.02, (5, 8, 8, 3))).astype(np.float32)
  labels = (images.mean(axis=(1, 2, 3)) < 0.5).astype(int)
  key = jax.random.key(3)
  results = [
    corruption_eval.evaluate_corruptions(
      make_config(
        names=["gaussian_noise"], severities=[5], num_images=5, batch_size=b
      ),
      key,
      brightness_classifier,
      images,
      labels,
    )["per_corruption"]["gaussian_noise"]["5"]
    for b in (2, 5)
  ]
  # The documented keys: fold_in(fold_in(key, index), severity), one per image.
  index = variations.CORRUPTIONS.index("gaussian_noise")
  keys = jax.random.split(
    jax.random.fold_in(jax.random.fold_in(key, index), 5), 5
  )
  expected_imgs = jnp.stack(
    [
      variations.corrupt(k, im, "gaussian_noise", 5)
      for k, im in zip(keys, images, strict=True)
    ]
  )
  predictions = np.argmax(brightness_classifier(expected_imgs), axis=-1)
  expected = float(np.mean(np.asarray(predictions) == labels))
  assert 0 < expected < 1  # the noise flips some, not all, predictions
  assert results == [expected, expected]


def test_tfds_absent_falls_back_to_generated(tmp_path):
  images, labels = constant_images()
  out = corruption_eval.evaluate_corruptions(
    make_config(tfds=True, data_dir=str(tmp_path), names=["contrast"]),
    jax.random.key(0),
    brightness_classifier,
    images,
    labels,
  )
  assert out["source"] == "generated"
  assert out["mean_corruption_accuracy"] == 1.0


def _mock_rows(config_name):
  import tensorflow_datasets as tfds

  rows = list(tfds.as_numpy(tfds.builder(config_name).as_dataset(split="test")))
  images = np.stack([r["image"] for r in rows]) / 255.0
  return images, np.array([r["label"] for r in rows])


def test_tfds_source_reads_the_same_rows(monkeypatch):
  import tensorflow_datasets as tfds

  assert corruption_eval.tfds_configs(["elastic_transform", "fog"], [3]) == [
    "cifar10_corrupted/elastic_3",
    "cifar10_corrupted/fog_3",
  ]
  monkeypatch.setattr(corruption_eval, "tfds_available", lambda *a: True)
  indices = np.array([1, 4, 6, 7])  # the rows of the evaluated subset
  cfg = make_config(tfds=True, names=["glass_blur"], severities=[2])
  with tfds.testing.mock_data(num_examples=8):
    x, y = _mock_rows("cifar10_corrupted/frosted_glass_blur_2")
    clean = np.zeros((4, 8, 8, 3), np.float32)  # not used by TFDS
    out = corruption_eval.evaluate_corruptions(
      cfg,
      jax.random.key(0),
      brightness_classifier,
      clean,
      y[indices],
      indices=indices,
    )
    with pytest.raises(ValueError, match="not those rows"):
      corruption_eval.evaluate_corruptions(
        cfg,
        jax.random.key(0),
        brightness_classifier,
        clean,
        y[indices] + 1,
        indices=indices,
      )
  predicted = np.argmax(brightness_classifier(x[indices]), axis=-1)
  assert out["source"] == "tfds"
  assert out["per_corruption"]["glass_blur"]["2"] == pytest.approx(
    np.mean(predicted == y[indices])
  )
  # The first rows would give another accuracy on this mock data.
  first = np.argmax(brightness_classifier(x[:4]), axis=-1) == y[:4]
  assert np.mean(first) != np.mean(predicted == y[indices])


def test_frost_is_marked_and_excluded_from_one_mean():
  images, labels = constant_images()
  out = corruption_eval.evaluate_corruptions(
    make_config(names=["brightness", "frost"], severities=[1, 5]),
    jax.random.key(0),
    brightness_classifier,
    images,
    labels,
  )
  brightness = out["per_corruption"]["brightness"]
  frost = out["per_corruption"]["frost"]
  assert brightness == {"1": 1.0, "5": 0.5}
  assert out["mean_without_frost"] == pytest.approx(0.75)
  assert out["mean_corruption_accuracy"] == pytest.approx(
    (1.5 + frost["1"] + frost["5"]) / 4
  )
  assert corruption_eval.corruption_columns(out) == {
    "corruption acc. (incl. generated frost)": out["mean_corruption_accuracy"],
    "corruption acc. (excl. frost)": pytest.approx(0.75),
  }
  table = corruption_eval.markdown_table(out)
  assert "| frost (generated texture) |" in table
  assert "| mean without frost (generated) |  |  | 0.7500 |" in table
  by_method = corruption_eval.methods_table([dict(method="m", corruptions=out)])
  assert "| frost (generated texture) |" in by_method


@pytest.mark.parametrize(
  "overrides, match",
  [
    (dict(names=["rain"]), "unknown corruption 'rain'"),
    (dict(names=[]), "names must be non-empty"),
    (dict(severities=[0, 2]), "severities"),
    (dict(batch_size=0), "batch_size"),
    (dict(num_images=-1), "num_images"),
  ],
)
def test_bad_config(overrides, match):
  images, labels = constant_images()
  with pytest.raises(ValueError, match=match):
    corruption_eval.evaluate_corruptions(
      make_config(**overrides),
      jax.random.key(0),
      brightness_classifier,
      images,
      labels,
    )


def test_bad_images_and_labels():
  images, labels = constant_images()
  with pytest.raises(ValueError, match="labels"):
    corruption_eval.evaluate_corruptions(
      make_config(),
      jax.random.key(0),
      brightness_classifier,
      images,
      labels[:3],
    )
  with pytest.raises(ValueError, match="images"):
    corruption_eval.evaluate_corruptions(
      make_config(),
      jax.random.key(0),
      brightness_classifier,
      images[..., 0],
      labels,
    )


def test_default_config_lists_the_15_corruptions():
  cfg = corruptions_config.get_corruptions_config()
  assert tuple(cfg.names) == variations.CORRUPTIONS
  assert cfg.severities == (1, 2, 3, 4, 5)
  corruption_eval.validate_corruptions_config(cfg)
