"""Bilinear 2x upsampling, fast forward and backward (appendix A's "bilinear up-sampling").

g and h upsample their feature maps bilinearly by 2 (appendix A), the function of
`keras.layers.UpSampling2D(interpolation="bilinear")` and `tf.image.resize`. TF's own
gradient, `ResizeBilinearGrad`, has no oneDNN kernel and runs as a slow scatter, and
`ResizeBilinear` returns float32 whatever it is given (in mixed precision a cast back to
bf16 follows, and Eigen's bf16 casts are slow). So this module computes the same function
in one of two ways, by the dtype, each chosen by measurement (README, "Throughput"; in float32
the products trained no faster and decoded a single image slower):

* float32 (training in fp32, and every export): `tf.image.resize` forward, its gradient
  written as one stride-2 depthwise convolution (below).
* bfloat16 (mixed precision): two products with constant interpolation matrices, which
  oneDNN runs in bf16 forward and backward, with no float32 round trip.

In the training step on a CPU (within `native_ops.training_kernels`), both dtypes take the
compiled `MvaeBilinearUpsample2x` and its gradient instead, one pass over memory each way
(`kernels/upsample.cc`); exports and everything else keep the TF ops above.

The interpolation. With half-pixel centres (TF's default), output row o samples the input
at s = o / 2 - 1/4, and input rows outside [0, n) clamp to the edge. Along one axis, with
x[-1] := x[0] and x[n] := x[n - 1],

  y[2i]     = 1/4 * x[i - 1] + 3/4 * x[i],
  y[2i + 1] = 3/4 * x[i]     + 1/4 * x[i + 1],

that is y = U_n x for the [2n, n] matrix U_n (`interpolation_matrix`), whose rows hold
1/4 and 3/4 (or 1 at the two clamped edges, 1/4 + 3/4). Bilinear is separable: with the
features X of one example as [H, W, C], Y = U_H X U_W^T channel by channel, computed as
U_H @ X over [H, W*C], then U_W @ . over [W, C] for each of the 2H output rows. Every entry
of U is exact in bf16.

The adjoint, U_H^T dY U_W. Each x[i] feeds y[2i - 1], y[2i], y[2i + 1], y[2i + 2] with
weights 1/4, 3/4, 3/4, 1/4, and the clamped edge terms feed x[0] (from y[0]) and x[n - 1]
(from y[2n - 1]) once more. Padding dy by repeating its edge row (dy[-1] := dy[0],
dy[2n] := dy[2n - 1]) adds exactly those terms, so

  dx[i] = sum_k t[k] * dy_padded[2i + k],   t = (1/4, 3/4, 3/4, 1/4),

a stride-2 correlation with t; in 2-D the kernel is the outer product t t^T per channel.
The matrix path needs none of this: TF differentiates its products as transposed
products. Both paths are tested against TF's resize and its gradient in
tests/test_upsampling.py.
"""

import keras
import numpy as np
import tensorflow as tf

from mvae_tf import native_ops

_TAPS = np.array([0.25, 0.75, 0.75, 0.25], np.float32)


def interpolation_matrix(size):
  """U: [2 * size, size], bilinear 2x upsampling along one axis of length `size`."""
  matrix = np.zeros([2 * size, size], np.float32)
  for i in range(size):
    matrix[2 * i, max(i - 1, 0)] += 0.25  # The edge clamps: x[-1] := x[0].
    matrix[2 * i, i] += 0.75
    matrix[2 * i + 1, i] += 0.75
    matrix[2 * i + 1, min(i + 1, size - 1)] += 0.25  # x[n] := x[n - 1].
  return matrix


def _adjoint_kernel(channels, dtype):
  """The depthwise kernel t t^T of every channel: [4, 4, C, 1]."""
  kernel = np.outer(_TAPS, _TAPS)[:, :, None, None]  # [4, 4, 1, 1]
  return tf.constant(np.tile(kernel, [1, 1, channels, 1]), dtype)


def _resize_with_fast_gradient(features):
  """The float32 path: `tf.image.resize` forward, the adjoint as a depthwise conv."""
  height, width, channels = features.shape[1:]

  @tf.custom_gradient
  def upsample(x):
    # ResizeBilinear returns float32 whatever it is given.
    y = tf.cast(tf.image.resize(x, [2 * height, 2 * width], "bilinear"), x.dtype)

    def grad(dy):  # dy: [B, 2H, 2W, C]
      padded = tf.concat([dy[:, :1], dy, dy[:, -1:]], axis=1)  # [B, 2H + 2, 2W, C]
      padded = tf.concat([padded[:, :, :1], padded, padded[:, :, -1:]], axis=2)
      # `padded` has shape [B, 2H + 2, 2W + 2, C], its edges repeated once.
      kernel = _adjoint_kernel(channels, dy.dtype)
      return tf.nn.depthwise_conv2d(padded, kernel, [1, 2, 2, 1], "VALID")  # [B, H, W, C]

    return y, grad

  return upsample(features)


def _matrix_products(features):
  """The bfloat16 path: Y = U_H X U_W^T as two batched products, in the input's dtype."""
  height, width, channels = features.shape[1:]
  batch = tf.shape(features)[0]
  rows = tf.constant(interpolation_matrix(height)[None], features.dtype)  # [1, 2H, H]
  columns = tf.constant(interpolation_matrix(width)[None], features.dtype)  # [1, 2W, W]
  flat = tf.reshape(features, [batch, height, width * channels])  # [B, H, W*C]
  tall = tf.matmul(rows, flat)  # [B, 2H, W*C]
  tall = tf.reshape(tall, [batch * 2 * height, width, channels])  # [B*2H, W, C]
  wide = tf.matmul(columns, tall)  # [B*2H, 2W, C]
  return tf.reshape(wide, [batch, 2 * height, 2 * width, channels])  # [B, 2H, 2W, C]


def bilinear_upsample_2x(features):
  """[B, H, W, C] -> [B, 2H, 2W, C]: `tf.image.resize` bilinear, in the input's dtype.

  float32 takes the resize path, any other dtype the matrix products, and both the compiled
  kernels within `native_ops.training_kernels` (module docstring).
  H, W and C must be static (they are in every layer of the MVAE); B may be dynamic.
  """
  shape = features.shape
  if shape.rank != 4 or None in shape[1:]:
    raise ValueError("Expected features of shape [batch, height, width, channels] with a "
                     f"static height, width and channels. Received: {shape}")
  kernels = native_ops.active()
  if kernels is not None:
    return _compiled(features, kernels)
  if features.dtype == tf.float32:
    return _resize_with_fast_gradient(features)
  return _matrix_products(features)


def _compiled(features, kernels):
  """The training path: the compiled resize and adjoint (`native_ops.Kernels`)."""

  @tf.custom_gradient
  def upsample(x):
    return kernels.upsample(x), kernels.upsample_grad  # [B, 2H, 2W, C]; dy -> [B, H, W, C]

  return upsample(features)


class BilinearUpsample2x(keras.layers.Layer):
  """`bilinear_upsample_2x` as a Keras layer, computed in the layer's compute dtype."""

  def call(self, features):
    return bilinear_upsample_2x(features)

  def compute_output_shape(self, input_shape):
    batch, height, width, channels = input_shape
    return (batch, 2 * height, 2 * width, channels)
