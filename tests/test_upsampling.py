"""Bilinear 2x upsampling: the same function and gradient as TF's resize, in any dtype."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import upsampling


def _features(shape, seed=0):
  return tf.constant(np.random.RandomState(seed).randn(*shape).astype(np.float32))


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 1, 1, 2), (3, 8, 8, 16)])
def test_equals_keras_bilinear_upsampling_and_its_gradient(shape):
  x = _features(shape)
  upstream = _features((shape[0], 2 * shape[1], 2 * shape[2], shape[3]), seed=1)
  keras_layer = keras.layers.UpSampling2D(2, interpolation="bilinear")
  results = []
  for fn in (upsampling.bilinear_upsample_2x, keras_layer):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = fn(x)
      objective = tf.reduce_sum(y * upstream)  # so that dL/dy = `upstream`
    results.append((y.numpy(), tape.gradient(objective, x).numpy()))
  (ours, our_grad), (theirs, their_grad) = results
  assert ours.shape == (shape[0], 2 * shape[1], 2 * shape[2], shape[3])
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(our_grad, their_grad, rtol=1e-5, atol=1e-5)


def test_known_answer_along_one_row():
  # One row [0, 4]: y = [x0, 3/4 x0 + 1/4 x1, 1/4 x0 + 3/4 x1, x1] = [0, 1, 3, 4].
  x = tf.constant([[[[0.0], [4.0]]]])  # [1, 1, 2, 1]
  np.testing.assert_allclose(upsampling.bilinear_upsample_2x(x).numpy()[0, 0, :, 0],
                             [0.0, 1.0, 3.0, 4.0])


def test_keeps_bfloat16_and_differentiates_in_it():
  x = tf.cast(_features((2, 4, 4, 3)), tf.bfloat16)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = upsampling.BilinearUpsample2x(dtype="mixed_bfloat16")(x)
  assert y.dtype == tf.bfloat16
  assert tape.gradient(y, x).dtype == tf.bfloat16
  np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(),
                             tf.image.resize(tf.cast(x, tf.float32), [8, 8]).numpy(),
                             rtol=1e-2, atol=2e-2)


def test_unknown_spatial_size_is_refused():
  spec = tf.TensorSpec([None, None, None, 3], tf.float32)
  with pytest.raises(ValueError, match=r"static height, width and channels"):
    tf.function(upsampling.bilinear_upsample_2x).get_concrete_function(spec)


def test_dynamic_batch_is_fine():
  fn = tf.function(upsampling.bilinear_upsample_2x).get_concrete_function(
      tf.TensorSpec([None, 3, 5, 2], tf.float32))
  assert fn(_features((4, 3, 5, 2))).shape == (4, 6, 10, 2)
