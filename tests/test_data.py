"""Multi-object dSprites: shapes, determinism, counts, masks and the blending rule."""

import math

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import data

S, B = 3, 5  # Tiny distinct sizes: a wrong axis shows up as a wrong number.


def _batches(dataset, n):
  return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(n)]


def test_shapes_dtypes_and_ranges():
  batch = _batches(data.make_dataset(S, B, seed=7), 1)[0]
  assert batch["image"].shape == (B, 64, 64, 3) and batch["image"].dtype == np.float32
  assert batch["count"].shape == (B,) and batch["count"].dtype == np.int32
  assert batch["masks"].shape == (B, S + 1, 64, 64) and batch["masks"].dtype == np.float32
  assert batch["position"].shape == (B, S, 2)
  assert batch["colour"].shape == (B, S, 3)
  for key in ("present", "shape", "scale", "orientation"):
    assert batch[key].shape == (B, S), key
  assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
  assert set(np.unique(batch["shape"])) <= {0, 1, 2}
  assert np.all((batch["scale"] >= 0.5) & (batch["scale"] <= 1.0))
  assert np.all((batch["orientation"] >= 0) & (batch["orientation"] < 2 * math.pi))
  assert np.all(batch["colour"].max(axis=-1) >= data.MIN_BRIGHTNESS - 1e-6)


def test_same_seed_same_batches_bit_for_bit():
  first = _batches(data.make_dataset(S, B, seed=3), 3)
  second = _batches(data.make_dataset(S, B, seed=3), 3)
  for a, b in zip(first, second):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  other = _batches(data.make_dataset(S, B, seed=4), 1)[0]
  assert not np.array_equal(first[0]["image"], other["image"])


def test_first_batch_continues_the_stream():
  full = _batches(data.make_dataset(S, B, seed=3), 3)
  resumed = _batches(data.make_dataset(S, B, seed=3, first_batch=2), 1)[0]
  np.testing.assert_array_equal(full[2]["image"], resumed["image"])


def test_num_batches_ends_the_stream():
  assert len(_batches(data.make_dataset(S, B, seed=0, num_batches=4), 10)) == 4


def test_counts_equal_non_empty_sprite_masks_and_masks_partition_pixels():
  batch = _batches(data.make_dataset(8, 16, seed=11), 1)[0]
  non_empty = (batch["masks"][:, 1:].sum(axis=(2, 3)) > 0).sum(axis=1)
  np.testing.assert_array_equal(batch["count"], non_empty)
  np.testing.assert_array_equal(batch["count"], batch["present"].sum(axis=1))
  np.testing.assert_allclose(batch["masks"].sum(axis=1), 1.0, atol=1e-6)
  # Absent slots have empty masks.
  absent = batch["present"] == 0
  assert np.all(batch["masks"][:, 1:].sum(axis=(2, 3))[absent] == 0)


def test_presence_prob_extremes():
  empty = _batches(data.make_dataset(S, B, seed=0, presence_prob=0.0), 1)[0]
  assert np.all(empty["count"] == 0) and np.all(empty["image"] == 0)
  full = _batches(data.make_dataset(S, B, seed=0, presence_prob=1.0), 1)[0]
  assert np.all(full["count"] == S)


def test_overlapping_colours_sum_and_clip_and_masks_split_equally():
  # Two large axis-aligned squares at the same centre: the inner pixels are covered twice.
  present = tf.constant([[1.0, 1.0]])
  shape = tf.constant([[0, 0]])
  scale = tf.constant([[1.0, 1.0]])
  orientation = tf.zeros([1, 2])
  position = tf.constant([[[0.5, 0.5], [0.5, 0.5]]])
  colour = tf.constant([[[0.6, 0.1, 0.0], [0.7, 0.2, 0.0]]])
  image, masks = data.render_scenes(present, shape, scale, orientation, position, colour)
  np.testing.assert_allclose(image[0, 32, 32].numpy(), [1.0, 0.3, 0.0], atol=1e-6)
  np.testing.assert_allclose(masks[0, :, 32, 32].numpy(), [0.0, 0.5, 0.5])
  np.testing.assert_allclose(image[0, 0, 0].numpy(), [0.0, 0.0, 0.0])
  np.testing.assert_allclose(masks[0, :, 0, 0].numpy(), [1.0, 0.0, 0.0])


