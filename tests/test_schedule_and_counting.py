"""The learning-rate annealing and object counting from KL maps (paper 4.3)."""

import numpy as np
import pytest

from mvae_tf import counting, schedule


def test_log_linear_decay_endpoints_and_midpoint():
  lr = schedule.LogLinearDecay(1e-3, 1e-5, 100)
  np.testing.assert_allclose(float(lr(0)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(lr(50)), 1e-4, rtol=1e-5)
  np.testing.assert_allclose(float(lr(100)), 1e-5, rtol=1e-5)
  np.testing.assert_allclose(float(lr(1000)), 1e-5, rtol=1e-5)
  assert schedule.LogLinearDecay(**lr.get_config()).get_config() == lr.get_config()


def test_log_linear_decay_rejects_bad_arguments():
  with pytest.raises(ValueError, match="decay_steps"):
    schedule.LogLinearDecay(1e-3, 1e-5, 0)


def _planted_maps(rng, counts, threshold, grid=4):
  """KL maps with exactly `count` cells above `threshold` (objects) and the rest below."""
  maps = rng.uniform(0.0, threshold * 0.9, size=(len(counts), grid, grid))
  for map_, count in zip(maps, counts):
    cells = rng.choice(grid * grid, size=count, replace=False)
    map_.reshape(-1)[cells] = rng.uniform(threshold * 1.1, threshold * 5, size=count)
  return maps


def test_threshold_search_recovers_a_planted_threshold():
  rng = np.random.RandomState(0)
  counts = rng.randint(0, 4, size=500)
  maps = _planted_maps(rng, counts, threshold=2.0)
  threshold, accuracy = counting.search_threshold(maps, counts)
  assert accuracy == 1.0
  assert 2.0 * 0.9 <= threshold <= 2.0 * 1.1
  assert counting.count_accuracy(maps, counts, threshold) == 1.0


def test_threshold_search_is_the_best_of_all_thresholds():
  rng = np.random.RandomState(1)
  maps = rng.exponential(1.0, size=(300, 3, 3))
  counts = rng.randint(0, 4, size=300)
  threshold, accuracy = counting.search_threshold(maps, counts)
  brute = max(counting.count_accuracy(maps, counts, t)
              for t in np.concatenate([np.unique(maps) - 1e-9, np.unique(maps) + 1e-9]))
  assert accuracy == pytest.approx(brute)
  # The returned threshold achieves the reported accuracy, not just some threshold does.
  assert counting.count_accuracy(maps, counts, threshold) == pytest.approx(accuracy)


def test_threshold_is_the_middle_of_the_best_gap():
  # A cell counts when its KL exceeds the threshold t. Scene 1 (1 object, cells 1 and 7)
  # is right for t in [1, 7); scene 2 (2 objects, cells 5 and 9) for t < 5; so both for t in
  # [1, 5), and the search returns the middle of that interval: 3.
  maps = np.array([[[1.0, 7.0]], [[5.0, 9.0]]])
  threshold, accuracy = counting.search_threshold(maps, np.array([1, 2]))
  assert accuracy == 1.0
  assert threshold == pytest.approx(3.0)


def test_count_accuracy_and_confusion_of_a_planted_map():
  maps = np.array([[[0.0, 5.0], [6.0, 0.1]],   # 2 cells above 1
                   [[0.0, 0.0], [0.0, 0.0]],   # 0
                   [[9.0, 9.0], [9.0, 0.0]]])  # 3
  counts = np.array([2, 1, 3])
  np.testing.assert_array_equal(counting.predicted_counts(maps, 1.0), [2, 0, 3])
  assert counting.count_accuracy(maps, counts, 1.0) == pytest.approx(2 / 3)
  matrix = counting.confusion_matrix(counts, counting.predicted_counts(maps, 1.0), 3)
  expected = np.zeros((4, 4), int)
  expected[2, 2] = expected[1, 0] = expected[3, 3] = 1
  np.testing.assert_array_equal(matrix, expected)
  # An over-count beyond max_count gets its own column, off the diagonal.
  wide = counting.confusion_matrix([3, 1], [5, 1], 3)
  assert wide.shape == (4, 6) and wide[3, 5] == 1 and np.trace(wide) == 1


def test_centre_cell_counts_distinct_cells_of_present_centres():
  position = np.array([[[0.1, 0.1], [0.2, 0.2], [0.9, 0.9]],     # two centres in cell (0, 0)
                       [[0.1, 0.1], [0.3, 0.1], [0.3, 0.1]],     # third slot empty
                       [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]],     # all empty
                       [[0.25, 0.0], [1.0, 1.0], [0.24, 0.0]]])  # edges: 0.25 is cell 1
  present = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]])
  np.testing.assert_array_equal(counting.centre_cell_counts(position, present, 4),
                                [1, 2, 0, 3])
  # On a finer grid the first scene's two centres fall in cells (0, 0) and (1, 1).
  np.testing.assert_array_equal(counting.centre_cell_counts(position, present, 8),
                                [2, 2, 0, 3])


