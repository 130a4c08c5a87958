"""Tests of experiments.input_pipeline (fast; no network)."""

import io

import data_files
import numpy as np
import pytest
from PIL import Image
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from experiments import input_pipeline as ip
from experiments.input_pipeline import numpy_augment as aug
from experiments.input_pipeline import numpy_files, numpy_source
from experiments.input_pipeline.spec import resolve_spec


def _cfg(**kw):
  cfg = ip.get_default_data_config()
  cfg.update(kw)
  return cfg


def _index_images(n, size=4):
  """uint8 RGB images whose pixels encode their index (exactly recoverable)."""
  x = np.zeros((n, size, size, 3), np.uint8)
  x[..., 0] = (np.arange(n) % 256)[:, None, None]
  x[..., 1] = (np.arange(n) // 256)[:, None, None]
  x[..., 2] = np.arange(size)[None, :, None] * 10  # rows differ (for crops)
  return x


def _index_of(images01):
  px = np.rint(images01[:, 0, 0] * 255).astype(int)
  return px[:, 0] + 256 * px[:, 1]


def _write_pixels(path, n_train=40, n_test=13, classes=4):
  np.savez(
    path,
    x_train=_index_images(n_train),
    y_train=np.arange(n_train) % classes,
    x_test=_index_images(n_test),
    y_test=np.arange(n_test) % classes,
  )
  return str(path)


def _jpeg_arrays(images):
  blobs = []
  for im in images:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=90)
    blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
  return np.concatenate(blobs), offsets.astype(np.int64)


def _write_jpeg(path, rng, n_train=12, n_test=5, size=8, **overrides):
  arrays = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    arrays[f"{split}_jpeg"], arrays[f"{split}_offsets"] = _jpeg_arrays(images)
    arrays[f"y_{split}"] = np.arange(n) % 3
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return str(path)


# ----------------------------------------------------------------- config ---


@pytest.mark.parametrize(
  "field,value,match",
  [
    ("source", "hdf5", "config.data.source"),
    ("augment", "mixup", "config.data.augment"),
    ("image_size", 0, "config.data.image_size"),
    ("channels", 2, "config.data.channels"),
    ("validation_fraction", 1.0, "validation_fraction"),
    ("validation_fraction", -0.1, "validation_fraction"),
  ],
)
def test_bad_config_values(field, value, match):
  with pytest.raises(ValueError, match=match):
    ip.validate_data_config(_cfg(**{field: value}))
  with pytest.raises(ValueError, match=match):
    ip.train_batches(_cfg(**{field: value}), batch_size=4, seed=0)


def test_bad_source_specific_config():
  with pytest.raises(ValueError, match="config.data.path is empty"):
    ip.validate_data_config(_cfg(source="npz"))
  with pytest.raises(ValueError, match="config.data.name is empty"):
    ip.validate_data_config(_cfg(source="tfds"))
  with pytest.raises(TypeError, match="config.data.image_size"):
    ip.validate_data_config({**_cfg().to_dict(), "image_size": 16.0})


def test_bad_batching():
  cfg = _cfg()
  with pytest.raises(ValueError, match="not divisible by process_count=3"):
    ip.train_batches(cfg, batch_size=8, seed=0, process_count=3)
  with pytest.raises(ValueError, match="process_index=2"):
    ip.eval_batches(cfg, batch_size=8, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="larger than the training split"):
    ip.train_batches(cfg, batch_size=2048, seed=0)
  with pytest.raises(ValueError, match="start_step"):
    ip.train_batches(cfg, batch_size=8, seed=0, start_step=-1)
  with pytest.raises(ValueError, match="Unknown split='validation'"):
    ip.eval_batches(cfg, split="validation", batch_size=8)


# ------------------------------------------------------- sklearn digits ---


def test_digits_match_sklearn_exactly():
  cfg = _cfg(image_size=8, channels=1)
  info = ip.get_info(cfg)
  assert info.num_classes == 10
  assert info.num_examples == {"train": 1437, "eval": 360}
  digits = sk_datasets.load_digits()
  _, test_idx = model_selection.train_test_split(
    np.arange(1797), test_size=0.2, random_state=0, stratify=digits.target
  )
  test_idx = np.sort(test_idx)
  batches = list(ip.eval_batches(cfg, batch_size=360, normalize=False))
  assert len(batches) == 1 and batches[0]["mask"].all()
  expected = np.rint(digits.images[test_idx] * 255 / 16) / 255
  np.testing.assert_allclose(batches[0]["image"][..., 0], expected, atol=1e-6)
  np.testing.assert_array_equal(batches[0]["label"], digits.target[test_idx])
  # Stratified: each class has its proportional share in the test split.
  counts = np.bincount(batches[0]["label"], minlength=10)
  assert counts.min() >= 35 and counts.max() <= 37