def test_a_lone_square_covers_its_expected_area():
  present, shape, scale = tf.constant([[1.0]]), tf.constant([[0]]), tf.constant([[1.0]])
  _, masks = data.render_scenes(present, shape, scale, tf.zeros([1, 1]),
                                tf.constant([[[0.5, 0.5]]]), tf.ones([1, 1, 3]))
  side = 2 * 0.8 * data.SPRITE_RADIUS * 64  # 0.8 of the radius is the square's half-side.
  area = float(masks[0, 1].numpy().sum())
  assert abs(area - side**2) < 4 * side, (area, side**2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_sprites=0, batch_size=2, seed=0), "num_sprites"),
    (dict(num_sprites=2, batch_size=0, seed=0), "batch_size"),
    (dict(num_sprites=2, batch_size=2, seed=-1), "seed"),
    (dict(num_sprites=2, batch_size=2, seed=0, presence_prob=1.5), "presence_prob"),
    (dict(num_sprites=2.5, batch_size=2, seed=0), "num_sprites"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
  with pytest.raises(ValueError, match=message):
    data.make_dataset(**kwargs)


def _full_image_cover(shape, scale, orientation, position):
  """The coverage [B, S, 64, 64] evaluated at every pixel: what the windows must equal."""
  centres = (tf.range(64, dtype=tf.float32) + 0.5) / 64
  dy = centres[None, None, :, None] - position[:, :, 0, None, None]  # [B, S, 64, 1]
  dx = centres[None, None, None, :] - position[:, :, 1, None, None]  # [B, S, 1, 64]
  cos = tf.cos(orientation)[:, :, None, None]
  sin = tf.sin(orientation)[:, :, None, None]
  radius = (data.SPRITE_RADIUS * scale)[:, :, None, None]
  u = (cos * dx + sin * dy) / radius
  v = (-sin * dx + cos * dy) / radius
  return tf.cast(data._shape_inside(shape[:, :, None, None], u, v), tf.float32)


def test_windowed_rendering_equals_evaluating_every_pixel():
  rng = np.random.RandomState(0)
  b, s = 60, 5
  position = rng.uniform(data.MIN_POSITION, data.MAX_POSITION, (b, s, 2))
  position[:10] = data.MIN_POSITION  # Windows clipped at the top and left edges,
  position[10:20] = data.MAX_POSITION  # at the bottom and right edges,
  position[20:30, :, 0] = data.MIN_POSITION  # and mixed.
  scale = np.where(rng.rand(b, s) < 0.5, data.MAX_SCALE, rng.uniform(0.5, 1.0, (b, s)))
  factors = dict(present=tf.ones([b, s]), shape=tf.constant(rng.randint(0, 3, (b, s)), tf.int32),
                 scale=tf.constant(scale, tf.float32),
                 orientation=tf.constant(rng.uniform(0, 2 * math.pi, (b, s)), tf.float32),
                 position=tf.constant(position, tf.float32),
                 colour=tf.constant(rng.rand(b, s, 3), tf.float32))
  image, masks = data.render_scenes(**factors)
  cover = _full_image_cover(factors["shape"], factors["scale"], factors["orientation"],
                            factors["position"])
  np.testing.assert_array_equal(masks.numpy()[:, 1:] > 0, cover.numpy() > 0)
  expected = tf.minimum(tf.einsum("bshw,bsc->bhwc", cover, factors["colour"]), 1.0)
  np.testing.assert_array_equal(image.numpy(), expected.numpy())
  assert cover.numpy().sum(axis=(2, 3)).min() > 0  # Every sprite drew something.
