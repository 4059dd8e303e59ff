"""Analytic FLOPs of the model, from the shapes of its convolutions and matrix products.

The benchmark divides measured throughput by these counts to say how close a training step
comes to the machine's limit (a large matmul's FLOP rate). A multiply-add counts as 2 FLOPs.
Only convolutions and matrix products are counted: they are all but a fraction of a percent
of the arithmetic (elementwise ops, pooling, resizing and the KL are left out). In bf16 the
bilinear upsampling is computed as products with constant interpolation matrices
(`upsampling.py`), mostly of zeros; a product with a constant operand is resizing, not a
layer, and is not counted, so that the count is the model's arithmetic in either dtype.

  conv:   2 * H_out * W_out * k_h * k_w * C_in * C_out   per example (depthwise: C_in = 1)
  matmul: 2 * rows * inner * columns

A training step is counted as 3x the forward pass (the backward pass computes a gradient
for the inputs and one for the weights of every layer, each as costly as its forward).
"""

import numpy as np
import tensorflow as tf

from mvae_tf import model as model_lib

_CONV_OPS = ("Conv2D", "DepthwiseConv2dNative")
_MATMUL_OPS = ("MatMul", "BatchMatMulV2", "BatchMatMulV3")
TRAINING_MULTIPLIER = 3


def conv2d_flops(output_height, output_width, kernel_height, kernel_width, in_channels,
                 out_channels):
  """FLOPs of one 2-D convolution of one example."""
  return (2 * output_height * output_width * kernel_height * kernel_width * in_channels
          * out_channels)


def matmul_flops(rows, inner, columns):
  """FLOPs of a [rows, inner] x [inner, columns] matrix product."""
  return 2 * rows * inner * columns


def _op_flops(op):
  """FLOPs of one graph op with static shapes; 0 for ops that are not counted."""
  if op.type in _CONV_OPS:
    _, height, width, _ = op.outputs[0].shape.as_list()  # NHWC
    k_h, k_w, c_in, c_out = op.inputs[1].shape.as_list()
    if op.type == "DepthwiseConv2dNative":  # one filter per input channel
      c_out, c_in = c_in * c_out, 1
    return op.outputs[0].shape[0] * conv2d_flops(height, width, k_h, k_w, c_in, c_out)
  if op.type in _MATMUL_OPS:
    if any(operand.op.type == "Const" for operand in op.inputs[:2]):
      return 0  # A fixed linear map (the upsampling's interpolation), not a layer.
    a = op.inputs[0].shape.as_list()
    out = op.outputs[0].shape.as_list()
    transpose_a = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
    inner = a[-2] if transpose_a else a[-1]
    return int(np.prod(out[:-1])) * matmul_flops(1, inner, out[-1])
  return 0


def _graph(function, *input_specs):
  return tf.function(function).get_concrete_function(*input_specs).graph


def forward_flops(function, *input_specs):
  """FLOPs of `function` traced on fully static `input_specs` (its convs and matmuls)."""
  return sum(_op_flops(op) for op in _graph(function, *input_specs).get_operations())


def forward_graph(model_config, batch=1):
  """The graph of the model's forward pass (encode, g, pool, h) on `batch` images, with
  static shapes throughout (`benchmarks/conv_ops.py` reads its convolutions)."""
  model = model_lib.build_model(model_config)
  images = tf.TensorSpec([batch, *model_lib.IMAGE_SHAPE], tf.float32)
  noise = tf.TensorSpec([batch, model_config.num_objects, model_config.latent_dim],
                        tf.float32)
  return _graph(lambda x, eps: model(x, noise=eps)["logits"], images, noise)


def forward_flops_per_image(model_config):
  """Forward FLOPs of one image through the model of `model_config` (encode, g, pool, h)."""
  return sum(_op_flops(op) for op in forward_graph(model_config).get_operations())


def training_flops_per_image(model_config):
  """Forward, backward and weight-gradient FLOPs of one image: 3x the forward pass."""
  return TRAINING_MULTIPLIER * forward_flops_per_image(model_config)
