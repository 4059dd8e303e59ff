"""DeepMind's Multi-dSprites (`multi_object_datasets`) as an input, read with TF2 tf.data.

Object-centric models (MONet, IODINE, Slot Attention) report FG-ARI on this data set, so
reading it puts the MVAE next to their published numbers. The files are GZIP-compressed
TFRecords of `tf.train.Example`s, one scene each, in three variants:

  variant               entities (background first)  image
  binarized             4                            1 channel (white sprites on black)
  colored_on_grayscale  6                            3 channels
  colored_on_colored    5                            3 channels

Features of a scene with E entities and C channels (the published format):

  image        bytes [64, 64, C]      one byte per value
  mask         bytes [64, 64, E, 1]   one byte per value, 255 where the entity is
  x, y, shape, visibility, orientation, scale   float [E]
  color        float [E, C]

Entity 0 is the background. An entity slot whose sprite is absent has visibility 0 and an
empty mask.

This module turns a scene into the batches `data.make_dataset` makes: `image` float32
[64, 64, 3] in [0, 1] (a binarized scene's one channel repeated three times, so the
3-channel model sees white sprites as white), `masks` float32 [E, 64, 64] in {0, 1},
background first, and `count`, the visible foreground entities. `write_tfrecord` writes
scenes in the same format; the tests use it on scenes from `data.make_dataset`.
"""

import numpy as np
import tensorflow as tf

from mvae_tf import config as config_lib

IMAGE_SIZE = 64
MAX_ENTITIES = {"binarized": 4, "colored_on_grayscale": 6, "colored_on_colored": 5}
VARIANTS = tuple(MAX_ENTITIES)
_FACTORS = ("x", "y", "shape", "visibility", "orientation", "scale")


def channels(variant):
  """The image channels of a variant: 1 for binarized, else 3."""
  return 1 if variant == "binarized" else 3


def check_variant(variant):
  if variant not in MAX_ENTITIES:
    raise config_lib.ConfigError(f"--variant must be one of {', '.join(VARIANTS)}; "
                                 f"received {variant!r}")


def feature_spec(variant):
  """The `tf.io.parse_single_example` spec of one scene of `variant`."""
  check_variant(variant)
  entities, c = MAX_ENTITIES[variant], channels(variant)
  spec = {
      "image": tf.io.FixedLenFeature([IMAGE_SIZE, IMAGE_SIZE, c], tf.string),
      "mask": tf.io.FixedLenFeature([IMAGE_SIZE, IMAGE_SIZE, entities, 1], tf.string),
      "color": tf.io.FixedLenFeature([entities, c], tf.float32),
  }
  spec.update({name: tf.io.FixedLenFeature([entities], tf.float32) for name in _FACTORS})
  return spec


def _bytes_to_uint8(values):
  """A tensor of one-byte strings [...] -> uint8 [...]."""
  return tf.squeeze(tf.io.decode_raw(values, tf.uint8), axis=-1)


def parse_scene(serialized, variant):
  """One serialized scene -> a dict like one example of `data.make_dataset`.

  Returns:
    image: float32 [64, 64, 3] in [0, 1];
    masks: float32 [E, 64, 64] in {0, 1}, background first;
    count: int32, the visible foreground entities;
    and the published factors (x, y, shape, visibility, orientation, scale [E], color
    [E, C]).
  """
  example = tf.io.parse_single_example(serialized, feature_spec(variant))
  image = tf.cast(_bytes_to_uint8(example.pop("image")), tf.float32) / 255.0  # [64, 64, C]
  if channels(variant) == 1:
    image = tf.tile(image, [1, 1, 3])  # [64, 64, 3]: white sprites stay white.
  mask = _bytes_to_uint8(example.pop("mask"))[..., 0]  # [64, 64, E]
  masks = tf.cast(tf.transpose(mask, [2, 0, 1]) > 127, tf.float32)  # [E, 64, 64]
  count = tf.cast(tf.reduce_sum(tf.cast(example["visibility"][1:] > 0.5, tf.int32)), tf.int32)
  return {"image": image, "masks": masks, "count": count, **example}


