"""Maximal-information attention: keep the N candidates with the largest KL (section 2.1).

To reconstruct the image the encoder must put much information where objects are and little
elsewhere, so object cells have high KL against the prior and background cells low KL.
Keeping the top-N cells by KL therefore keeps the objects; the spatial structure is dropped
and each kept object carries the relative grid coordinates of the cell it came from.
"""

import keras
import tensorflow as tf

from mvae_tf import encoder


class TopKByKL(keras.layers.Layer):
  """Selects the `num_objects` grid cells of largest KL, sorted by descending KL.

  Args:
    num_objects: N, how many cells to keep; at most H * W.

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

  def __init__(self, num_objects, **kwargs):
    super().__init__(**kwargs)
    if isinstance(num_objects, bool) or not isinstance(num_objects, int) or num_objects < 1:
      raise ValueError("Invalid value received for argument `num_objects`. Expected an "
                       f"integer >= 1. Received: num_objects={num_objects!r}")
    self.num_objects = num_objects

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
    kl, indices = tf.math.top_k(flat_kl, k=self.num_objects, sorted=True)  # [B, N] each
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

  def get_config(self):
    return {**super().get_config(), "num_objects": self.num_objects}
