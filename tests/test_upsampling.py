"""Bilinear 2x upsampling: the same function and gradient as TF's resize, in any dtype."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import upsampling


def _features(shape, seed=0):
  return tf.constant(np.random.RandomState(seed).randn(*shape).astype(np.float32))


# Both paths, computed in float32 so that they can be held to float32's precision: the
# resize with its depthwise adjoint (float32's path) and the matrix products (bf16's).
PATHS = [("resize", upsampling._resize_with_fast_gradient),  # pylint: disable=protected-access
         ("matrix_products", upsampling._matrix_products)]  # pylint: disable=protected-access


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 1, 1, 2), (3, 8, 8, 16)])
@pytest.mark.parametrize("name, path", PATHS)
def test_equals_keras_bilinear_upsampling_and_its_gradient(shape, name, path):
  del name  # In the test's id only.
  x = _features(shape)
  upstream = _features((shape[0], 2 * shape[1], 2 * shape[2], shape[3]), seed=1)
  keras_layer = keras.layers.UpSampling2D(2, interpolation="bilinear")
  results = []
  for fn in (path, keras_layer):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = fn(x)
      objective = tf.reduce_sum(y * upstream)  # so that dL/dy = `upstream`
    results.append((y.numpy(), tape.gradient(objective, x).numpy()))
  (ours, our_grad), (theirs, their_grad) = results
  assert ours.shape == (shape[0], 2 * shape[1], 2 * shape[2], shape[3])
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(our_grad, their_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_known_answer_along_one_row(dtype):
  # One row [0, 4]: y = [x0, 3/4 x0 + 1/4 x1, 1/4 x0 + 3/4 x1, x1] = [0, 1, 3, 4], exact in
  # either dtype's path.
  x = tf.constant([[[[0.0], [4.0]]]], dtype)  # [1, 1, 2, 1]
  y = upsampling.bilinear_upsample_2x(x)
  assert y.dtype == dtype
  np.testing.assert_array_equal(tf.cast(y, tf.float32).numpy()[0, 0, :, 0],
                                [0.0, 1.0, 3.0, 4.0])


def test_interpolation_matrix_known_answer():
  # Length 2: y = [x0, 3/4 x0 + 1/4 x1, 1/4 x0 + 3/4 x1, x1]; length 1 repeats x0.
  np.testing.assert_array_equal(upsampling.interpolation_matrix(2),
                                [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
  np.testing.assert_array_equal(upsampling.interpolation_matrix(1), [[1.0], [1.0]])
  np.testing.assert_allclose(upsampling.interpolation_matrix(7).sum(axis=1), 1.0)


@pytest.mark.parametrize("dtype, expected, absent", [
    (tf.bfloat16, "BatchMatMulV2", {"ResizeBilinear", "ResizeBilinearGrad", "Cast"}),
    (tf.float32, "ResizeBilinear", {"BatchMatMulV2", "ResizeBilinearGrad"})])
def test_each_dtype_takes_its_path_forward_and_backward(dtype, expected, absent):
  # bf16: products only, with neither TF's float32 resize (and a cast back) nor its
  # Eigen-only gradient; float32: the resize with the depthwise adjoint.
  @tf.function
  def forward_and_backward(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = upsampling.bilinear_upsample_2x(x)
    return tape.gradient(y, x)

  spec = tf.TensorSpec([None, 4, 6, 3], dtype)
  graph = forward_and_backward.get_concrete_function(spec).graph
  op_types = {op.type for op in graph.get_operations()}
  assert expected in op_types
  assert not op_types & absent, op_types


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
