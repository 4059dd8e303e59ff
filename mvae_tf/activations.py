"""The ELU of appendix A, with its bf16 gradient from the compiled kernel in training.

Every hidden layer of the encoder, g and h is a conv or dense layer with an ELU (Clevert
et al., 2016): y = x for x > 0 and y = exp(x) - 1 otherwise, so dy/dx = 1 where y > 0 and
y + 1 elsewhere, and the gradient needs only y.

`elu` is `tf.nn.elu`. Within `native_ops.training_kernels` (the training step) and on a
bfloat16 tensor, it takes the compiled `MvaeEluGrad`, TF's `EluGrad` bit for bit, as its
gradient through `tf.custom_gradient`; in float32 TF's own kernel is as fast and is kept.
The forward op is TF's either way, so oneDNN still fuses it into the conv or matmul before
it (README, "Throughput").
"""

import keras
import tensorflow as tf

from mvae_tf import native_ops


@keras.saving.register_keras_serializable(package="mvae_tf")
def elu(features):
  """ELU with alpha 1, `tf.nn.elu`; see the module docstring for its gradient."""
  kernels = native_ops.active()
  if kernels is None or features.dtype != tf.bfloat16:
    return tf.nn.elu(features)

  @tf.custom_gradient
  def elu_with_kernel(x):
    y = tf.nn.elu(x)
    return y, lambda dy: kernels.elu_grad(dy, y)

  return elu_with_kernel(features)
