"""Maximal-information attention: keep the N candidates with the largest KL (section 2.1).

To reconstruct the image the encoder must put much information where objects are and little
elsewhere, so object cells have high KL against the prior and background cells low KL.
Keeping the top-N cells by KL therefore keeps the objects; the spatial structure is dropped
and each kept object carries the relative grid coordinates of the cell it came from.

Suppression (an option, not in the paper). A sprite larger than a cell, or on a cell
border, can spread its information over neighbouring cells, which the top-N then select as
two objects. With `suppression_radius=r > 0` selection is greedy non-maximum suppression:
take the cell of largest KL, then ignore every cell within Chebyshev distance r of it
(r = 1: its 8 neighbours), and repeat. When fewer than N cells are left unsuppressed the
remaining picks are the suppressed cells in descending KL, so N objects are always kept.
The selected objects are returned in descending KL either way.

Suppression by KL ratio (an option). Radius-1 suppression on an 8x8 grid also skips a
second sprite that sits in the cell beside the first: two sprites under about 16 pixels
apart are then read as one (docs/counting_study.md, round 10). With `suppression_kl_ratio=ρ < 1` a
neighbour of a selected cell i is suppressed only if

  KL_j <= ρ · KL_i,

so a neighbour that carries little information (a fragment of sprite i, or background)
is skipped, while one that carries nearly as much as i (a sprite of its own) stays
selectable. ρ = 1 suppresses every neighbour (no unsuppressed cell has more KL than the
cell just picked), which is the plain suppression above.
"""

import numpy as np

import keras
import tensorflow as tf

from mvae_tf import encoder
from mvae_tf.config import check_int
from mvae_tf.config import check_ratio


class TopKByKL(keras.layers.Layer):
  """Selects the `num_objects` grid cells of largest KL, sorted by descending KL.

  Args:
    num_objects: N, how many cells to keep; at most H * W.
    suppression_radius: 0 (the paper's plain top-N), or r >= 1 to suppress the cells within
      Chebyshev distance r of each selected one (see the module docstring).
    suppression_kl_ratio: ρ in (0, 1]: suppress only the neighbours with at most ρ times the
      selected cell's KL; 1 (the default) suppresses them all.

  Call arguments:
    loc, scale: float32 [B, H, W, D], the candidates' posterior parameters.
    kl_map: float32 [B, H, W], each candidate's KL against the prior.

  Returns:
    A dict with
      loc, scale: [B, N, D], the selected posteriors' parameters;
      kl: [B, N], their KL values, descending;
      coords: [B, N, 2], their cells' relative (y, x) in [-1, 1];
      indices: int32 [B, N], their cells' indices in the row-major flattened grid;
      kl_map: [B, H, W], the input KL map.
  """

  def __init__(self, num_objects, suppression_radius=0, suppression_kl_ratio=1.0, **kwargs):
    super().__init__(**kwargs)
    check_int("num_objects", num_objects, 1)
    check_int("suppression_radius", suppression_radius, 0)
    check_ratio("suppression_kl_ratio", suppression_kl_ratio)
    self.num_objects = num_objects
    self.suppression_radius = suppression_radius
    self.suppression_kl_ratio = float(suppression_kl_ratio)

  def call(self, loc, scale, kl_map):
    height, width = kl_map.shape[1], kl_map.shape[2]
    if height is not None and width is not None and height * width < self.num_objects:
      raise ValueError(f"TopKByKL cannot keep num_objects={self.num_objects} of a "
                       f"{height}x{width} grid of {height * width} candidates")
    shape = tf.shape(loc)
    batch, num_cells, dim = shape[0], shape[1] * shape[2], shape[3]
    flat_kl = tf.reshape(kl_map, [batch, num_cells])  # [B, H*W]
    flat_loc = tf.reshape(loc, [batch, num_cells, dim])  # [B, H*W, D]
    flat_scale = tf.reshape(scale, [batch, num_cells, dim])  # [B, H*W, D]
    if self.suppression_radius:
      indices = self._suppressed_top_k(flat_kl, height, width)  # [B, N]
    else:
      _, indices = tf.math.top_k(flat_kl, k=self.num_objects, sorted=True)  # [B, N]
    kl = tf.gather(flat_kl, indices, batch_dims=1)  # [B, N]
    coords = encoder.relative_coordinates(shape[1], shape[2])  # [H, W, 2]
    flat_coords = tf.reshape(coords, [num_cells, 2])  # [H*W, 2]
    return {
        "loc": tf.gather(flat_loc, indices, batch_dims=1),  # [B, N, D]
        "scale": tf.gather(flat_scale, indices, batch_dims=1),  # [B, N, D]
        "kl": kl,
        "coords": tf.gather(flat_coords, indices),  # [B, N, 2]
        "indices": indices,
        "kl_map": kl_map,
    }

  def _suppressed_top_k(self, flat_kl, height, width):
    """Greedy non-maximum suppression over the grid: [B, H*W] -> indices [B, N], by KL."""
    if height is None or width is None:
      raise ValueError("TopKByKL with suppression needs a static grid size; received "
                       f"{height}x{width}")
    ys, xs = np.divmod(np.arange(height * width), width)  # [H*W] each
    near = ((np.abs(ys[:, None] - ys[None, :]) <= self.suppression_radius)
            & (np.abs(xs[:, None] - xs[None, :]) <= self.suppression_radius))
    near = tf.constant(near)  # [H*W, H*W]: cell j is within r of cell i
    # Unsuppressed cells rank by KL; suppressed ones rank below every unsuppressed one
    # (KL >= 0), still by KL; taken ones never again.
    below = tf.reduce_max(flat_kl, axis=1, keepdims=True) + 1.0  # [B, 1]
    suppressed = tf.zeros_like(flat_kl, tf.bool)  # [B, H*W]
    taken = tf.zeros_like(flat_kl, tf.bool)
    picks = []
    for _ in range(self.num_objects):
      score = tf.where(suppressed, flat_kl - below, flat_kl)
      score = tf.where(taken, -np.inf, score)  # [B, H*W]
      pick = tf.argmax(score, axis=1, output_type=tf.int32)  # [B]
      picks.append(pick)
      taken |= tf.one_hot(pick, height * width, on_value=True, off_value=False)
      near_pick = tf.gather(near, pick)  # [B, H*W]: the cells within r of this pick
      if self.suppression_kl_ratio < 1.0:
        # Only the neighbours with little KL beside the pick's: fragments, not sprites.
        pick_kl = tf.gather(flat_kl, pick, batch_dims=1)  # [B]
        near_pick &= flat_kl <= self.suppression_kl_ratio * pick_kl[:, None]  # [B, H*W]
      suppressed |= near_pick
    indices = tf.stack(picks, axis=1)  # [B, N], in selection order
    # Descending KL, as without suppression.
    _, order = tf.math.top_k(tf.gather(flat_kl, indices, batch_dims=1), k=self.num_objects)
    return tf.gather(indices, order, batch_dims=1)  # [B, N]

  def get_config(self):
    return {**super().get_config(), "num_objects": self.num_objects,
            "suppression_radius": self.suppression_radius,
            "suppression_kl_ratio": self.suppression_kl_ratio}
