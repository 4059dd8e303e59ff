"""The permutation-invariant decoder f = h . pool . g (paper section 2, appendix A).

* g, the shared object network, maps each object's latent z_n in R^D to a feature map
  o_n = g(z_n): two dense layers, a reshape to 8x8x16, then two conv layers each after a
  bilinear 2x upsampling, giving 32x32xC. It is applied to all N objects at once by folding
  the object axis into the batch: [B, N, D] -> [B*N, D] -> g -> [B, N, 32, 32, C].
* pool aggregates the objects with a symmetric function, o_pool = max_n o_n (the paper's
  default), sum_n o_n, a softmax-weighted mixture or a gated sum (`aggregate`), so f is
  exactly invariant to the order of the objects and accepts any number N >= 1 of them
  (which sequential decoding, section 4.1, needs).
* h, the renderer, maps o_pool to 64x64x3 Bernoulli logits with three conv layers and one
  bilinear 2x upsampling.

A learned background (an option; the paper has none). With max pooling, h only ever sees
o_pool where some object is largest, so what g paints away from its own sprite is never
trained for on its own: a lone object (sequential decoding, section 4.1) renders off the
training distribution, and a second, low-KL object can learn to supply the background. With
`learned_background`, a trained feature map b joins every pool as one more, always present
element: o_pool = max(b, max_n o_n) (or b + sum_n o_n). An object then matters only where it
rises above b, the empty scene is h(b), and an object decoded alone is pooled as in
training. b starts at 0. (At -1, the floor of g's ELU output, max pooling would equal
the paper's decoder, but b would then never receive a gradient: max passes it only where b is
the largest element.)

Position in the cell (an option; the paper has none). With `position_in_cell`, an object's
first two latent dimensions are its position p = (p_y, p_x) in the image, and g sees only
the rest: o_n = T(p_n) g(z_n[2:]), where T(p) translates g's canonical map so that its
centre lands on p (`translation.py`). Where an object is, is then one explicit, exactly
equivariant pair of numbers, rather than something g's dense layers must learn to paint;
the encoder anchors p at the candidate's cell centre (`encoder.anchor_positions`).
"""

import keras
import tensorflow as tf

from mvae_tf import activations
from mvae_tf import conv
from mvae_tf import native_ops
from mvae_tf import translation
from mvae_tf import upsampling

G_DENSE_UNITS = (256, 8 * 8 * 16)
G_RESHAPE = (8, 8, 16)
G_FILTERS = (16, 16)
H_FILTERS = (32, 16)
# With `position_in_cell`, the latent dimensions that hold an object's (y, x) position.
POSITION_DIMS = 2


class ObjectNetwork(keras.layers.Layer):
  """g: one latent to one object feature map, [M, D] -> [M, 32, 32, 16 * width]."""

  def __init__(self, width=1, **kwargs):
    super().__init__(**kwargs)
    self.width = width
    policy = self.dtype_policy
    # Sub-layers are attributes, not list items: tf.train.Checkpoint follows attributes
    # but not the lists Keras 3 wraps.
    self.dense1 = keras.layers.Dense(G_DENSE_UNITS[0], activation=activations.elu,
                                     name="dense1", dtype=policy)
    self.dense2 = keras.layers.Dense(G_DENSE_UNITS[1], activation=activations.elu,
                                     name="dense2", dtype=policy)
    self.reshape = keras.layers.Reshape(G_RESHAPE, name="reshape", dtype=policy)
    self.upsample = upsampling.BilinearUpsample2x(name="upsample", dtype=policy)
    self.conv1 = conv.Conv2D(width * G_FILTERS[0], 3, padding="same",
                             activation=activations.elu, name="conv1", dtype=policy)
    self.conv2 = conv.Conv2D(width * G_FILTERS[1], 3, padding="same",
                             activation=activations.elu, name="conv2", dtype=policy)

  @property
  def dense(self):
    return [self.dense1, self.dense2]

  @property
  def convs(self):
    return [self.conv1, self.conv2]

  def build(self, input_shape):
    shape = tuple(input_shape)
    for layer in self.dense:
      layer.build(shape)
      shape = layer.compute_output_shape(shape)
    shape = (shape[0], *G_RESHAPE)
    for layer in self.convs:
      shape = (shape[0], 2 * shape[1], 2 * shape[2], shape[3])
      layer.build(shape)
      shape = layer.compute_output_shape(shape)

  def call(self, latents):
    features = latents
    for layer in self.dense:
      features = layer(features)
    features = self.reshape(features)  # [M, 8, 8, 16]
    for layer in self.convs:
      features = layer(self.upsample(features))
    return features  # [M, 32, 32, 16 * width]


