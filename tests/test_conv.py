"""conv.Conv2D and its compiled filter gradient: TF's gradients, on the CPUs that need them."""

import dataclasses
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import conv, machine, native_ops

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None,
                                    reason="no C++ compiler `c++` on PATH")


def _tfs_gradients(x, dy):
  """TF's filter and bias gradients of a 3x3 "same" convolution of x with gradient dy."""
  filter_sizes = [3, 3, x.shape[-1], dy.shape[-1]]
  dw = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=filter_sizes, out_backprop=dy,
                                       strides=[1, 1, 1, 1], padding="SAME")
  return dw, tf.reduce_sum(dy, axis=[0, 1, 2])


# (batch, height, width, in_channels, out_channels): vectors over the output channels (8k)
# or, where those are not 8k, over the input channels; channel counts that leave uneven
# register tiles (at most 6 rows by 2 vectors), and that take the tiles of 4 rows by 3
# vectors (4 output channels) and 3 by 4 (1 input channel); images narrower than a pass
# (several rows per pass), wider than one (one row), a single pixel, a single row and a
# single column; an odd batch over two threads.
_SHAPES = [(3, 5, 7, 13, 8), (2, 6, 4, 8, 3), (3, 4, 9, 3, 24), (1, 1, 1, 16, 16),
           (2, 1, 70, 8, 40), (5, 9, 11, 66, 64), (4, 17, 3, 16, 5), (2, 5, 6, 8, 4),
           (2, 3, 5, 1, 32), (3, 6, 1, 8, 16)]


@needs_compiler
@pytest.mark.parametrize("shape", _SHAPES, ids=[str(s) for s in _SHAPES])
def test_the_compiled_filter_gradient_is_tfs(shape):
  batch, height, width, in_channels, out_channels = shape
  rng = np.random.RandomState(sum(shape))
  x = tf.constant(rng.standard_normal([batch, height, width, in_channels]), tf.float32)
  dy = tf.constant(rng.standard_normal([batch, height, width, out_channels]), tf.float32)
  dw, db = native_ops.load().conv3x3_filter_grad(x, dy)
  tf_dw, tf_db = _tfs_gradients(x, dy)
  assert dw.shape == (3, 3, in_channels, out_channels) and db.shape == (out_channels,)
  # The same sums in another order: float32's rounding, relative to the sums' size.
  np.testing.assert_allclose(dw, tf_dw, rtol=0, atol=2e-6 * np.abs(tf_dw).max() + 1e-6)
  np.testing.assert_allclose(db, tf_db, rtol=0, atol=2e-6 * np.abs(tf_db).max() + 1e-6)


@needs_compiler
def test_the_compiled_filter_gradient_sums_in_a_fixed_order():
  # The same inputs give the same bits however the threads ran (exact resume needs it).
  rng = np.random.RandomState(1)
  x = tf.constant(rng.standard_normal([7, 12, 10, 16]), tf.float32)
  dy = tf.constant(rng.standard_normal([7, 12, 10, 32]) * 1e3, tf.float32)
  kernel = native_ops.load().conv3x3_filter_grad
  first = [t.numpy() for t in kernel(x, dy)]
  for _ in range(5):
    for ours, again in zip(first, kernel(x, dy)):
      np.testing.assert_array_equal(ours, again.numpy())


@needs_compiler
def test_the_compiled_filter_gradient_of_an_empty_batch_is_zero():
  dw, db = native_ops.load().conv3x3_filter_grad(tf.zeros([0, 4, 4, 8]), tf.zeros([0, 4, 4, 3]))
  assert dw.shape == (3, 3, 8, 3) and not np.any(dw) and db.shape == (3,) and not np.any(db)


@needs_compiler
@pytest.mark.parametrize("x_shape,dy_shape", [
    ([2, 4, 4, 8], [3, 4, 4, 8]),  # batches differ
    ([2, 4, 4, 8], [2, 4, 5, 8]),  # widths differ
    ([2, 4, 4, 5], [2, 4, 4, 3]),  # neither channel count a multiple of 8
    ([4, 4, 8], [4, 4, 8])])  # not images
def test_the_compiled_filter_gradient_refuses_shapes_it_cannot_take(x_shape, dy_shape):
  kernel = native_ops.load().conv3x3_filter_grad
  with pytest.raises((tf.errors.InvalidArgumentError, ValueError),
                     match="MvaeConv3x3FilterGrad|rank"):
    kernel(tf.zeros(x_shape), tf.zeros(dy_shape))


def _kernels(use):
  """The loaded kernels, their filter gradient used by conv.Conv2D or not."""
  return dataclasses.replace(native_ops.load(), use_conv3x3_filter_grad=use)


