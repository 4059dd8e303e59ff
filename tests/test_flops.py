"""Analytic FLOP counts: hand counts of single layers, and the model's layer by layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import config, flops, upsampling


def test_one_conv_against_a_hand_count():
  # 3x3 conv, 2 -> 4 channels, "same" on 8x6: 2 * (8*6 outputs) * (3*3*2) * 4 = 6912.
  conv = keras.layers.Conv2D(4, 3, padding="same")
  conv.build((None, 8, 6, 2))
  assert flops.forward_flops(conv, tf.TensorSpec([1, 8, 6, 2], tf.float32)) == 6912
  # Batch 3 triples it; a "valid" conv has fewer outputs: 2 * (6*4) * 18 * 4 = 3456.
  assert flops.forward_flops(conv, tf.TensorSpec([3, 8, 6, 2], tf.float32)) == 3 * 6912
  valid = keras.layers.Conv2D(4, 3)
  valid.build((None, 8, 6, 2))
  assert flops.forward_flops(valid, tf.TensorSpec([1, 8, 6, 2], tf.float32)) == 3456


def test_one_dense_layer_against_a_hand_count():
  # [2, 5] x [5, 7]: 2 * 2 * 5 * 7 = 140.
  dense = keras.layers.Dense(7)
  dense.build((None, 5))
  assert flops.forward_flops(dense, tf.TensorSpec([2, 5], tf.float32)) == 140


def test_a_product_with_a_constant_matrix_is_resizing_and_not_counted():
  # The upsampling's interpolation in bf16 is two products with constant matrices: 0 FLOPs.
  spec = tf.TensorSpec([1, 4, 3, 2], tf.bfloat16)
  assert flops.forward_flops(upsampling.bilinear_upsample_2x, spec) == 0
  # The same kind of product with a variable (a layer's weights) counts: 2 * 2 * 5 * 7 = 140.
  weights = tf.Variable(tf.ones([5, 7]))
  assert flops.forward_flops(lambda x: tf.matmul(x, weights),
                             tf.TensorSpec([2, 5], tf.float32)) == 140
  constant = lambda x: tf.matmul(x, tf.constant(np.ones([5, 7], np.float32)))
  assert flops.forward_flops(constant, tf.TensorSpec([2, 5], tf.float32)) == 0


def test_depthwise_conv_counts_one_filter_per_channel():
  kernel = tf.ones([4, 4, 3, 1])
  fn = lambda x: tf.nn.depthwise_conv2d(x, kernel, [1, 2, 2, 1], "VALID")
  # 10x10 -> 4x4 outputs, 3 channels, 16 taps each: 2 * 16 * 16 * 3 = 1536.
  assert flops.forward_flops(fn, tf.TensorSpec([1, 10, 10, 3], tf.float32)) == 1536


def _mvae_hand_count(num_objects, grid, latent_dim=12):
  conv = flops.conv2d_flops
  # The trunk's four convs run before their pooling, at 64, 32, 16 and 8 pixels a side, but
  # never below the grid (with 2 poolings the last two run at 16); the head's two convs
  # (after the 2 coordinate channels) run on the grid.
  s3, s4 = max(16, grid), max(8, grid)
  encoder = (conv(64, 64, 3, 3, 3, 32) + conv(32, 32, 3, 3, 32, 32) + conv(s3, s3, 3, 3, 32, 64)
             + conv(s4, s4, 3, 3, 64, 64) + conv(grid, grid, 3, 3, 66, 64)
             + conv(grid, grid, 1, 1, 64, 2 * latent_dim))
  g = (flops.matmul_flops(1, latent_dim, 256) + flops.matmul_flops(1, 256, 1024)
       + conv(16, 16, 3, 3, 16, 16) + conv(32, 32, 3, 3, 16, 16))
  h = conv(32, 32, 3, 3, 16, 32) + conv(64, 64, 3, 3, 32, 16) + conv(64, 64, 3, 3, 16, 3)
  return encoder + num_objects * g + h


@pytest.mark.parametrize("num_objects, num_pooling, grid", [(5, None, 16), (10, None, 16),
                                                             (5, 3, 8), (5, 4, 4)])
def test_the_model_is_its_layers_summed(num_objects, num_pooling, grid):
  model_config = config.ModelConfig(num_objects=num_objects, num_pooling=num_pooling)
  assert model_config.grid_size == grid
  hand_count = _mvae_hand_count(num_objects, grid)
  assert flops.forward_flops_per_image(model_config) == hand_count
  assert flops.training_flops_per_image(model_config) == 3 * hand_count