def test_nearest_centre_distance_in_pixels():
  position = np.array([[[0.1, 0.1], [0.2, 0.2], [0.9, 0.9]],      # third slot empty
                       [[0.5, 0.5], [0.5, 0.75], [0.5, 0.0]],     # all three present
                       [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]])     # one present
  present = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 0]])
  np.testing.assert_allclose(counting.nearest_centre_distance(position, present),
                             [64 * np.sqrt(0.02), 16.0, np.inf])
  np.testing.assert_allclose(
      counting.nearest_centre_distance(position[:2], present[:2], image_size=32),
      [32 * np.sqrt(0.02), 8.0])


@pytest.mark.parametrize("position_shape, present_shape",
                         [((2, 3), (2, 3)), ((2, 3, 3), (2, 3)), ((2, 3, 2), (2, 2))])
@pytest.mark.parametrize("function", [
    lambda position, present: counting.centre_cell_counts(position, present, 4),
    counting.nearest_centre_distance])
def test_sprite_functions_reject_bad_shapes(position_shape, present_shape, function):
  with pytest.raises(ValueError, match=r"Expected position \[M, S, 2\] and present \[M, S\]"):
    function(np.zeros(position_shape), np.ones(present_shape))


def test_error_rates_by_bin_known_answers():
  true = np.array([1, 1, 1, 2, 2, 2, 1])
  predicted = np.array([1, 2, 0, 2, 1, 1, 2])
  values = np.array([0.5, 0.6, 0.7, 0.9, 1.0, 0.55, 3.0])  # 3.0 is outside every bin.
  bins = counting.error_rates_by_bin(true, predicted, values, [0.5, 0.65, 0.8, 1.0])
  assert [(b["from"], b["to"], b["scenes"]) for b in bins] == [
      (0.5, 0.65, 3), (0.65, 0.8, 1), (0.8, 1.0, 2)]  # 1.0 is in the last bin.
  # Bin 1: right, over, under (scenes 0, 1, 5); bin 2: under; bin 3: right, under.
  assert bins[0]["accuracy"] == pytest.approx(1 / 3)
  assert (bins[0]["under"], bins[0]["over"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
  assert (bins[1]["accuracy"], bins[1]["under"], bins[1]["over"]) == (0.0, 1.0, 0.0)
  assert (bins[2]["accuracy"], bins[2]["under"], bins[2]["over"]) == (0.5, 0.5, 0.0)
  empty = counting.error_rates_by_bin(true, predicted, values, [5.0, 6.0])
  assert empty == [{"from": 5.0, "to": 6.0, "scenes": 0, "accuracy": None, "under": None,
                    "over": None}]


@pytest.mark.parametrize("values, edges, message", [
    (np.zeros(3), [0.0, 1.0], "of one shape"),
    (np.zeros(4), [1.0], "at least two ascending"),
    (np.zeros(4), [0.0, 2.0, 1.0], "at least two ascending")])
def test_error_rates_by_bin_rejects_bad_input(values, edges, message):
  with pytest.raises(ValueError, match=message):
    counting.error_rates_by_bin(np.ones(4), np.ones(4), values, edges)


def test_decoder_readout_counts_objects_that_paint_enough_pixels():
  from mvae_tf import evaluation
  # Pixels painted by each selected object's solo decode; surplus objects paint a few.
  search = np.array([[500, 3, 0], [400, 300, 2], [9, 4, 0], [350, 250, 180]])[:, None, :]
  counts = np.array([1, 2, 0, 3])
  test = np.array([[600, 20, 1], [5, 0, 0], [90, 80, 5]])[:, None, :]
  threshold, search_accuracy, scored = evaluation._searched_count(
      search, counts, test, np.array([1, 0, 2]), num_sprites=3)
  # Any threshold in [9, 180) counts the search scenes right; the middle is 94.5, which
  # reads the third test scene (90 and 80 pixels) as empty.
  assert search_accuracy == 1.0 and threshold == pytest.approx(94.5)
  assert scored["accuracy"] == pytest.approx(2 / 3)
  assert scored["confusion_true_by_predicted"][2][0] == 1
