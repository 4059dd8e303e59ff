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

Where the errors are (`error_rates_by_bin`). Two kinds of scene are miscounted most: a
large sprite whose information spreads over two cells (over-counted), and sprites close
enough to share a cell or to be described together (under-counted). Binning the test
scenes by the one sprite's scale and by the distance between the two nearest sprite
centres (`nearest_centre_distance`) measures both.
"""

import numpy as np

from mvae_tf.config import IMAGE_SIZE


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
  position, present = _sprite_arrays(position, present)
  cell = np.clip(np.floor(position * grid_size), 0, grid_size - 1).astype(np.int64)
  index = cell[..., 0] * grid_size + cell[..., 1]  # [M, S], row-major cell index
  occupied = np.zeros([len(index), grid_size * grid_size], bool)  # [M, H*W]
  rows = np.broadcast_to(np.arange(len(index))[:, None], index.shape)  # [M, S]
  occupied[rows[present], index[present]] = True
  return occupied.sum(axis=1)


def _sprite_arrays(position, present):
  """Checked float64 position [M, S, 2] and boolean present [M, S]."""
  position = np.asarray(position, np.float64)
  present = np.asarray(present) != 0
  if position.ndim != 3 or position.shape[2] != 2 or present.shape != position.shape[:2]:
    raise ValueError("Expected position [M, S, 2] and present [M, S]. Received: "
                     f"{position.shape} and {present.shape}")
  return position, present


def nearest_centre_distance(position, present, image_size=IMAGE_SIZE):
  """The distance in pixels between the two closest present sprite centres of each scene.

  Args:
    position: [M, S, 2] sprite centres (y, x) as fractions of the image side.
    present: [M, S], nonzero where the sprite slot is filled.
    image_size: pixels on a side.

  Returns:
    float64 [M]; inf for a scene with fewer than two sprites.
  """
  position, present = _sprite_arrays(position, present)
  num_slots = position.shape[1]
  offsets = position[:, :, None, :] - position[:, None, :, :]  # [M, S, S, 2]
  distance = image_size * np.sqrt(np.sum(offsets**2, axis=-1))  # [M, S, S]
  pairs = present[:, :, None] & present[:, None, :] & ~np.eye(num_slots, dtype=bool)
  # `pairs` has shape [M, S, S]: both slots filled, and not a sprite with itself.
  return np.where(pairs, distance, np.inf).min(axis=(1, 2), initial=np.inf)


def bin_masks(values, edges):
  """Which of M values falls in each bin: bin i holds edges[i] <= value < edges[i + 1],
  and the last bin also value == edges[-1].

  Args:
    values: [M].
    edges: ascending bin edges, at least two.

  Returns:
    A list of (low, high, inside) per bin, `inside` a boolean [M].
  """
  values = np.asarray(values, np.float64)
  if len(edges) < 2 or np.any(np.diff(edges) <= 0):
    raise ValueError(f"Expected at least two ascending bin edges. Received: {list(edges)}")
  last = len(edges) - 2
  return [(float(low), float(high),
           (values >= low) & ((values < high) | ((values == high) & (i == last))))
          for i, (low, high) in enumerate(zip(edges[:-1], edges[1:]))]


def error_rates_by_bin(true_counts, predicted, values, edges):
  """Counting errors of scenes grouped by a per-scene value.

  Args:
    true_counts, predicted: int [M].
    values: [M], the value that places each scene in a bin.
    edges: ascending bin edges (`bin_masks`).

  Returns:
    One dict per bin: its `from` and `to`, its number of `scenes`, and the fractions of
    them counted right (`accuracy`), too low (`under`) and too high (`over`); the
    fractions are None for an empty bin.
  """
  true_counts, predicted = np.asarray(true_counts), np.asarray(predicted)
  values = np.asarray(values, np.float64)
  if not true_counts.shape == predicted.shape == values.shape or true_counts.ndim != 1:
    raise ValueError("Expected true_counts, predicted and values of one shape [M]. Received: "
                     f"{true_counts.shape}, {predicted.shape} and {values.shape}")
  bins = []
  for low, high, inside in bin_masks(values, edges):  # `inside`: [M]
    n = int(inside.sum())
    def rate(wrong):
      return float(np.mean(wrong[inside])) if n else None
    bins.append({"from": low, "to": high, "scenes": n,
                 "accuracy": rate(predicted == true_counts),
                 "under": rate(predicted < true_counts), "over": rate(predicted > true_counts)})
  return bins


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
