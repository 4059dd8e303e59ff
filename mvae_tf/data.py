"""Multi-object dSprites, generated on the fly (paper appendix A, "Data generation").

A scene is a 64x64 RGB image on a black background holding up to `num_sprites` sprites.
Each sprite slot is filled independently with probability `presence_prob`; a filled slot
draws

* a shape from dSprites: square (0), ellipse (1) or heart (2);
* a scale in [0.5, 1];
* an orientation in [0, 2*pi);
* a centre (y, x), in [0.15, 0.85] of the image side;
* an RGB colour whose brightest channel is in [0.5, 1], so that every sprite is visible.

Colours of overlapping sprites are summed and clipped at 1, as the paper says.

Masks (what evaluation needs). `masks[:, 0]` is the background; `masks[:, 1 + k]` is sprite
slot k. They partition every pixel: a pixel covered by c >= 1 sprites gives each of them
1 / c, so a pixel where sprites overlap is shared equally among them (the blending is a
sum, so no sprite is "on top"). Because of this rule a present sprite always has a
non-empty mask, even when other sprites cover it entirely.

Determinism. Batch number `i` of `make_dataset(..., seed=s)` is a pure function of
(s, i, batch_size, num_sprites, presence_prob): every random number comes from
`tf.random.stateless_uniform` seeded with (s, i). Any evaluation set can therefore be
regenerated bit for bit from its seed, whatever the pipeline's parallelism.
"""

import math

import tensorflow as tf

from mvae_tf.config import IMAGE_SIZE, check_int, validate_data_args
SHAPE_NAMES = ("square", "ellipse", "heart")
MIN_SCALE, MAX_SCALE = 0.5, 1.0
MIN_POSITION, MAX_POSITION = 0.15, 0.85
MIN_BRIGHTNESS = 0.5
# Half the side of a scale-1 sprite's bounding box, as a fraction of the image side.
SPRITE_RADIUS = 0.16

# Columns of the per-sprite uniform draws.
_PRESENT, _SHAPE, _SCALE, _ORIENT, _POS_Y, _POS_X, _COL_R, _COL_G, _COL_B, _BRIGHT = range(10)
_NUM_DRAWS = 10


def _shape_inside(shape, u, v):
  """Whether local sprite coordinates (u, v) lie inside the unit-radius sprite.

  Args:
    shape: int32 [B, S, 1, 1] shape index.
    u, v: float32 [B, S, 64, 64] coordinates in the sprite's rotated frame, divided by the
      sprite's radius, so the sprite lies within [-1, 1]^2. `v` grows downwards.

  Returns:
    bool [B, S, 64, 64].
  """
  square = tf.maximum(tf.abs(u), tf.abs(v)) <= 0.8
  ellipse = tf.square(u) + tf.square(v / 0.5) <= 1.0
  # Implicit heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, y pointing up; spans about
  # x in [-1.14, 1.14], y in [-1, 1.25], so it is shrunk and shifted into [-1, 1]^2.
  hx = 1.15 * u
  hy = -1.15 * v + 0.12
  heart = tf.pow(tf.square(hx) + tf.square(hy) - 1.0, 3) - tf.square(hx) * tf.pow(hy, 3) <= 0.0
  return tf.where(shape == 0, square, tf.where(shape == 1, ellipse, heart))


# Each sprite is rendered in a WINDOW x WINDOW pixel window around its centre, then placed in
# the image. A sprite lies within [-1, 1]^2 of its own frame (`_shape_inside`), so within
# sqrt(2) * SPRITE_RADIUS * MAX_SCALE * 64 = 14.5 pixels of its centre, and a 32-pixel window
# starting 16 pixels before the centre's pixel holds every pixel it can cover.
WINDOW = 32


