"""Sub-pixel translation of object maps (`position_in_cell`): known answers and gradients."""

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import translation

S = 32  # Map size; a position step of 2 / S moves a map by one pixel.


def _planted(row, column, channels=2):
  features = np.zeros([1, S, S, channels], np.float32)
  features[0, row, column] = 1.0
  return tf.constant(features)


def test_interpolation_rows_are_bilinear_weights_that_sum_to_one():
  matrices = translation.interpolation_matrices(tf.constant([0.0, 2.25, -40.0]), 6).numpy()
  assert matrices.shape == (3, 6, 6)
  np.testing.assert_allclose(matrices.sum(axis=-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(matrices[0], np.eye(6))
  # Shift 2.25: output row 4 reads source 1.75 = 0.25 * row 1 + 0.75 * row 2.
  np.testing.assert_allclose(matrices[1, 4], [0, 0.25, 0.75, 0, 0, 0], atol=1e-6)
  # Output rows 0-2 read sources below 0, clamped to the edge row.
  np.testing.assert_allclose(matrices[1, :3, 0], 1.0)
  # Shift -40: every output row reads past the far edge.
  np.testing.assert_allclose(matrices[2, :, -1], 1.0)


def test_zero_position_is_the_identity():
  features = tf.random.stateless_normal([3, S, S, 4], seed=[1, 2])
  moved = translation.translate(features, tf.zeros([3, 2]))
  np.testing.assert_allclose(moved.numpy(), features.numpy(), atol=1e-6)


def test_whole_pixel_shifts_move_a_planted_pixel_exactly():
  # p = (3, -5) pixels * 2 / S: the pixel at (10, 12) moves to (13, 7).
  moved = translation.translate(_planted(10, 12), tf.constant([[3.0, -5.0]]) * 2 / S).numpy()
  expected = _planted(13, 7).numpy()
  np.testing.assert_allclose(moved, expected, atol=1e-6)


def test_half_pixel_shift_splits_a_pixel_between_two():
  moved = translation.translate(_planted(10, 12), tf.constant([[0.5, 0.0]]) * 2 / S).numpy()
  np.testing.assert_allclose(moved[0, 10, 12], [0.5, 0.5], atol=1e-6)
  np.testing.assert_allclose(moved[0, 11, 12], [0.5, 0.5], atol=1e-6)
  assert np.isclose(moved.sum(), 2.0)


def test_what_enters_from_outside_repeats_the_border():
  # A map whose border is -1 (g's background) moved far away is -1 everywhere.
  inner = np.random.RandomState(0).rand(1, S - 2, S - 2, 3).astype(np.float32)
  features = tf.pad(tf.constant(inner), [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-1.0)
  for position in ([3.0, 0.0], [0.0, -3.0], [2.5, 2.5]):
    moved = translation.translate(features, tf.constant([position]))
    np.testing.assert_allclose(moved.numpy(), -1.0, atol=1e-6)


def test_gradient_of_a_ramp_with_respect_to_position():
  # in[k, l] = k: inside the map out[i, j] = i - s_y with s_y = p_y * S / 2, so
  # d out / d p_y = -S / 2 and d out / d p_x = 0.
  ramp = tf.constant(np.arange(S, dtype=np.float32)[None, :, None, None]
                     * np.ones([1, 1, S, 1], np.float32))
  position = tf.Variable([[0.1, -0.2]])
  with tf.GradientTape() as tape:
    moved = translation.translate(ramp, position)
    interior = tf.reduce_sum(moved[:, 8:24, 8:24])
  gradient = tape.gradient(interior, position).numpy()
  np.testing.assert_allclose(gradient, [[-S / 2 * 16 * 16, 0.0]], rtol=1e-5, atol=1e-3)


def test_bfloat16_features_stay_bfloat16():
  features = tf.cast(_planted(4, 5), tf.bfloat16)
  moved = translation.translate(features, tf.constant([[2.0, 0.0]]) * 2 / S)
  assert moved.dtype == tf.bfloat16
  np.testing.assert_allclose(tf.cast(moved, tf.float32).numpy(), _planted(6, 5).numpy())


def test_non_square_maps_are_refused():
  with pytest.raises(ValueError, match=r"Expected square feature maps .* Received: "
                                       r"\(1, 8, 4, 2\)"):
    translation.translate(tf.zeros([1, 8, 4, 2]), tf.zeros([1, 2]))
