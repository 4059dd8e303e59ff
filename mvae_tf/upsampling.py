"""Bilinear 2x upsampling with a fast gradient (appendix A's "bilinear up-sampling").

g and h upsample their feature maps bilinearly by 2 (appendix A), as
`keras.layers.UpSampling2D(interpolation="bilinear")` does with `tf.image.resize`. The
forward pass here is that same `tf.image.resize`; only the gradient is computed another way.
TF's gradient, `ResizeBilinearGrad`, has no oneDNN kernel and runs as a slow scatter (and in
mixed precision Keras's layer adds a float32 round trip and a clip whose gradient costs more
than the resize), so this module writes the adjoint as one strided depthwise convolution.

The adjoint. With half-pixel centres (TF's default), output row o samples the input at
s = o / 2 - 1/4, and input rows outside [0, n) clamp to the edge. Along one axis, with
x[-1] := x[0] and x[n] := x[n - 1],

  y[2i]     = 1/4 * x[i - 1] + 3/4 * x[i],
  y[2i + 1] = 3/4 * x[i]     + 1/4 * x[i + 1],

so each x[i] feeds y[2i - 1], y[2i], y[2i + 1], y[2i + 2] with weights 1/4, 3/4, 3/4, 1/4,
and the clamped edge terms feed x[0] (from y[0]) and x[n - 1] (from y[2n - 1]) once more.
Padding dy by repeating its edge row (dy[-1] := dy[0], dy[2n] := dy[2n - 1]) adds exactly
those terms, so

  dx[i] = sum_k t[k] * dy_padded[2i + k],   t = (1/4, 3/4, 3/4, 1/4),

a stride-2 correlation with t; in 2-D (bilinear is separable) the kernel is the outer
product t t^T per channel. Tested against TF's own gradient in tests/test_upsampling.py.
"""

import keras
import numpy as np
import tensorflow as tf

_TAPS = np.array([0.25, 0.75, 0.75, 0.25], np.float32)


def _adjoint_kernel(channels, dtype):
  """The depthwise kernel t t^T of every channel: [4, 4, C, 1]."""
  kernel = np.outer(_TAPS, _TAPS)[:, :, None, None]  # [4, 4, 1, 1]
  return tf.constant(np.tile(kernel, [1, 1, channels, 1]), dtype)


def bilinear_upsample_2x(features):
  """[B, H, W, C] -> [B, 2H, 2W, C]: `tf.image.resize` bilinear, in the input's dtype.

  H, W and C must be static (they are in every layer of the MVAE); B may be dynamic.
  """
  shape = features.shape
  if shape.rank != 4 or None in shape[1:]:
    raise ValueError("Expected features of shape [batch, height, width, channels] with a "
                     f"static height, width and channels. Received: {shape}")
  height, width, channels = shape[1:]

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


class BilinearUpsample2x(keras.layers.Layer):
  """`bilinear_upsample_2x` as a Keras layer, computed in the layer's compute dtype."""

  def call(self, features):
    return bilinear_upsample_2x(features)

  def compute_output_shape(self, input_shape):
    batch, height, width, channels = input_shape
    return (batch, 2 * height, 2 * width, channels)