def _sprite_windows(position):
  """Each sprite's window: its first row and column, clipped into the image.

  Args:
    position: float32 [B, S, 2], (y, x) centres as fractions of the image side.

  Returns:
    int32 [B, S, 2], the (row, column) of each window's top-left pixel.
  """
  centre_pixel = tf.cast(tf.floor(position * IMAGE_SIZE), tf.int32)  # [B, S, 2]
  return tf.clip_by_value(centre_pixel - WINDOW // 2, 0, IMAGE_SIZE - WINDOW)


def _place(windows, start):
  """Puts each sprite's window back in the full image: [B, S, W, W] -> [B, S, 64, 64].

  Pixel (i, j) of the image is pixel (i - row, j - column) of the window, and 0 outside it:
  image = P_rows^T . window . P_cols with one-hot placement matrices P [W, 64], which is
  exact (each output sums one window value times 1 and zeros) and, as batched matrix
  products, faster than gathering.
  """
  window = tf.range(WINDOW)[None, None, :]  # [1, 1, W]
  place_rows = tf.one_hot(start[:, :, 0, None] + window, IMAGE_SIZE)  # [B, S, W, 64]
  place_cols = tf.one_hot(start[:, :, 1, None] + window, IMAGE_SIZE)  # [B, S, W, 64]
  rows_placed = tf.linalg.matmul(place_rows, windows, transpose_a=True)  # [B, S, 64, W]
  return tf.linalg.matmul(rows_placed, place_cols)  # [B, S, 64, 64]


def render_scenes(present, shape, scale, orientation, position, colour):
  """Renders scenes from sprite factors.

  Every pixel's coverage is the same function of its centre as if the whole image were
  evaluated; only pixels too far from a sprite to be covered (outside its `WINDOW`) are
  skipped, which makes rendering several times cheaper.

  Args:
    present: float32 [B, S], 1 where sprite slot s holds a sprite.
    shape: int32 [B, S] in {0, 1, 2}.
    scale: float32 [B, S].
    orientation: float32 [B, S], radians.
    position: float32 [B, S, 2], the (y, x) centre as a fraction of the image side.
    colour: float32 [B, S, 3] in [0, 1].

  Returns:
    image: float32 [B, 64, 64, 3], the clipped sum of the sprites' colours.
    masks: float32 [B, S + 1, 64, 64], background first; see the module docstring.
  """
  centres = (tf.range(IMAGE_SIZE, dtype=tf.float32) + 0.5) / IMAGE_SIZE  # [64]
  start = _sprite_windows(position)  # [B, S, 2]
  window = tf.range(WINDOW)[None, None, :]  # [1, 1, W]
  py = tf.gather(centres, start[:, :, 0, None] + window)[:, :, :, None]  # [B, S, W, 1]
  px = tf.gather(centres, start[:, :, 1, None] + window)[:, :, None, :]  # [B, S, 1, W]
  dy = py - position[:, :, 0, None, None]  # [B, S, W, 1]
  dx = px - position[:, :, 1, None, None]  # [B, S, 1, W]
  cos = tf.cos(orientation)[:, :, None, None]  # [B, S, 1, 1]
  sin = tf.sin(orientation)[:, :, None, None]
  radius = (SPRITE_RADIUS * scale)[:, :, None, None]  # [B, S, 1, 1]
  u = (cos * dx + sin * dy) / radius  # [B, S, W, W]
  v = (-sin * dx + cos * dy) / radius  # [B, S, W, W]
  inside = _shape_inside(shape[:, :, None, None], u, v)  # [B, S, W, W]
  cover = _place(tf.cast(inside, tf.float32), start) * present[:, :, None, None]
  # `cover` has shape [B, S, 64, 64].
  image = tf.einsum("bshw,bsc->bhwc", cover, colour)  # [B, 64, 64, 3]
  image = tf.minimum(image, 1.0)
  depth = tf.reduce_sum(cover, axis=1, keepdims=True)  # [B, 1, 64, 64]
  sprite_masks = cover / tf.maximum(depth, 1.0)  # [B, S, 64, 64]
  background = tf.cast(depth == 0.0, tf.float32)  # [B, 1, 64, 64]
  masks = tf.concat([background, sprite_masks], axis=1)  # [B, S + 1, 64, 64]
  return image, masks


def sample_batch(batch_index, num_sprites, batch_size, seed, presence_prob, rows=None):
  """Draws batch number `batch_index` of the stream: a pure function of its arguments.

  `rows` = (start, size) renders only those rows of the batch (one worker's share of a
  global batch), bit-identical to the same rows of the whole batch.

  Returns a dict of tensors; see `make_dataset`.
  """
  draws = tf.random.stateless_uniform(
      [batch_size, num_sprites, _NUM_DRAWS],
      seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(batch_index, tf.int64)]))
  if rows is not None:
    start, size = rows
    draws = draws[start:start + size]  # [size, S, _NUM_DRAWS]
  present = tf.cast(draws[..., _PRESENT] < presence_prob, tf.float32)  # [B, S]
  shape = tf.minimum(tf.cast(draws[..., _SHAPE] * 3.0, tf.int32), 2)  # [B, S]
  scale = MIN_SCALE + (MAX_SCALE - MIN_SCALE) * draws[..., _SCALE]  # [B, S]
  orientation = 2.0 * math.pi * draws[..., _ORIENT]  # [B, S]
  position = MIN_POSITION + (MAX_POSITION - MIN_POSITION) * draws[..., _POS_Y:_POS_X + 1]
  # `position` has shape [B, S, 2], (y, x).
  hue = draws[..., _COL_R:_COL_B + 1]  # [B, S, 3]
  brightness = MIN_BRIGHTNESS + (1.0 - MIN_BRIGHTNESS) * draws[..., _BRIGHT]  # [B, S]
  colour = hue / tf.reduce_max(hue, axis=-1, keepdims=True) * brightness[..., None]
  image, masks = render_scenes(present, shape, scale, orientation, position, colour)
  return {
      "image": image,
      "count": tf.cast(tf.reduce_sum(present, axis=1), tf.int32),
      "masks": masks,
      "present": present,
      "shape": shape,
      "scale": scale,
      "orientation": orientation,
      "position": position,
      "colour": colour,
  }