def make_dataset(path, variant, batch_size, num_batches=None, first_batch=0, repeat=False):
  """Batches of scenes from a Multi-dSprites TFRecord file, in file order.

  Args:
    path: a GZIP TFRecord file (or a list of files) of `variant`.
    variant: one of `VARIANTS`; it fixes the number of entities and channels.
    batch_size: scenes per batch; the last, smaller batch is dropped.
    num_batches: stop after this many batches (None: the whole file, or forever with
      `repeat`).
    first_batch: skip this many batches first (a resumed run continues here).
    repeat: cycle through the file forever (for training).

  Returns:
    A `tf.data.Dataset` of dicts of batched tensors (see `parse_scene`).
  """
  check_variant(variant)
  config_lib.check_int("batch_size", batch_size, 1)
  config_lib.check_int("first_batch", first_batch, 0)
  records = tf.data.TFRecordDataset(path, compression_type="GZIP")
  if repeat:
    records = records.repeat()
  dataset = records.map(lambda s: parse_scene(s, variant),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.batch(batch_size, drop_remainder=True).skip(first_batch)
  if num_batches is not None:
    dataset = dataset.take(num_batches)
  return dataset.prefetch(tf.data.AUTOTUNE)


def check_file(path, variant):
  """Reads the first scene of `path`; ConfigError naming the file if it is not `variant`."""
  check_variant(variant)
  if not tf.io.gfile.exists(path):
    raise config_lib.ConfigError(f"--data_path {path!r} does not exist")
  try:
    next(iter(make_dataset(path, variant, 1, num_batches=1)))
  except StopIteration:
    raise config_lib.ConfigError(f"--data_path {path!r} holds no scene") from None
  except (tf.errors.OpError, ValueError) as e:
    raise config_lib.ConfigError(
        f"--data_path {path!r} is not a GZIP TFRecord file of Multi-dSprites "
        f"{variant!r} scenes ({MAX_ENTITIES[variant]} entities, {channels(variant)} "
        f"channel(s)): {config_lib.error_summary(e, limit=200)}") from None


def _byte_list(array):
  """uint8 array -> a BytesList with one one-byte string per value, as published."""
  return tf.train.Feature(bytes_list=tf.train.BytesList(
      value=[bytes([v]) for v in np.asarray(array, np.uint8).ravel()]))


def _float_list(array):
  return tf.train.Feature(float_list=tf.train.FloatList(
      value=np.asarray(array, np.float32).ravel()))


def serialize_scene(image, masks, factors):
  """One scene as a serialized `tf.train.Example` in the published format.

  Args:
    image: uint8 [64, 64, C].
    masks: uint8 [E, 64, 64], 255 where each entity is, background first.
    factors: dict of x, y, shape, visibility, orientation, scale [E] and color [E, C].
  """
  mask = np.transpose(np.asarray(masks, np.uint8), [1, 2, 0])[..., None]  # [64, 64, E, 1]
  feature = {"image": _byte_list(image), "mask": _byte_list(mask)}
  feature.update({name: _float_list(factors[name]) for name in (*_FACTORS, "color")})
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def scenes_from_generator(batch, variant):
  """Our generator's batch (numpy, from `data.make_dataset`) as Multi-dSprites scenes.

  The generator's sprite slots become entities 1..S (entity 0 the background); a pixel
  shared by overlapping sprites belongs to each of them. A binarized scene keeps the
  image's brightest channel, thresholded to white sprites on black. Its S + 1 masks must
  fit the variant's entities.

  Yields (image uint8 [64, 64, C], masks uint8 [E, 64, 64], factors).
  """
  entities, c = MAX_ENTITIES[variant], channels(variant)
  slots = batch["masks"].shape[1]
  if slots > entities:
    raise ValueError(f"{slots - 1} sprite slots do not fit the {entities - 1} foreground "
                     f"entities of {variant!r}")
  for i in range(len(batch["image"])):
    masks = np.zeros([entities, IMAGE_SIZE, IMAGE_SIZE], np.uint8)
    masks[:slots] = np.where(batch["masks"][i] > 0, 255, 0)
    image = batch["image"][i]
    if c == 1:
      image = (image.max(axis=-1, keepdims=True) > 0) * 1.0
    visibility = np.zeros([entities], np.float32)
    visibility[0] = 1.0
    visibility[1:slots] = batch["present"][i]
    factors = {name: np.zeros([entities], np.float32) for name in _FACTORS}
    factors["visibility"] = visibility
    factors["y"][1:slots], factors["x"][1:slots] = batch["position"][i].T
    factors["shape"][1:slots] = batch["shape"][i] + 1  # 0 is the background's
    factors["orientation"][1:slots] = batch["orientation"][i]
    factors["scale"][1:slots] = batch["scale"][i]
    colour = batch["colour"][i]  # [S, 3]
    factors["color"] = np.zeros([entities, c], np.float32)
    factors["color"][1:slots] = colour.max(axis=-1, keepdims=True) if c == 1 else colour
    yield np.round(image * 255).astype(np.uint8), masks, factors


def write_tfrecord(path, scenes):
  """Writes (image, masks, factors) scenes as a GZIP TFRecord file, atomically."""
  tmp = f"{path}.tmp-{np.random.randint(1 << 30)}"
  try:
    with tf.io.TFRecordWriter(tmp, options="GZIP") as writer:
      for image, masks, factors in scenes:
        writer.write(serialize_scene(image, masks, factors))
    tf.io.gfile.rename(tmp, path, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
