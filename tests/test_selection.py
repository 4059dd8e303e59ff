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


def _select(kl_map, num_objects, radius):
  """Runs TopKByKL on a planted map; loc carries each cell's flat index so picks are visible."""
  b, h, w = kl_map.shape
  loc = np.tile(np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1), [b, 1, 1, 1])
  out = selection.TopKByKL(num_objects, suppression_radius=radius)(
      tf.constant(loc), tf.constant(loc + 1.0), tf.constant(kl_map, tf.float32))
  return out["indices"].numpy(), out["kl"].numpy(), out["loc"].numpy()[..., 0]


def test_suppression_skips_the_neighbours_of_a_selected_cell():
  # One large sprite spread over (0, 0) and its neighbours (0, 1), (1, 1); a second sprite
  # at (3, 3) with less KL than the spill-over.
  kl_map = np.zeros([1, 4, 4], np.float32)
  kl_map[0, 0, 0], kl_map[0, 0, 1], kl_map[0, 1, 1], kl_map[0, 3, 3] = 9.0, 8.0, 7.0, 5.0
  plain, _, _ = _select(kl_map, 2, radius=0)
  np.testing.assert_array_equal(plain, [[0, 1]])  # The paper's top-N: two cells of sprite 1.
  suppressed, kl, loc = _select(kl_map, 2, radius=1)
  np.testing.assert_array_equal(suppressed, [[0, 15]])  # Sprite 1 once, then sprite 2.
  np.testing.assert_array_equal(kl, [[9.0, 5.0]])
  np.testing.assert_array_equal(loc, [[0.0, 15.0]])  # The gathered posteriors follow.


def test_suppression_radius_two_reaches_further():
  kl_map = np.zeros([1, 6, 6], np.float32)
  kl_map[0, 2, 2], kl_map[0, 0, 0], kl_map[0, 5, 5] = 9.0, 8.0, 3.0
  # (0, 0) is two cells from (2, 2): radius 1 keeps it, radius 2 suppresses it, and the
  # next pick is (5, 5), three cells away.
  np.testing.assert_array_equal(_select(kl_map, 2, radius=1)[0], [[14, 0]])
  np.testing.assert_array_equal(_select(kl_map, 2, radius=2)[0], [[14, 35]])


def test_when_everything_is_suppressed_the_rest_follow_by_kl_in_descending_order():
  kl_map = np.array([[[4.0, 3.0, 2.0], [1.0, 6.0, 5.0]]], np.float32)  # [1, 2, 3]
  # Radius 2 covers the whole 2x3 grid after the first pick: the rest come by KL, and the
  # result is sorted by KL.
  indices, kl, _ = _select(kl_map, 4, radius=2)
  np.testing.assert_array_equal(indices, [[4, 5, 0, 1]])
  np.testing.assert_array_equal(kl, [[6.0, 5.0, 4.0, 3.0]])


def test_suppression_never_picks_a_cell_twice_and_batches_independently():
  rng = np.random.RandomState(3)
  kl_map = rng.exponential(size=(6, 4, 4)).astype(np.float32)
  indices, kl, _ = _select(kl_map, 7, radius=1)
  assert indices.shape == (6, 7) and kl.shape == (6, 7)
  for row, scene in zip(indices, kl_map):
    assert len(set(row)) == 7
    single, _, _ = _select(scene[None], 7, radius=1)
    np.testing.assert_array_equal(single[0], row)
  assert np.all(np.diff(kl, axis=1) <= 0)


def test_suppression_gradient_reaches_the_selected_posteriors():
  kl_map = tf.constant([[[9.0, 8.0], [0.0, 5.0]]])
  loc = tf.Variable(tf.ones([1, 2, 2, 3]))
  with tf.GradientTape() as tape:
    out = selection.TopKByKL(2, suppression_radius=1)(loc, tf.ones([1, 2, 2, 3]), kl_map)
    total = tf.reduce_sum(out["loc"])
  grad = tape.gradient(total, loc).numpy()[0, ..., 0]
  # On a 2x2 grid radius 1 suppresses everything: picks (0, 0) then (0, 1) by KL.
  np.testing.assert_array_equal(grad, [[1.0, 1.0], [0.0, 0.0]])


def test_a_negative_radius_is_refused():
  with pytest.raises(ValueError, match=r"`suppression_radius`. Expected an integer >= 0"):
    selection.TopKByKL(3, suppression_radius=-1)


def _select_ratio(kl_map, num_objects, radius, ratio):
  b, h, w = kl_map.shape
  loc = np.tile(np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1), [b, 1, 1, 1])
  out = selection.TopKByKL(num_objects, suppression_radius=radius, suppression_kl_ratio=ratio)(
      tf.constant(loc), tf.constant(loc + 1.0), tf.constant(kl_map, tf.float32))
  return out["indices"].numpy(), out["kl"].numpy()


def test_a_kl_ratio_keeps_a_second_sprite_beside_the_first_but_skips_a_fragment():
  # Sprite 1 at (1, 1) with KL 10 and a fragment of it at (1, 2) with KL 3; sprite 2 at
  # (0, 0), beside sprite 1, with KL 8; background elsewhere at 0.5 or less.
  kl_map = np.full([1, 4, 4], 0.5, np.float32)
  kl_map[0, 1, 1], kl_map[0, 1, 2], kl_map[0, 0, 0], kl_map[0, 3, 3] = 10.0, 3.0, 8.0, 0.2
  # Plain suppression skips sprite 2 with the fragment; the third pick is background.
  plain, _ = _select_ratio(kl_map, 3, radius=1, ratio=1.0)
  np.testing.assert_array_equal(plain[0, :1], [5])
  assert 0 not in plain[0] and 6 not in plain[0]
  # ρ = 0.5: 8 > 0.5 * 10 keeps sprite 2; 3 <= 5 skips the fragment. After sprite 2 (KL 8)
  # its own neighbours below 4 are skipped too, so the third pick is background.
  indices, kl = _select_ratio(kl_map, 3, radius=1, ratio=0.5)
  np.testing.assert_array_equal(indices[0, :2], [5, 0])
  np.testing.assert_array_equal(kl[0, :2], [10.0, 8.0])
  assert 6 not in indices[0] and kl[0, 2] == 0.5
  # ρ = 0.25: 3 > 2.5, so the fragment is kept as well, after the two sprites.
  np.testing.assert_array_equal(_select_ratio(kl_map, 3, radius=1, ratio=0.25)[0], [[5, 0, 6]])


def test_a_kl_ratio_near_one_is_plain_suppression():
  rng = np.random.RandomState(5)
  kl_map = rng.exponential(size=(6, 5, 5)).astype(np.float32)
  plain, plain_kl = _select_ratio(kl_map, 6, radius=1, ratio=1.0)
  near_one, near_one_kl = _select_ratio(kl_map, 6, radius=1, ratio=1.0 - 1e-6)
  np.testing.assert_array_equal(near_one, plain)
  np.testing.assert_array_equal(near_one_kl, plain_kl)
  # And a small ratio differs: it lets neighbours through.
  assert not np.array_equal(_select_ratio(kl_map, 6, radius=1, ratio=0.05)[0], plain)


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan"), True, "0.5"])
def test_a_bad_kl_ratio_is_refused(bad):
  with pytest.raises(ValueError, match=r"`suppression_kl_ratio`. Expected a number in \(0, 1\]"):
    selection.TopKByKL(3, suppression_radius=1, suppression_kl_ratio=bad)
