"""TopKByKL: the N most informative candidates, their parameters and coordinates."""

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import selection

B, H, W, D, N = 2, 3, 4, 5, 3


def _planted():
  rng = np.random.RandomState(0)
  kl_map = rng.uniform(0.0, 1.0, size=(B, H, W)).astype(np.float32)
  planted = [[(2, 3, 9.0), (0, 1, 7.0), (1, 0, 5.0)],
             [(0, 0, 8.0), (2, 2, 6.0), (1, 3, 4.0)]]
  for b, cells in enumerate(planted):
    for y, x, value in cells:
      kl_map[b, y, x] = value
  loc = rng.randn(B, H, W, D).astype(np.float32)
  scale = rng.uniform(0.1, 2.0, size=(B, H, W, D)).astype(np.float32)
  return loc, scale, kl_map, planted


def test_picks_planted_cells_in_descending_order():
  loc, scale, kl_map, planted = _planted()
  out = selection.TopKByKL(N)(tf.constant(loc), tf.constant(scale), tf.constant(kl_map))
  assert out["loc"].shape == (B, N, D) and out["scale"].shape == (B, N, D)
  assert out["kl"].shape == (B, N) and out["coords"].shape == (B, N, 2)
  np.testing.assert_array_equal(out["kl_map"].numpy(), kl_map)
  for b, cells in enumerate(planted):
    for n, (y, x, value) in enumerate(cells):
      assert out["kl"][b, n].numpy() == value
      assert out["indices"][b, n].numpy() == y * W + x
      np.testing.assert_array_equal(out["loc"][b, n].numpy(), loc[b, y, x])
      np.testing.assert_array_equal(out["scale"][b, n].numpy(), scale[b, y, x])
      np.testing.assert_allclose(out["coords"][b, n].numpy(),
                                 [2 * y / (H - 1) - 1, 2 * x / (W - 1) - 1], rtol=1e-6)


def test_gradients_flow_to_the_selected_cells_only():
  loc, scale, kl_map, planted = _planted()
  kl_map = tf.Variable(kl_map)
  loc = tf.Variable(loc)
  with tf.GradientTape() as tape:
    out = selection.TopKByKL(N)(loc, tf.constant(scale), kl_map)
    total = tf.reduce_sum(out["kl"]) + tf.reduce_sum(out["loc"])
  grad_kl, grad_loc = tape.gradient(total, [kl_map, loc])
  expected = np.zeros((B, H, W), np.float32)
  for b, cells in enumerate(planted):
    for y, x, _ in cells:
      expected[b, y, x] = 1.0
  np.testing.assert_array_equal(tf.convert_to_tensor(grad_kl).numpy(), expected)
  np.testing.assert_array_equal(tf.convert_to_tensor(grad_loc).numpy().sum(-1), D * expected)


def test_dynamic_batch():
  layer = selection.TopKByKL(N)
  fn = tf.function(layer).get_concrete_function(
      tf.TensorSpec([None, H, W, D]), tf.TensorSpec([None, H, W, D]),
      tf.TensorSpec([None, H, W]))
  assert fn.structured_outputs["loc"].shape.as_list() == [None, N, D]
  assert fn.structured_outputs["coords"].shape.as_list() == [None, N, 2]


def test_more_objects_than_candidates_is_an_error():
  with pytest.raises(ValueError, match=r"num_objects=13 .* 3x4 grid of 12"):
    selection.TopKByKL(13)(tf.zeros([B, H, W, D]), tf.ones([B, H, W, D]), tf.zeros([B, H, W]))


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_num_objects(bad):
  with pytest.raises(ValueError, match="num_objects"):
    selection.TopKByKL(bad)
