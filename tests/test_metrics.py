"""Known answers for the segmentation metrics."""

import numpy as np
import pytest

from mvae_tf import metrics


def test_ari_of_identical_partitions_is_one_whatever_the_labels():
  rng = np.random.RandomState(0)
  labels = rng.randint(0, 4, size=200)
  assert metrics.adjusted_rand_index(labels, labels) == pytest.approx(1.0)
  permuted = np.array([3, 0, 2, 1])[labels]  # The same partition under other names.
  assert metrics.adjusted_rand_index(labels, permuted) == pytest.approx(1.0)


def test_ari_of_independent_partitions_is_near_zero():
  rng = np.random.RandomState(0)
  a, b = rng.randint(0, 3, size=5000), rng.randint(0, 3, size=5000)
  assert abs(metrics.adjusted_rand_index(a, b)) < 0.01


def test_ari_known_value():
  # Hubert & Arabie by hand, n = 4 points, C(4, 2) = 6 pairs.
  # Table [[2, 0], [1, 1]]: index = 1, row pairs 1 + 1 = 2, column pairs 3 + 0 = 3,
  # expected = 2 * 3 / 6 = 1, max = 2.5, so ARI = (1 - 1) / (2.5 - 1) = 0.
  assert metrics.adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0)
  # Table [[1, 1], [1, 1]]: index = 0, row and column pairs 2, expected = 2 / 3,
  # max = 2, so ARI = (0 - 2/3) / (2 - 2/3) = -0.5.
  assert metrics.adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)


def test_foreground_ari_ignores_the_background():
  true_masks = np.zeros((3, 4, 4))
  true_masks[0] = 1.0
  true_masks[:, 0, :2] = [[0, 0], [1, 1], [0, 0]]  # Sprite 1 at row 0, cols 0-1.
  true_masks[:, 3, 2:] = [[0, 0], [0, 0], [1, 1]]  # Sprite 2 at row 3, cols 2-3.
  pred = np.full((4, 4), 7)  # Background pixels predicted anything at all.
  pred[0, :2] = 1
  pred[3, 2:] = 2
  assert metrics.foreground_ari(true_masks, pred) == pytest.approx(1.0)
  pred[1:3] = np.arange(4)  # Changing background predictions changes nothing.
  assert metrics.foreground_ari(true_masks, pred) == pytest.approx(1.0)
  pred[3, 2:] = 1  # Merging the two sprites does.
  assert metrics.foreground_ari(true_masks, pred) == pytest.approx(0.0)
  background_only = np.stack([np.ones((2, 2)), np.zeros((2, 2))])
  assert np.isnan(metrics.foreground_ari(background_only, np.zeros((2, 2))))


def test_solo_decode_labels_pick_the_object_that_draws_the_pixel():
  images = np.zeros((1, 2, 2, 3))
  images[0, 0, 0] = [1.0, 0.0, 0.0]  # Red pixel.
  images[0, 1, 1] = [0.0, 0.0, 1.0]  # Blue pixel.
  solo = np.full((1, 2, 2, 2, 3), 0.01)
  solo[0, 0, 0, 0] = [0.99, 0.01, 0.01]  # Object 0 draws the red pixel.
  solo[0, 1, 1, 1] = [0.01, 0.01, 0.99]  # Object 1 draws the blue pixel.
  labels = metrics.solo_decode_labels(images, solo)
  assert labels[0, 0, 0] == 0 and labels[0, 1, 1] == 1


def test_iou():
  a = np.array([[1, 1], [0, 0]], bool)
  b = np.array([[1, 0], [1, 0]], bool)
  assert metrics.iou(a, b) == pytest.approx(1 / 3)
  assert metrics.iou(a, a) == 1.0
  assert metrics.iou(np.zeros(3), np.zeros(3)) == 1.0
