"""Bilinear 2x upsampling: the same function and gradient as TF's resize, in any dtype."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import native_ops, upsampling


def _features(shape, seed=0):
  return tf.constant(np.random.RandomState(seed).randn(*shape).astype(np.float32))


def _compiled(x):
  """The training step's path: the compiled kernels, in `native_ops.training_kernels`."""
  with native_ops.training_kernels(native_ops.load()):
    return upsampling.bilinear_upsample_2x(x)


# Every path, computed in float32 so that it can be held to float32's precision: the
# resize with its depthwise adjoint (float32's path), the matrix products (bf16's), and
# the compiled kernels (the training step's on a CPU, in both dtypes).
PATHS = [("resize", upsampling._resize_with_fast_gradient),  # pylint: disable=protected-access
         ("matrix_products", upsampling._matrix_products),  # pylint: disable=protected-access
         pytest.param("compiled", _compiled, marks=pytest.mark.skipif(
             shutil.which("c++") is None, reason="no C++ compiler `c++` on PATH"))]


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 1, 1, 2), (3, 8, 8, 16),
                                   (5, 16, 12, 8)])
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


def _op_types(dtype, kernels=None):
  """The op types of the upsampling's forward and backward pass, custom gradients included,
  traced within `native_ops.training_kernels(kernels)`."""
  @tf.function
  def forward_and_backward(x):
    with tf.GradientTape() as tape, native_ops.training_kernels(kernels):
      tape.watch(x)
      y = upsampling.bilinear_upsample_2x(x)
    return tape.gradient(y, x)

  spec = tf.TensorSpec([None, 4, 6, 3], dtype)
  graph = forward_and_backward.get_concrete_function(spec).graph
  op_types = {op.type for op in graph.get_operations()}
  for function in graph.as_graph_def().library.function:
    op_types |= {node.op for node in function.node_def}
  return op_types


@pytest.mark.parametrize("dtype, expected, absent", [
    (tf.bfloat16, "BatchMatMulV2", {"ResizeBilinear", "ResizeBilinearGrad", "Cast"}),
    (tf.float32, "ResizeBilinear", {"BatchMatMulV2", "ResizeBilinearGrad"})])
def test_each_dtype_takes_its_path_forward_and_backward(dtype, expected, absent):
  # bf16: products only, with neither TF's float32 resize (and a cast back) nor its
  # Eigen-only gradient; float32: the resize with the depthwise adjoint.
  op_types = _op_types(dtype)
  assert expected in op_types
  assert not op_types & absent, op_types


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler `c++` on PATH")
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_in_training_both_dtypes_take_the_compiled_kernels_alone(dtype):
  op_types = _op_types(dtype, native_ops.load())
  assert {"MvaeBilinearUpsample2x", "MvaeBilinearUpsample2xGrad"} <= op_types
  assert not op_types & {"ResizeBilinear", "BatchMatMulV2", "DepthwiseConv2dNative", "Cast"}


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler `c++` on PATH")
def test_the_compiled_kernels_round_bfloat16_once():
  # In float32, then rounded to bf16 once (to nearest even): at most half a bf16 step (2^-8
  # of the value) from TF's float32 resize of the same bf16 input, and its gradient likewise.
  kernels = native_ops.load()
  x = tf.cast(_features((3, 6, 5, 4)), tf.bfloat16)
  dy = tf.cast(_features((3, 12, 10, 4), seed=1), tf.bfloat16)
  with tf.GradientTape() as tape:
    x32 = tf.cast(x, tf.float32)
    tape.watch(x32)
    y32 = tf.image.resize(x32, [12, 10])
  dx32 = tape.gradient(y32, x32, output_gradients=tf.cast(dy, tf.float32))
  for ours, exact in ((kernels.upsample(x), y32), (kernels.upsample_grad(dy), dx32)):
    assert ours.dtype == tf.bfloat16
    error = np.abs(tf.cast(ours, tf.float32).numpy() - exact.numpy())
    assert np.all(error <= 2.0 ** -8 * np.abs(exact.numpy()) + 1e-6)


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
