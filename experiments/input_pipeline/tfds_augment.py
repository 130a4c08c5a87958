"""tf.data preprocessing of TFDS images: decode, resize/crop, augment.

Evaluation: shorter side resized to image_size (antialiased bilinear), then
a central square crop. Training: "none" as evaluation; "cifar" as evaluation
then zero-pad 4 and a random image_size crop; "imagenet" a random crop with
area fraction in [0.08, 1] and aspect ratio in [3/4, 4/3]
(tf.image.stateless_sample_distorted_bounding_box, 10 attempts, else the
whole image) resized to image_size x image_size; both then a random
horizontal flip. All random ops are stateless, seeded per example.
"""

from __future__ import annotations

import tensorflow as tf

from experiments.input_pipeline.spec import DataSpec


def decode(image, encoded: bool, channels: int) -> tf.Tensor:
  if encoded:
    image = tf.io.decode_image(image, channels=3, expand_animations=False)
  elif image.shape[-1] == 1:
    image = tf.image.grayscale_to_rgb(image)
  if channels == 1:
    image = tf.image.rgb_to_grayscale(image)
  return image


def resize_center(image, size: int) -> tf.Tensor:
  shape = tf.shape(image)
  side = tf.minimum(shape[0], shape[1])
  top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
  crop = image[top : top + side, left : left + side]
  return tf.image.resize(crop, (size, size), antialias=True)


def eval_image(image, encoded: bool, spec: DataSpec) -> tf.Tensor:
  """Decoded, resized and centre-cropped image, float32 in [0, 255]."""
  return resize_center(decode(image, encoded, spec.channels), spec.image_size)


def augment(image, seed, spec: DataSpec) -> tf.Tensor:
  size, c = spec.image_size, spec.channels
  seeds = tf.random.experimental.stateless_split(seed, 2)
  if spec.augment == "imagenet":
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      tf.zeros((1, 0, 4)),
      seed=seeds[0],
      min_object_covered=0.0,
      aspect_ratio_range=(3 / 4, 4 / 3),
      area_range=(0.08, 1.0),
      max_attempts=10,
      use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, extent)
    image = tf.image.resize(crop, (size, size), antialias=True)
  else:
    image = resize_center(image, size)
    if spec.augment == "cifar":
      image = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
      image = tf.image.stateless_random_crop(image, (size, size, c), seeds[0])
  if spec.augment != "none":
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
  return image


def finish(image, mean, std, normalize: bool) -> tf.Tensor:
  image = tf.cast(image, tf.float32) / 255.0
  if normalize:
    image = (image - tf.constant(mean, tf.float32)) / tf.constant(
      std, tf.float32
    )
  return image