def _gradients(layer, x, kernels):
  """The traced graph's op types and d(sum(y * w))/d(x, kernel, bias) of `layer` at x."""
  weights = tf.constant(np.random.RandomState(2).standard_normal(
      layer.compute_output_shape(x.shape)), tf.float32)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape, native_ops.training_kernels(kernels):
      tape.watch(x)
      loss = tf.reduce_sum(layer(x) * weights)
    return tape.gradient(loss, [x, *layer.trainable_variables])

  graph = step.get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph
  return {op.type for op in graph.get_operations()}, [g.numpy() for g in step(x)]


@needs_compiler
@pytest.mark.parametrize("in_channels,filters,use_bias", [(8, 16, True), (16, 3, True),
                                                          (3, 32, False)])
def test_conv2d_with_the_compiled_filter_gradient_has_keras_gradients(in_channels, filters,
                                                                      use_bias):
  layer = conv.Conv2D(filters, 3, padding="same", use_bias=use_bias, activation="elu")
  x = tf.constant(np.random.RandomState(3).standard_normal([3, 6, 5, in_channels]), tf.float32)
  layer.build(x.shape)
  if use_bias:  # A bias that is not zero, so that the forward pass is checked with it.
    layer.bias.assign(np.linspace(-1, 1, filters))
  ops, ours = _gradients(layer, x, _kernels(True))
  tf_ops, tfs = _gradients(layer, x, _kernels(False))
  assert "MvaeConv3x3FilterGrad" in ops and "MvaeConv3x3FilterGrad" not in tf_ops
  assert len(ours) == len(tfs) == 2 + use_bias
  for mine, theirs in zip(ours, tfs):
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
  with native_ops.training_kernels(_kernels(True)):
    ours = layer(x)
  np.testing.assert_array_equal(ours, keras.layers.Conv2D.call(layer, x))


@pytest.mark.parametrize("in_channels,out_channels,takes", [
    (8, 3, True), (3, 32, True), (16, 16, True), (66, 64, True), (5, 3, False), (12, 4, False)])
def test_the_kernel_takes_8k_channels_one_way(in_channels, out_channels, takes):
  assert conv.kernel_takes_channels(in_channels, out_channels) == takes


@needs_compiler
@pytest.mark.parametrize("settings,in_channels", [
    (dict(kernel_size=1), 8), (dict(kernel_size=3, strides=2), 8),
    (dict(kernel_size=3, padding="valid"), 8), (dict(kernel_size=3), 5)])
def test_conv2d_keeps_tfs_gradients_where_the_kernel_does_not_apply(settings, in_channels):
  layer = conv.Conv2D(3, **{"padding": "same", **settings})
  x = tf.ones([2, 6, 6, in_channels])
  layer.build(x.shape)
  ops, _ = _gradients(layer, x, _kernels(True))
  assert "MvaeConv3x3FilterGrad" not in ops and "Conv2DBackpropFilter" in ops


@needs_compiler
def test_conv2d_in_bfloat16_keeps_tfs_gradients():
  layer = conv.Conv2D(8, 3, padding="same", dtype="mixed_bfloat16")
  x = tf.ones([2, 6, 6, 8])
  layer.build(x.shape)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape, native_ops.training_kernels(_kernels(True)):
      loss = tf.reduce_sum(tf.cast(layer(x), tf.float32))
    return tape.gradient(loss, layer.trainable_variables)

  graph = step.get_concrete_function(tf.TensorSpec(x.shape)).graph
  assert "MvaeConv3x3FilterGrad" not in {op.type for op in graph.get_operations()}


def _cpuinfo(tmp_path, flags):
  path = tmp_path / "cpuinfo"
  path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n")
  return str(path)


@pytest.mark.parametrize("flags,environ,expected", [
    ("fpu avx2 fma", {}, True),  # an AVX2-only CPU
    ("fpu avx2 fma avx512f", {}, False),  # oneDNN's AVX-512 kernels
    ("fpu avx2 fma avx512f", {"ONEDNN_MAX_CPU_ISA": "avx2"}, True),  # limited to AVX2
    ("fpu avx2 fma avx512f", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, False),
    ("fpu avx2", {}, False),  # no FMA: the kernel would be slow
    ("fpu sse4_2", {}, False)])
def test_the_compiled_filter_gradient_is_chosen_where_onednn_runs_avx2(tmp_path, flags, environ,
                                                                      expected):
  assert machine.onednn_runs_avx2(_cpuinfo(tmp_path, flags), environ) is expected
