"""CelebA-HQ: binary attribute "Male", ResNet-18 (ImageNet stem) at 128 px.

The paper does not state the CelebA-HQ task; we take the attribute "Male",
which is invariant to expression and illumination (docs/method.md). TFDS cannot
download CelebA-HQ: build data128x128.tar (progressive_growing_of_gans) and
put it with CelebAMask-HQ-attribute-anno.txt in a folder, then

  python -m experiments.main --config=experiments/configs/celebahq.py \
    --config.data.manual_dir=/path/to/folder
"""

from __future__ import annotations

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the CelebA-HQ config."""
  config = default.get_config()
  config.name = "celebahq"
  config.model.name = "resnet18"
  config.model.stem = "imagenet"
  config.data.update(
    dict(
      source="tfds",
      name="celeb_a_hq/128",
      image_size=128,
      channels=3,
      train_split="",  # train[:90%]
      eval_split="",  # train[90%:]
      augment="imagenet",
      attribute="Male",
      num_classes=2,
    )
  )
  config.batch_size = 64
  config.sparsity = 0.9
  config.pretrain.epochs = 30.0
  config.search.epochs = 6.0
  config.finetune.epochs = 6.0
  config.pretrain.optimizer.learning_rate = 0.05
  config.checkpoint.every_steps = 1000
  config.evaluation.batch_size = 200
  config.certify.batch_size = 200
  config.corruptions.enabled = False
  return config