def aggregate(objects, aggregation, background=None):
  """Symmetric pooling over the object axis: [B, N, ...] -> [B, ...].

  * "max": o_pool = max_n o_n, channel by channel (the paper's).
  * "sum": o_pool = sum_n o_n.
  * "softmax": o_pool = sum_n w_n o_n with w_n = softmax_n(o_n[..., 0]) at each position: a
    mixture whose first channel is each object's claim on the position, so that a
    position's whole feature vector comes mostly from one object (as the masks of MONet
    and IODINE do). Under "max" each channel can come from a different object, which lets
    two objects share one sprite (one its colour, another its shape). Not in the paper.
  * "gated_sum": o_pool = sum_n a_n o_n with a_n = tanh(1 + o_n[..., 0]) at each position:
    each object's gate a_n in (0, 1) is its own, not a share of one. The data blend
    overlapping sprites by adding their colours (appendix A); a mixture hands h one
    object's features where two overlap, a sum hands it both. Unlike plain "sum", an
    object can gate itself out: g's last activation is an ELU, whose floor -1 maps to a
    gate of 0, so Null objects add nothing and an object decoded alone is pooled as in
    training. Not in the paper.

  `background`, of shape [...] (an object's shape), joins every pool as one more element.
  """
  if aggregation == "max":
    pooled = tf.reduce_max(objects, axis=1)
    return pooled if background is None else tf.maximum(pooled, background)
  if aggregation == "sum":
    pooled = tf.reduce_sum(objects, axis=1)
    return pooled if background is None else pooled + background
  if aggregation == "softmax":
    if background is not None:
      shape = tf.concat([tf.shape(objects)[:1], [1], tf.shape(background)], axis=0)
      background = tf.broadcast_to(tf.cast(background, objects.dtype), shape)  # [B, 1, ...]
      objects = tf.concat([objects, background], axis=1)  # [B, N + 1, ...]
    kernels = native_ops.active()
    if kernels is not None:  # The training step on a CPU: one compiled pass each way.
      return _compiled_softmax_pool(objects, kernels)  # [B, ...]
    # In float32 whatever the compute dtype: TF runs these elementwise ops in Eigen, where
    # bf16 is converted element by element, so one cast each way is the cheaper path.
    return tf.cast(_softmax_pool(tf.cast(objects, tf.float32)), objects.dtype)  # [B, ...]
  if aggregation == "gated_sum":
    def gated(x):
      return tf.tanh(1.0 + x[..., :1]) * x  # The gate [..., 1] times the features [..., C].
    pooled = tf.reduce_sum(gated(objects), axis=1)  # [B, ...]
    if background is not None:
      pooled += gated(tf.cast(background, objects.dtype))  # One more element, gated alike.
    return pooled
  raise ValueError("Invalid value received for argument `aggregation`. Expected 'max', "
                   f"'sum', 'softmax' or 'gated_sum'. Received: aggregation={aggregation!r}")


@tf.custom_gradient
def _softmax_pool(objects):
  """o_pool = sum_n w_n o_n, w_n = softmax_n(o_n[..., 0]): [B, N, ..., C] -> [B, ...].

  The gradient is written out rather than left to TF. With G = dL/do_pool and
  a_n = sum_c G_c o_n,c, the softmax's Jacobian gives dL/ds_n = w_n (a_n - sum_m w_m a_m)
  for the claims s_n = o_n,0, and sum_m w_m a_m = sum_c G_c o_pool,c, so

      dL/do_n = w_n (G + e_0 (a_n - sum_c G_c o_pool,c)),

  e_0 the first channel's indicator. TF's own gradient of the forward pass builds the
  same from a `Tile`, three products, the slice's gradient (a zero tensor the size of the
  objects with the claims written in) and an `AddN` of the two paths; this needs no zero
  tensor and no sum of paths: fewer passes over [B, N, 32, 32, C].
  """
  weights = tf.nn.softmax(objects[..., :1], axis=1)  # [B, N, ..., 1]
  pooled = tf.reduce_sum(weights * objects, axis=1)  # [B, ...]

  def grad(upstream):
    upstream = upstream[:, None]  # [B, 1, ..., C]
    # a_n - sum_c G_c o_pool,c, as sum_c G_c (o_n,c - o_pool,c): the difference first, so
    # that an object with nearly all the weight (o_n close to o_pool) loses no precision.
    claims = tf.reduce_sum(upstream * (objects - pooled[:, None]), axis=-1, keepdims=True)
    # `claims` has shape [B, N, ..., 1].
    first = tf.one_hot(0, tf.shape(objects)[-1], dtype=objects.dtype)  # [C]
    return weights * (upstream + first * claims)  # [B, N, ..., C]

  return pooled, grad


def _compiled_softmax_pool(objects, kernels):
  """`_softmax_pool` by the compiled kernels (`native_ops.Kernels`), in the objects' dtype
  (computed in float32 inside): [B, N, ..., C] -> [B, ..., C]."""

  @tf.custom_gradient
  def pool(objects):
    pooled, weights = kernels.softmax_pool(objects)  # [B, ..., C], [B, N, ..., 1]
    return pooled, lambda upstream: kernels.softmax_pool_grad(objects, weights, upstream)

  return pool(objects)