def test_digits_resized_rgb_and_normalized():
  cfg = _cfg(image_size=16, channels=3)
  info = ip.get_info(cfg)
  assert info.image_shape == (16, 16, 3) and len(info.mean) == 3
  raw = next(ip.eval_batches(cfg, batch_size=64, normalize=False))
  assert raw["image"].shape == (64, 16, 16, 3)
  assert raw["image"].dtype == np.float32 and raw["label"].dtype == np.int32
  np.testing.assert_array_equal(raw["image"][..., 0], raw["image"][..., 2])
  assert 0.0 <= raw["image"].min() and raw["image"].max() <= 1.0
  norm = next(ip.eval_batches(cfg, batch_size=64))
  np.testing.assert_allclose(
    norm["image"],
    (raw["image"] - np.array(info.mean)) / np.array(info.std),
    rtol=1e-5,
    atol=1e-5,
  )
  # Training statistics: normalized train pixels have mean 0 and std 1.
  train = ip.eval_batches(cfg, split="train", batch_size=1437)
  pixels = next(train)["image"].reshape(-1, 3).astype(np.float64)
  np.testing.assert_allclose(pixels.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(pixels.std(0), 1.0, atol=1e-4)


# ------------------------------------------------------------------- npz ---


def test_npz_pixels_and_validation_carve(tmp_path):
  path = _write_pixels(tmp_path / "px.npz", n_train=40)
  cfg = _cfg(source="npz", path=path, image_size=4, channels=3)
  assert ip.get_info(cfg).num_examples == {"train": 40, "eval": 13}
  carved = _cfg(
    source="npz", path=path, image_size=4, channels=3, validation_fraction=0.25
  )
  info = ip.get_info(carved)
  assert info.num_examples == {"train": 30, "eval": 13, "validation": 10}
  seen = {}
  for split in ("train", "validation"):
    (batch,) = ip.eval_batches(
      carved, split=split, batch_size=40, normalize=False
    )
    seen[split] = _index_of(batch["image"][batch["mask"]])
    # Images keep their labels through the carve.
    np.testing.assert_array_equal(
      batch["label"][batch["mask"]], seen[split] % 4
    )
  assert sorted(np.concatenate(list(seen.values()))) == list(range(40))
  # Stratified: 10 per class in train, 10 in total -> 2 or 3 per class.
  assert np.bincount(seen["validation"] % 4).tolist() in (
    [3, 3, 2, 2],
    [3, 2, 3, 2],
    [3, 2, 2, 3],
    [2, 3, 3, 2],
    [2, 3, 2, 3],
    [2, 2, 3, 3],
  )
  expected = model_selection.train_test_split(
    np.arange(40), test_size=0.25, random_state=0, stratify=np.arange(40) % 4
  )[1]
  np.testing.assert_array_equal(seen["validation"], np.sort(expected))


def test_npz_stratified_train_subset(tmp_path):
  path = _write_pixels(tmp_path / "px.npz", n_train=40)
  cfg = _cfg(source="npz", path=path, image_size=4, channels=3)
  cfg.train_examples = 12
  assert ip.get_info(cfg).num_examples == {"train": 12, "eval": 13}
  (batch,) = ip.eval_batches(cfg, split="train", batch_size=40, normalize=False)
  chosen = _index_of(batch["image"][batch["mask"]])
  assert np.bincount(chosen % 4).tolist() == [3, 3, 3, 3]  # stratified
  expected = model_selection.train_test_split(
    np.arange(40), train_size=12, random_state=0, stratify=np.arange(40) % 4
  )[0]
  np.testing.assert_array_equal(chosen, np.sort(expected))
  for bad, match in ((41, "must be in \\[1, 40\\]"), (3, "number of classes")):
    cfg.train_examples = bad
    with pytest.raises(ValueError, match=match):
      ip.get_info(cfg)
  tfds_cfg = _cfg(source="tfds", name="cifar10", train_examples=100)
  with pytest.raises(ValueError, match="in-memory source"):
    ip.get_info(tfds_cfg)


def test_npz_jpeg_matches_pillow_decode(tmp_path):
  rng = np.random.default_rng(0)
  path = _write_jpeg(tmp_path / "j.npz", rng)
  cfg = _cfg(source="npz", path=path, image_size=8, channels=3)
  (batch,) = ip.eval_batches(cfg, batch_size=8, normalize=False)
  data = np.load(path)
  jpeg, offsets = data["test_jpeg"], data["test_offsets"]
  for i in range(5):
    blob = jpeg[offsets[i] : offsets[i + 1]].tobytes()
    ref = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")) / 255
    np.testing.assert_allclose(batch["image"][i], ref, atol=1e-6)
  np.testing.assert_array_equal(batch["mask"], [True] * 5 + [False] * 3)
  np.testing.assert_array_equal(batch["label"][:5], np.arange(5) % 3)
  gray = _cfg(source="npz", path=path, image_size=4, channels=1)
  (small,) = ip.eval_batches(gray, batch_size=8, normalize=False)
  blob = jpeg[offsets[0] : offsets[1]].tobytes()
  ref = Image.open(io.BytesIO(blob)).convert("L")
  ref = np.asarray(ref.resize((4, 4), Image.Resampling.BILINEAR)) / 255
  np.testing.assert_allclose(small["image"][0, ..., 0], ref, atol=1e-6)


def test_npz_missing_file(tmp_path):
  cfg = _cfg(source="npz", path=str(tmp_path / "nope.npz"))
  with pytest.raises(FileNotFoundError, match="no such npz file"):
    ip.train_batches(cfg, batch_size=4, seed=0)


def test_npz_that_is_not_an_archive(tmp_path):
  for name, content in (
    ("text.npz", b"label,pixels\n3,0 0 0\n"),
    ("e.npz", b""),
  ):
    path = tmp_path / name
    path.write_bytes(content)
    cfg = _cfg(source="npz", path=str(path))
    with pytest.raises(ValueError, match="is not a valid .npz archive"):
      ip.get_info(cfg)


@pytest.mark.parametrize(
  "overrides,match",
  [
    ({"y_train": None}, r"needs keys \['y_train'\]"),
    ({"test_offsets": None}, r"needs keys \['test_offsets'\]"),
    ({"train_offsets": np.array([0, 9, 5, 20])}, "non-monotonic"),
    ({"y_test": np.array([0, 1, 2, 7, 1])}, "Labels out of range"),
    ({"y_train": np.arange(11) % 3}, "has 11 labels but the split has 12"),
    (
      {"train_jpeg": np.full(100_000, 7, np.uint8)},
      "not a decodable JPEG",
    ),
  ],
)
def test_npz_malformed(tmp_path, overrides, match):
  rng = np.random.default_rng(1)
  path = _write_jpeg(tmp_path / "bad.npz", rng, **overrides)
  cfg = _cfg(source="npz", path=path, image_size=8, channels=3, num_classes=3)
  with pytest.raises(ValueError, match=match):
    ip.get_info(cfg)


def test_npz_offsets_past_end_and_pixel_dtype(tmp_path):
  rng = np.random.default_rng(2)
  path = _write_jpeg(
    tmp_path / "o.npz", rng, test_offsets=np.array([0, 10, 10**9])
  )
  with pytest.raises(ValueError, match="out-of-range offsets"):
    ip.get_info(_cfg(source="npz", path=path, eval_split="test"))
  bad = tmp_path / "px.npz"
  np.savez(
    bad,
    x_train=np.zeros((3, 4, 4), np.int64),
    y_train=np.zeros(3, int),
    x_test=np.zeros((3, 4, 4), np.uint8),
    y_test=np.zeros(3, int),
  )
  with pytest.raises(ValueError, match="has dtype int64"):
    ip.get_info(_cfg(source="npz", path=str(bad), image_size=4))


# -------------------------------------------------------- eval pad + mask ---


@pytest.mark.parametrize("n,batch", [(13, 4), (13, 6), (1, 2), (40, 8)])
def test_eval_counts_each_example_once(tmp_path, n, batch):
  path = _write_pixels(tmp_path / "e.npz", n_test=n)
  cfg = _cfg(source="npz", path=path, image_size=4, channels=3)
  (single,) = [list(ip.eval_batches(cfg, batch_size=batch, normalize=False))]
  ids = np.concatenate([_index_of(b["image"][b["mask"]]) for b in single])
  assert sorted(ids) == list(range(n))
  assert len(single) == -(-n // batch)
  per_process = [
    list(
      ip.eval_batches(
        cfg,
        batch_size=batch,
        process_index=p,
        process_count=2,
        normalize=False,
      )
    )
    for p in range(2)
  ]
  assert len(per_process[0]) == len(per_process[1])  # Same step count.
  ids = [
    np.concatenate([_index_of(b["image"][b["mask"]]) for b in batches])
    for batches in per_process
  ]
  assert not set(ids[0]) & set(ids[1])
  assert sorted(np.concatenate(ids)) == list(range(n))
  for b in per_process[0]:
    assert b["image"].shape == (batch // 2, 4, 4, 3)
    assert b["label"][~b["mask"]].tolist() == [0] * int((~b["mask"]).sum())
  limited = list(ip.eval_batches(cfg, batch_size=batch, max_examples=3))
  assert sum(int(b["mask"].sum()) for b in limited) == min(3, n)


# ------------------------------------------------------------- training ---


def test_train_order_augmentation_and_resume(tmp_path):
  path = _write_pixels(tmp_path / "t.npz", n_train=40)
  cfg = _cfg(source="npz", path=path, image_size=4, channels=3, augment="none")
  it = ip.train_batches(cfg, batch_size=8, seed=3, normalize=False)
  run = [next(it) for _ in range(12)]  # 5 steps per epoch: 2.4 epochs.
  for epoch in range(2):
    ids = np.concatenate(
      [_index_of(b["image"]) for b in run[5 * epoch : 5 * epoch + 5]]
    )
    np.testing.assert_array_equal(
      ids, numpy_source.epoch_permutation(3, epoch, 40)
    )
  np.testing.assert_array_equal(run[0]["label"], _index_of(run[0]["image"]) % 4)
  resumed = ip.train_batches(
    cfg, batch_size=8, seed=3, start_step=7, normalize=False
  )
  for step in range(7, 12):
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], run[step]["image"])
    np.testing.assert_array_equal(got["label"], run[step]["label"])
  other = next(ip.train_batches(cfg, batch_size=8, seed=4, normalize=False))
  assert not np.array_equal(
    other["label"], run[0]["label"]
  ) or not np.array_equal(other["image"], run[0]["image"])


@pytest.mark.parametrize("kind", ["cifar", "imagenet"])
def test_train_augmentation_is_the_documented_composition(tmp_path, kind):
  path = _write_pixels(tmp_path / "a.npz", n_train=40)
  cfg = _cfg(source="npz", path=path, image_size=4, channels=3, augment=kind)
  images = _index_images(40)
  it = ip.train_batches(cfg, batch_size=8, seed=5, normalize=False)
  for step in range(6):
    got = next(it)
    epoch, within = divmod(step, 5)
    idx = numpy_source.epoch_permutation(5, epoch, 40)[
      within * 8 : within * 8 + 8
    ]
    expected = aug.augment_batch(
      images[idx], np.random.default_rng([5, 1, step]), kind, 8, 0
    )
    np.testing.assert_allclose(got["image"], expected / 255, atol=1e-7)
  # Two processes' rows together equal the single-process batch.
  halves = [
    next(
      ip.train_batches(
        cfg,
        batch_size=8,
        seed=5,
        start_step=4,
        process_index=p,
        process_count=2,
        normalize=False,
      )
    )
    for p in range(2)
  ]
  full = next(
    ip.train_batches(cfg, batch_size=8, seed=5, start_step=4, normalize=False)
  )
  np.testing.assert_array_equal(
    np.concatenate([h["image"] for h in halves]), full["image"]
  )


def test_crop_flip_hand_computed():
  x = np.array([[1, 2], [3, 4]], np.uint8).reshape(1, 2, 2, 1)
  x = np.concatenate([x, x])
  params = aug.CropFlipParams(
    np.array([0, 2]), np.array([0, 1]), np.array([False, True])
  )
  y = aug.apply_crop_flip(x, params, pad=1)[..., 0]
  np.testing.assert_array_equal(y[0], [[0, 0], [0, 1]])
  np.testing.assert_array_equal(y[1], [[4, 3], [0, 0]])
  # Parameters are drawn in the documented order from the given generator.
  p = aug.sample_crop_flip(np.random.default_rng(7), 5)
  ref = np.random.default_rng(7)
  np.testing.assert_array_equal(p.top, ref.integers(0, 9, size=5))
  np.testing.assert_array_equal(p.left, ref.integers(0, 9, size=5))
  np.testing.assert_array_equal(p.flip, ref.random(5) < 0.5)


def test_resized_crop_boxes_and_resize():
  p = aug.sample_resized_crop(np.random.default_rng(0), 4000, 32, 24)
  assert ((p.top >= 0) & (p.top + p.height <= 32)).all()
  assert ((p.left >= 0) & (p.left + p.width <= 24)).all()
  area = p.height * p.width / (32 * 24)
  ratio = p.width / p.height
  assert area.min() >= 0.06 and area.max() <= 1.0
  assert ratio.min() >= 0.7 and ratio.max() <= 1.45
  assert 0.45 < p.flip.mean() < 0.55
  x = np.random.default_rng(1).integers(0, 256, (2, 6, 6, 3), np.uint8)
  params = aug.ResizedCropParams(
    np.array([0, 1]),
    np.array([0, 2]),
    np.array([6, 3]),
    np.array([6, 3]),
    np.array([True, False]),
  )
  y = aug.apply_resized_crop(x, params)
  np.testing.assert_array_equal(y[0], x[0, :, ::-1])
  ref = Image.fromarray(x[1]).resize(
    (6, 6), Image.Resampling.BILINEAR, box=(2, 1, 5, 4)
  )
  np.testing.assert_array_equal(y[1], np.asarray(ref))


# ----------------------------------------------------------------- TFDS ---


@pytest.fixture(scope="module")
def tfds_lib():
  return pytest.importorskip("tensorflow_datasets")


def _tfds_cfg(name, **kw):
  return _cfg(source="tfds", name=name, channels=3, **kw)


@pytest.mark.parametrize(
  "name,size,augment,num_classes",
  [
    ("cifar10", 32, "cifar", 10),
    ("oxford_flowers102", 24, "imagenet", 102),
    ("celeb_a", 16, "cifar", 2),
  ],
)
def test_tfds_mock_train_and_eval(tfds_lib, name, size, augment, num_classes):
  cfg = _tfds_cfg(name, image_size=size, augment=augment)
  with tfds_lib.testing.mock_data(
    num_examples=10, policy=tfds_lib.testing.MockPolicy.USE_CODE
  ):
    info = ip.get_info(cfg)
    assert info.num_classes == num_classes
    assert info.num_examples == {"train": 10, "eval": 10}
    run = ip.train_batches(cfg, batch_size=4, seed=1, normalize=False)
    first = [next(run) for _ in range(3)]
    for b in first:
      assert b["image"].shape == (4, size, size, 3)
      assert b["image"].dtype == np.float32 and b["label"].dtype == np.int32
      assert 0 <= b["image"].min() and b["image"].max() <= 1
      assert ((0 <= b["label"]) & (b["label"] < num_classes)).all()
    again = next(ip.train_batches(cfg, batch_size=4, seed=1, normalize=False))
    np.testing.assert_array_equal(again["image"], first[0]["image"])
    resumed = next(
      ip.train_batches(cfg, batch_size=4, seed=1, start_step=2, normalize=False)
    )
    np.testing.assert_array_equal(resumed["image"], first[2]["image"])
    np.testing.assert_array_equal(resumed["label"], first[2]["label"])
    evals = list(ip.eval_batches(cfg, batch_size=4))
    assert [int(b["mask"].sum()) for b in evals] == [4, 4, 2]
    assert evals[-1]["image"].shape == (4, size, size, 3)


def test_tfds_mock_corrupted_is_eval_only(tfds_lib):
  cfg = _tfds_cfg("cifar10_corrupted/gaussian_noise_3", image_size=32)
  with tfds_lib.testing.mock_data(
    num_examples=6, policy=tfds_lib.testing.MockPolicy.USE_CODE
  ):
    info = ip.get_info(cfg)
    assert info.num_examples == {"train": 0, "eval": 6}
    (batch,) = ip.eval_batches(cfg, batch_size=8, normalize=False)
    assert batch["image"].shape == (8, 32, 32, 3)
    assert batch["mask"].tolist() == [True] * 6 + [False] * 2
    assert ((batch["label"] >= 0) & (batch["label"] < 10)).all()
    with pytest.raises(ValueError, match="evaluation-only"):
      ip.train_batches(cfg, batch_size=4, seed=0)


def test_tfds_celeb_a_attribute_label(tfds_lib):
  with tfds_lib.testing.mock_data(
    num_examples=4, policy=tfds_lib.testing.MockPolicy.USE_CODE
  ):
    with pytest.raises(ValueError, match="not a CelebA attribute"):
      ip.get_info(_tfds_cfg("celeb_a", attribute="Purple_Hair"))
    ds = tfds_lib.load("celeb_a", split="test")
    expected = [
      int(ex["attributes"]["Smiling"]) for ex in ds.as_numpy_iterator()
    ]
    cfg = _tfds_cfg("celeb_a", attribute="Smiling", image_size=8)
    (batch,) = ip.eval_batches(cfg, batch_size=4)
    assert batch["label"].tolist() == expected


def test_tfds_errors(tfds_lib, tmp_path):
  with pytest.raises(ValueError, match="Unknown TFDS dataset"):
    ip.get_info(_tfds_cfg("no_such_dataset_xyz"))
  cfg = _tfds_cfg("cifar10", data_dir=str(tmp_path), download=False)
  with pytest.raises(FileNotFoundError, match="set config.data.data_dir"):
    ip.train_batches(cfg, batch_size=4, seed=0)
  hq = _tfds_cfg(
    "celeb_a_hq/16", data_dir=str(tmp_path), manual_dir=str(tmp_path)
  )
  with pytest.raises(FileNotFoundError, match="manual_dir"):
    ip.get_info(hq)
  with tfds_lib.testing.mock_data(
    num_examples=2, policy=tfds_lib.testing.MockPolicy.USE_CODE
  ):
    with pytest.raises(ValueError, match="image_key='img'"):
      ip.get_info(_tfds_cfg("cifar10", image_key="img"))
    with pytest.raises(ValueError, match="num_classes=5"):
      ip.get_info(_tfds_cfg("cifar10", num_classes=5))


# -------------------------------------------------------- real CIFAR-10 ---


@pytest.fixture(scope="module")
def real_cifar():
  path = data_files.cifar10_npz()
  cfg = _cfg(source="npz", path=path, image_size=32, channels=3)
  return cfg, ip.get_info(cfg)


def test_real_cifar10_counts_and_mean(real_cifar):
  cfg, info = real_cifar
  assert info.num_classes == 10
  assert info.num_examples == {"train": 50000, "eval": 10000}
  np.testing.assert_allclose(
    np.array(info.mean) * 255, (125.3, 122.9, 113.9), atol=1.0
  )
  labels = [
    b["label"][b["mask"]] for b in ip.eval_batches(cfg, batch_size=2000)
  ]
  assert np.bincount(np.concatenate(labels)).tolist() == [1000] * 10
  train = numpy_files.load_arrays(resolve_spec(cfg)).splits["train"]
  assert np.bincount(train.labels).tolist() == [5000] * 10
  assert train.images.shape == (50000, 32, 32, 3)


def test_channel_stats_are_the_exact_histogram_moments():
  """Counted in chunks, the statistics equal one whole-channel histogram's
  bit for bit, and the exact moments of the pixel values."""
  rng = np.random.default_rng(0)
  # 70,000 pixels: one full chunk of 65,536 and a partial one; a strided view.
  images = rng.integers(0, 256, (70, 40, 50, 3), np.uint8)[:, :, ::2]
  mean, std = numpy_files.channel_stats(images)
  values = np.arange(256) / 255.0
  for c in range(3):
    p = np.bincount(images[..., c].ravel(), minlength=256) / images[..., c].size
    assert mean[c] == float(p @ values)
    assert std[c] == float(np.sqrt(p @ (values - mean[c]) ** 2))
    x = images[..., c].astype(np.float64) / 255.0
    np.testing.assert_allclose((mean[c], std[c]), (x.mean(), x.std()), 1e-12)
