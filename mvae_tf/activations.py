"""The ELU of appendix A, and the choice of kernel for its gradient.

Every hidden layer of the encoder, g and h is a conv or dense layer with an ELU (Clevert
et al., 2016): y = x for x > 0 and y = exp(x) - 1 otherwise, so dy/dx = 1 where y > 0 and
y + 1 elsewhere, and the gradient needs only y.

`elu` is `tf.nn.elu`. Only inside `elu_gradient(kernel)` and only on a bfloat16 tensor, it
takes `kernel(dy, y)` as its gradient (`native_ops.load_elu_grad`: TF's `EluGrad`,
compiled for this machine), through `tf.custom_gradient`. The training step opens that
scope (`training.Trainer`); everything else, export above all, traces plain `tf.nn.elu`,
so a SavedModel holds only TF's ops. The forward op is TF's own either way, so oneDNN
still fuses it into the conv or matmul before it (README, "Throughput").

The scope is a `contextvars.ContextVar`, read when a function is traced: the training step
opens it inside each replica's function, since MirroredStrategy traces replicas in threads
of their own.
"""

import contextlib
import contextvars

import keras
import tensorflow as tf

_GRADIENT_KERNEL = contextvars.ContextVar("mvae_tf_elu_gradient_kernel", default=None)


@contextlib.contextmanager
def elu_gradient(kernel):
  """Within: `elu` of bfloat16 tensors differentiates with `kernel(dy, y)` (None: TF's)."""
  token = _GRADIENT_KERNEL.set(kernel)
  try:
    yield
  finally:
    _GRADIENT_KERNEL.reset(token)


@keras.saving.register_keras_serializable(package="mvae_tf")
def elu(features):
  """ELU with alpha 1, `tf.nn.elu`; the gradient kernel of `elu_gradient`'s scope in bf16."""
  kernel = _GRADIENT_KERNEL.get()
  if kernel is None or features.dtype != tf.bfloat16:
    return tf.nn.elu(features)

  @tf.custom_gradient
  def elu_with_kernel(x):
    y = tf.nn.elu(x)
    return y, lambda dy: kernel(dy, y)

  return elu_with_kernel(features)