class Renderer(keras.layers.Layer):
  """h: pooled features to Bernoulli logits, [B, 32, 32, C] -> [B, 64, 64, 3]."""

  def __init__(self, width=1, **kwargs):
    super().__init__(**kwargs)
    policy = self.dtype_policy
    self.conv1 = conv.Conv2D(width * H_FILTERS[0], 3, padding="same",
                             activation=activations.elu, name="conv1", dtype=policy)
    self.upsample = upsampling.BilinearUpsample2x(name="upsample", dtype=policy)
    self.conv2 = conv.Conv2D(width * H_FILTERS[1], 3, padding="same",
                             activation=activations.elu, name="conv2", dtype=policy)
    self.logits = conv.Conv2D(3, 3, padding="same", name="conv3", dtype=policy)

  def build(self, input_shape):
    shape = tuple(input_shape)
    self.conv1.build(shape)
    shape = self.conv1.compute_output_shape(shape)
    shape = (shape[0], 2 * shape[1], 2 * shape[2], shape[3])
    self.conv2.build(shape)
    self.logits.build(self.conv2.compute_output_shape(shape))

  def call(self, pooled):
    features = self.conv1(pooled)  # [B, 32, 32, 32 * width]
    features = self.conv2(self.upsample(features))  # [B, 64, 64, 16 * width]
    return self.logits(features)  # [B, 64, 64, 3]


class Decoder(keras.layers.Layer):
  """f(z_1..N) = h(pool_n g(z_n)): a set of latents to Bernoulli logits.

  Args:
    aggregation: "max", "sum", "softmax" or "gated_sum" (`aggregate`); no default here,
      the model's is `config.MVAE_AGGREGATION`.
    width: multiplies the channels of g's and h's convolutions (1: 16 for g, 32 and 16 for
      h; the paper gives no widths).
    learned_background: pool a trained feature map b [32, 32, C] with the objects (see the
      module docstring); False is the paper's decoder.
    position_in_cell: read each latent's first two dimensions as the object's position and
      translate g's map of the others there (see the module docstring); False is the paper's.
    dtype: the Keras dtype policy of g and h.

  Call arguments:
    latents: float32 [B, N, D] for any N >= 1 (D >= 3 with `position_in_cell`).

  Returns:
    [B, 64, 64, 3] logits in the compute dtype.
  """

  def __init__(self, aggregation, width=1, learned_background=False,
               position_in_cell=False, **kwargs):
    super().__init__(**kwargs)
    aggregate(tf.zeros([1, 1]), aggregation)  # Validates `aggregation` now, not at call.
    for name, value in (("learned_background", learned_background),
                        ("position_in_cell", position_in_cell)):
      if not isinstance(value, bool):
        raise ValueError(f"Invalid value received for argument `{name}`. Expected True or "
                         f"False. Received: {name}={value!r}")
    self.aggregation = aggregation
    self.width = width
    self.learned_background = learned_background
    self.position_in_cell = position_in_cell
    self.object_network = ObjectNetwork(width, name="g", dtype=self.dtype_policy)
    self.renderer = Renderer(width, name="h", dtype=self.dtype_policy)

  def build(self, input_shape):
    latent_dim = input_shape[-1]
    if self.position_in_cell:
      if latent_dim is None or latent_dim <= POSITION_DIMS:
        raise ValueError(f"position_in_cell needs latents of more than {POSITION_DIMS} "
                         f"dimensions (a position and an appearance). Received: {input_shape}")
      latent_dim -= POSITION_DIMS
    self.object_network.build((None, latent_dim))
    object_shape = (32, 32, self.width * G_FILTERS[-1])
    self.renderer.build((None, *object_shape))
    self.background = None
    if self.learned_background:
      self.background = self.add_weight(name="background", shape=object_shape,
                                        initializer="zeros")

  def call(self, latents):
    shape = tf.shape(latents)
    batch, num_objects = shape[0], shape[1]
    folded = tf.reshape(latents, [batch * num_objects, latents.shape[-1]])  # [B*N, D]
    if self.position_in_cell:
      positions = folded[:, :POSITION_DIMS]  # [B*N, 2]
      objects = self.object_network(folded[:, POSITION_DIMS:])  # [B*N, 32, 32, C], centred
      objects = translation.translate(objects, positions)  # [B*N, 32, 32, C]
    else:
      objects = self.object_network(folded)  # [B*N, 32, 32, C]
    objects = tf.reshape(objects, [batch, num_objects, *objects.shape[1:]])
    # `objects` has shape [B, N, 32, 32, C].
    background = None if self.background is None else tf.cast(self.background, objects.dtype)
    pooled = aggregate(objects, self.aggregation, background)  # [B, 32, 32, C]
    return self.renderer(pooled)  # [B, 64, 64, 3]

  def get_config(self):
    return {**super().get_config(), "aggregation": self.aggregation, "width": self.width,
            "learned_background": self.learned_background,
            "position_in_cell": self.position_in_cell}
