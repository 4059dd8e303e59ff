"""Unsupervised object counting from KL maps (paper section 4.3).

The predicted count of a scene is the number of cells of its KL map above a threshold t.
The paper searches t on 6,400 training scenes and reports the accuracy of the best t on
12,800 new scenes (74.4% and 72.6%).

The search here is exact. Sort a scene's cells in descending KL, v_1 >= v_2 >= ... >= v_HW.
Its predicted count is c exactly when v_{c+1} <= t < v_c (with v_0 = +inf and
v_{HW+1} = -inf), so each scene is counted right on one half-open interval of thresholds.
The best accuracy is the largest number of these intervals that overlap at one point; a
sweep over the interval ends finds it, and we return the middle of the best region.

A reference for the grid (`centre_cell_counts`). A model that put every sprite into the
one cell holding its centre, and nothing anywhere else, would count the distinct cells
that hold a present sprite's centre: right unless two centres share a cell. Its accuracy
is what a perfect one-cell-per-sprite encoder could reach on that grid, a ceiling for the
KL read-out of a model that localises by cells.
"""

import numpy as np


def predicted_counts(kl_maps, threshold):
  """Cells above `threshold` per scene: [M, H, W] -> int [M]."""
  kl_maps = np.asarray(kl_maps)
  return np.sum(kl_maps.reshape(len(kl_maps), -1) > threshold, axis=1)


def _correct_intervals(kl_maps, counts):
  """Per scene, the [low, high) thresholds under which its predicted count is right."""
  values = -np.sort(-np.asarray(kl_maps, np.float64).reshape(len(kl_maps), -1), axis=1)
  # `values` has shape [M, H*W], each row descending.
  num_cells = values.shape[1]
  padded = np.concatenate([np.full((len(values), 1), np.inf), values,
                           np.full((len(values), 1), -np.inf)], axis=1)  # [M, H*W + 2]
  counts = np.asarray(counts, np.int64)
  if counts.shape != (len(values),):
    raise ValueError(f"Expected counts of shape [{len(values)}]. Received: {counts.shape}")
  if np.any(counts < 0):
    raise ValueError("Expected counts >= 0.")
  clipped = np.minimum(counts, num_cells)
  high = padded[np.arange(len(values)), clipped]  # v_c
  low = padded[np.arange(len(values)), clipped + 1]  # v_{c+1}
  impossible = counts > num_cells
  low[impossible], high[impossible] = np.inf, np.inf  # An empty interval.
  return low, high


def search_threshold(kl_maps, counts):
  """The threshold that maximises count accuracy on (kl_maps, counts).

  Args:
    kl_maps: [M, H, W] KL values.
    counts: int [M], the true numbers of objects.

  Returns:
    (threshold, accuracy): the middle of the best region, and the accuracy there.
  """
  low, high = _correct_intervals(kl_maps, counts)
  starts = np.sort(low[low < np.inf])  # Empty intervals never start.
  ends = np.sort(high)
  candidates = np.unique(starts[np.isfinite(starts)])
  if len(candidates) == 0:
    candidates = np.array([0.0])
  # Scenes right at t: intervals begun at or before t, minus those ended at or before t.
  coverage = (np.searchsorted(starts, candidates, side="right")
              - np.searchsorted(ends, candidates, side="right"))
  best = int(np.argmax(coverage))
  t_low = candidates[best]
  endpoints = np.concatenate([starts, ends])
  above = endpoints[endpoints > t_low]
  t_high = above.min() if len(above) else np.inf
  threshold = 0.5 * (t_low + t_high) if np.isfinite(t_high) else t_low + 1.0
  return float(threshold), float(coverage[best]) / len(low)


def centre_cell_counts(position, present, grid_size):
  """How many distinct cells of a grid_size x grid_size grid hold a present sprite's centre.

  Args:
    position: [M, S, 2] sprite centres (y, x) as fractions of the image side, in [0, 1].
    present: [M, S], nonzero where the sprite slot is filled.
    grid_size: H = W of the grid.

  Returns:
    int [M].
  """
  position = np.asarray(position, np.float64)
  present = np.asarray(present) != 0
  if position.ndim != 3 or position.shape[2] != 2 or present.shape != position.shape[:2]:
    raise ValueError("Expected position [M, S, 2] and present [M, S]. Received: "
                     f"{position.shape} and {present.shape}")
  cell = np.clip(np.floor(position * grid_size), 0, grid_size - 1).astype(np.int64)
  index = cell[..., 0] * grid_size + cell[..., 1]  # [M, S], row-major cell index
  occupied = np.zeros([len(index), grid_size * grid_size], bool)  # [M, H*W]
  rows = np.broadcast_to(np.arange(len(index))[:, None], index.shape)  # [M, S]
  occupied[rows[present], index[present]] = True
  return occupied.sum(axis=1)


def count_accuracy(kl_maps, counts, threshold):
  """The fraction of scenes whose predicted count equals the true count."""
  return float(np.mean(predicted_counts(kl_maps, threshold) == np.asarray(counts)))


def confusion_matrix(true_counts, predicted, max_count):
  """Entry (i, j) counts scenes of i objects predicted as j.

  Rows run over 0..max_count; columns over 0..max(max_count, largest prediction), so that
  over-counts beyond max_count stay visible and the trace over all scenes is the number
  counted right.
  """
  true_counts, predicted = np.asarray(true_counts), np.asarray(predicted)
  columns = max(max_count, int(predicted.max(initial=0))) + 1
  matrix = np.zeros([max_count + 1, columns], np.int64)
  np.add.at(matrix, (true_counts, predicted), 1)
  return matrix
