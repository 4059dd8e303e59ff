"""Candidate encoder, posteriors and their KL against the prior (paper 2.1, appendix A)."""

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import config, encoder

B, D = 2, 5


def test_kl_equals_the_closed_form():
  rng = np.random.RandomState(0)
  loc = rng.randn(B, 3, 4, D).astype(np.float32)
  scale = np.exp(rng.randn(B, 3, 4, D)).astype(np.float32)
  expected = 0.5 * np.sum(loc**2 + scale**2 - 1.0 - np.log(scale**2), axis=-1)
  kl = encoder.kl_to_prior(tf.constant(loc), tf.constant(scale)).numpy()
  assert kl.shape == (B, 3, 4)
  np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=1e-5)


def test_kl_is_zero_when_posterior_equals_prior():
  kl = encoder.kl_to_prior(tf.zeros([B, D]), tf.ones([B, D]))
  np.testing.assert_allclose(kl.numpy(), np.zeros(B), atol=1e-7)


def test_relative_coordinates():
  coords = encoder.relative_coordinates(3, 2).numpy()
  assert coords.shape == (3, 2, 2)
  np.testing.assert_allclose(coords[..., 0], [[-1, -1], [0, 0], [1, 1]])
  np.testing.assert_allclose(coords[..., 1], [[-1, 1], [-1, 1], [-1, 1]])
  np.testing.assert_allclose(encoder.relative_coordinates(1, 1).numpy(), [[[0.0, 0.0]]])


def test_split_params():
  params = tf.constant([[1.0, 2.0, 0.0, np.log(4.0)]])
  loc, scale = encoder.split_params(params)
  np.testing.assert_allclose(loc.numpy(), [[1.0, 2.0]])
  np.testing.assert_allclose(scale.numpy(), [[1.0, 2.0]], rtol=1e-6)


@pytest.mark.parametrize("num_pooling, grid", [(2, 16), (3, 8), (4, 4)])
def test_grid_size_follows_num_pooling(num_pooling, grid):
  layer = encoder.CandidateEncoder(D, num_pooling)
  params = layer(tf.zeros([B, 64, 64, 3]))
  assert params.shape == (B, grid, grid, 2 * D)


def test_dynamic_batch():
  layer = encoder.CandidateEncoder(D, 3)
  fn = tf.function(layer).get_concrete_function(tf.TensorSpec([None, 64, 64, 3]))
  assert fn.structured_outputs.shape.as_list() == [None, 8, 8, 2 * D]


def test_coordinates_reach_the_candidates():
  """The head sees the coordinate channels: identical features at two cells still differ."""
  layer = encoder.CandidateEncoder(D, 3)
  params = layer(tf.zeros([1, 64, 64, 3])).numpy()
  assert not np.allclose(params[0, 0, 0], params[0, 4, 4])


def test_cell_centres():
  centres = encoder.cell_centres(4, 2).numpy()
  assert centres.shape == (4, 2, 2)
  np.testing.assert_allclose(centres[:, 0, 0], [-0.75, -0.25, 0.25, 0.75])
  np.testing.assert_allclose(centres[0, :, 1], [-0.5, 0.5])


def test_anchor_positions_adds_the_cell_centre_to_the_first_two_dimensions():
  loc = tf.random.stateless_normal([2, 4, 2, 5], seed=[3, 4])
  anchored = encoder.anchor_positions(loc).numpy()
  np.testing.assert_allclose(anchored[..., :2] - loc.numpy()[..., :2],
                             np.broadcast_to(encoder.cell_centres(4, 2).numpy(), (2, 4, 2, 2)),
                             atol=1e-6)
  np.testing.assert_array_equal(anchored[..., 2:], loc.numpy()[..., 2:])


@pytest.mark.parametrize("head_kernel, reach", [(3, 46), (1, 30)])
def test_head_kernel_sets_how_far_a_cell_sees(head_kernel, reach):
  """Cell (0, 0) of the 4x4 grid sees pixels 0..reach: a receptive field of 78 pixels with
  a 3x3 head (centred on the cell, so it reaches 46), of 46 with a 1x1 head (30)."""
  layer = encoder.CandidateEncoder(D, 4, head_kernel)
  image = tf.random.stateless_uniform([1, 64, 64, 3], seed=[1, 2])
  beyond = np.zeros([1, 64, 64, 1], np.float32)
  beyond[:, reach + 1:, :] = beyond[:, :, reach + 1:] = 1.0  # Every pixel past the reach.
  inside = np.zeros_like(beyond)
  inside[:, reach - 5:reach + 1, reach - 5:reach + 1] = 1.0  # A block just within it.
  corner = lambda x: layer(x)[0, 0, 0].numpy()  # [2 * D]
  np.testing.assert_array_equal(corner(image), corner(image * (1.0 - beyond)))
  assert not np.allclose(corner(image), corner(image * (1.0 - inside)))


@pytest.mark.parametrize("head_kernel", [0, 2, -1, 1.0, True])
def test_head_kernel_must_be_an_odd_positive_integer(head_kernel):
  with pytest.raises(config.ConfigError, match=r"--head_kernel must be an odd integer >= 1"):
    config.ModelConfig(head_kernel=head_kernel)