def make_dataset(num_sprites, batch_size, seed, presence_prob=0.5, num_batches=None,
                 first_batch=0, rows=None):
  """The multi-object dSprites stream as a `tf.data.Dataset` of batched dicts.

  Args:
    num_sprites: the number of sprite slots, S >= 1.
    batch_size: examples per batch, B >= 1.
    seed: integer >= 0; the stream is a pure function of it (see the module docstring).
    presence_prob: the probability that each slot holds a sprite.
    num_batches: the number of batches, or None for an endless stream.
    first_batch: the index of the first batch; a resumed run continues the stream here.
    rows: None, or (start, size): each element holds only rows [start, start + size) of
      the batch (B below is then `size`); a worker of a multi-worker run renders its share.

  Returns:
    A dataset whose elements are dicts with
      image: float32 [B, 64, 64, 3] in [0, 1];
      count: int32 [B], the number of sprites present;
      masks: float32 [B, S + 1, 64, 64], background first;
      present: float32 [B, S];
      shape: int32 [B, S] (0 square, 1 ellipse, 2 heart);
      scale, orientation: float32 [B, S];
      position: float32 [B, S, 2], (y, x) as fractions of the image side;
      colour: float32 [B, S, 3].
  """
  validate_data_args(num_sprites, batch_size, seed, presence_prob)
  if num_batches is not None:
    check_int("num_batches", num_batches, 1)
  check_int("first_batch", first_batch, 0)
  if rows is not None:
    start, size = rows
    check_int("rows[0]", start, 0)
    check_int("rows[1]", size, 1)
    if start + size > batch_size:
      raise ValueError(f"rows {rows} reach past the batch of {batch_size}")
  end = 2**62 if num_batches is None else first_batch + num_batches
  indices = tf.data.Dataset.range(first_batch, end)
  dataset = indices.map(
      lambda i: sample_batch(i, num_sprites, batch_size, seed, presence_prob, rows),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE)
