"""The model's convolutions: Keras's `Conv2D`, with compiled filter gradients in training.

Every convolution of appendix A's encoder, g and h is a Keras `Conv2D`. Training computes,
for y = conv(x, W) + b (3x3, stride 1, "same" padding), the gradients

  dL/dx = conv_transpose(dL/dy, W),
  dL/dW[kh, kw, i, o] = sum_{b, y, x} x[b, y + kh - 1, x + kw - 1, i] dL/dy[b, y, x, o],
  dL/db[o] = sum_{b, y, x} dL/dy[b, y, x, o].

Where oneDNN runs its AVX2 kernels (CPUs without AVX-512; `machine.onednn_runs_avx2`), its
filter gradients ran at 0.14-0.82 of the fp32 matmul's rate, 49% of a training step's
convolution time on an AVX2-only AMD EPYC, and the compiled `MvaeConv3x3FilterGrad`
(`native_ops`) 1.33-1.72x faster over the step's shapes (docs/throughput.md). Within
`native_ops.training_kernels`, with kernels whose `use_conv3x3_filter_grad` is set,
`Conv2D` takes it for dL/dW and dL/db (which oneDNN fuses into its filter gradient, and
TF's Eigen would compute slowly alone) of its float32 3x3 "same" convolutions, through
`tf.custom_gradient`; the forward ops (which oneDNN still fuses with the ELU) and dL/dx stay
TF's. Everywhere else, export and evaluation above all, and in bfloat16, `Conv2D` is
Keras's own. The weights and checkpoints are Keras's either way.
"""

import keras
import tensorflow as tf

from mvae_tf import native_ops

_LANES = 8  # The kernel vectorises one channel dimension 8 floats at a time.


def kernel_takes_channels(in_channels, out_channels):
  """Whether the compiled filter gradient takes a convolution of these channel counts: it
  vectorises the input or the output channels, so one of them must be a multiple of 8."""
  return in_channels % _LANES == 0 or out_channels % _LANES == 0


@keras.saving.register_keras_serializable(package="mvae_tf")
class Conv2D(keras.layers.Conv2D):
  """`keras.layers.Conv2D`, whose float32 3x3 "same" convolutions take the compiled filter
  and bias gradients in training where they are faster (module docstring). Same arguments
  and weights."""

  def call(self, inputs):
    kernels = native_ops.active()
    if (kernels is None or not kernels.use_conv3x3_filter_grad
        or not self._takes_compiled_filter_grad(inputs)):
      return super().call(inputs)
    # The weights' values as tensors: tf.custom_gradient takes no variables as inputs, and
    # the tape carries their gradients on to the variables through the reads.
    kernel = tf.convert_to_tensor(self.kernel)
    bias = tf.convert_to_tensor(self.bias) if self.use_bias else None
    outputs = conv3x3_same(inputs, kernel, bias, kernels.conv3x3_filter_grad)
    return outputs if self.activation is None else self.activation(outputs)

  def _takes_compiled_filter_grad(self, inputs):
    """Whether this call is one the compiled kernel computes: float32, 3x3, stride and
    dilation 1, "same" padding, channels last, one group, 8k input or output channels."""
    return (inputs.dtype == tf.float32 and self.compute_dtype == "float32"
            and tuple(self.kernel_size) == (3, 3) and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1) and self.padding == "same"
            and self.data_format == "channels_last" and self.groups == 1
            and not self.lora_enabled and inputs.shape.rank == 4
            and inputs.shape[-1] is not None
            and kernel_takes_channels(inputs.shape[-1], self.filters))


def conv3x3_same(inputs, kernel, bias, filter_grad):
  """`tf.nn.conv2d(inputs, kernel, 1, "SAME")` plus `bias`, with `filter_grad`'s gradients.

  Args:
    inputs: [batch, height, width, in_channels] float32.
    kernel: [3, 3, in_channels, out_channels] float32.
    bias: [out_channels] float32, or None for none.
    filter_grad: (inputs, dL/dy [batch, height, width, out_channels]) -> (dL/dkernel
      [3, 3, in_channels, out_channels], dL/dbias [out_channels]), such as
      `native_ops.Kernels.conv3x3_filter_grad`.

  Returns:
    [batch, height, width, out_channels].
  """

  @tf.custom_gradient
  def conv(x, w, *b):
    y = tf.nn.conv2d(x, w, strides=1, padding="SAME")  # [B, H, W, O]
    if b:
      y = tf.nn.bias_add(y, b[0])

    def grad(dy):
      dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=dy,
                                          strides=[1, 1, 1, 1], padding="SAME")  # [B, H, W, I]
      dw, db = filter_grad(x, dy)  # [3, 3, I, O], [O]
      return (dx, dw, db) if b else (dx, dw)

    return y, grad

  return conv(inputs, kernel) if bias is None else conv(inputs, kernel, bias)
