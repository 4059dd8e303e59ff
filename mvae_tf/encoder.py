"""The candidate encoder and its Gaussian posteriors (paper section 2.1, appendix A).

The encoder maps an image to a grid of candidate objects. Following appendix A it has four
3x3 conv layers with max-pooling, then concatenates two channels of relative (y, x)
coordinates (so that each candidate is tagged with where it is, which top-k selection would
otherwise destroy), then two more conv layers ending in 2*D channels: the mean and the
log-variance of a D-dimensional diagonal Gaussian posterior q(z_s | x) per grid cell s.

Every cell's KL divergence against the prior p(z) = N(0, I) is analytic:

  KL[q || p] = 1/2 * sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2),

and the map of these values over the grid, `kl_map` [B, H, W], is what maximal-information
attention ranks (section 2.1) and what object counting thresholds (section 4.3).

With `position_in_cell` (an option, not the paper's) the first two latent dimensions are the
object's image position, and the encoder predicts them as an offset from its cell's centre:
mu_s[:2] = c_s + conv6(...)[:2] (`anchor_positions`), so that a candidate's default guess is
an object in its own cell, and a sprite on a cell border is one cell's small offset away.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from mvae_tf import activations
from mvae_tf import conv
from mvae_tf.config import HEAD_KERNEL

tfd = tfp.distributions

TRUNK_FILTERS = (32, 32, 64, 64)
HEAD_FILTERS = 64


def relative_coordinates(height, width):
  """Relative (y, x) coordinates of an H x W grid's cells, each in [-1, 1].

  Returns float32 [H, W, 2]; a dimension of size 1 gets coordinate 0.
  """
  def axis(n):
    n = tf.cast(n, tf.float32)
    return tf.math.divide_no_nan(2.0 * tf.range(n), n - 1.0) - tf.cast(n > 1, tf.float32)
  ys, xs = tf.meshgrid(axis(height), axis(width), indexing="ij")  # [H, W] each
  return tf.stack([ys, xs], axis=-1)  # [H, W, 2]


def cell_centres(height, width):
  """Image coordinates (y, x) of an H x W grid's cell centres, (2i + 1) / H - 1: [H, W, 2].

  The image's edges are at -1 and +1 (the convention of `translation.translate`).
  """
  def axis(n):
    return (2.0 * tf.range(n, dtype=tf.float32) + 1.0) / tf.cast(n, tf.float32) - 1.0
  ys, xs = tf.meshgrid(axis(height), axis(width), indexing="ij")  # [H, W] each
  return tf.stack([ys, xs], axis=-1)  # [H, W, 2]


def anchor_positions(loc):
  """Adds each cell's centre to the first two dimensions of its posterior mean.

  Args:
    loc: float32 [B, H, W, D], D >= 3: the offsets the network predicts, then appearance.

  Returns:
    float32 [B, H, W, D]: the means, whose first two dimensions are image positions.
  """
  shape = tf.shape(loc)
  centres = cell_centres(shape[1], shape[2])  # [H, W, 2]
  appearance = tf.zeros([shape[1], shape[2], shape[3] - 2], loc.dtype)  # [H, W, D - 2]
  return loc + tf.concat([tf.cast(centres, loc.dtype), appearance], axis=-1)[None]


def split_params(params):
  """Posterior parameters [..., 2 * D] -> (loc, scale) [..., D]; scale = exp(log_var / 2)."""
  loc, log_variance = tf.split(params, 2, axis=-1)  # [..., D] each
  return loc, tf.exp(0.5 * log_variance)


def gaussian_posterior(loc, scale):
  """q(z | x): a diagonal Gaussian whose event is the last axis of `loc` and `scale`."""
  return tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)


def standard_normal_prior(latent_dim, dtype=tf.float32):
  """p(z) = N(0, I_D), the prior of every object (section 2)."""
  return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim], dtype))


def kl_to_prior(loc, scale):
  """Analytic KL[q(z | x) || N(0, I)] over the last axis: [..., D] -> [...]."""
  prior = standard_normal_prior(loc.shape[-1], loc.dtype)
  return tfd.kl_divergence(gaussian_posterior(loc, scale), prior)


class AddCoords(keras.layers.Layer):
  """Concatenates relative (y, x) coordinates: [B, H, W, C] -> [B, H, W, C + 2]."""

  def call(self, features):
    shape = tf.shape(features)
    coords = relative_coordinates(shape[1], shape[2])  # [H, W, 2]
    coords = tf.broadcast_to(coords[None], [shape[0], shape[1], shape[2], 2])  # [B, H, W, 2]
    return tf.concat([features, tf.cast(coords, features.dtype)], axis=-1)

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], input_shape[-1] + 2)


class CandidateEncoder(keras.layers.Layer):
  """Images to a grid of diagonal-Gaussian posterior parameters (appendix A).

  Args:
    latent_dim: D, the size of each candidate's latent.
    num_pooling: how many of the four trunk convs are followed by 2x2 max-pooling; the
      grid is then (64 / 2**num_pooling) on a side.
    head_kernel: the kernel size of the head convolution on the grid (odd); with
      num_pooling=4, 3 gives each cell a receptive field of 78 pixels and 1 of 46.
    dtype: the Keras dtype policy of every sub-layer ("mixed_bfloat16" computes in bfloat16
      with float32 variables).

  Call arguments:
    images: float32 [B, 64, 64, 3] in [0, 1].

  Returns:
    [B, H, W, 2 * D] in the compute dtype: per cell, D means then D log-variances
    (`split_params`).
  """

  def __init__(self, latent_dim, num_pooling, head_kernel=HEAD_KERNEL, **kwargs):
    super().__init__(**kwargs)
    policy = self.dtype_policy
    self.latent_dim = latent_dim
    self.num_pooling = num_pooling
    self.head_kernel = head_kernel
    # Sub-layers are attributes, not list items: tf.train.Checkpoint follows attributes
    # but not the lists Keras 3 wraps.
    trunk = []
    for i, filters in enumerate(TRUNK_FILTERS):
      trunk.append(conv.Conv2D(filters, 3, padding="same",
                               activation=activations.elu, name=f"conv{i + 1}",
                               dtype=policy))
      if i < num_pooling:
        trunk.append(keras.layers.MaxPooling2D(2, name=f"pool{i + 1}", dtype=policy))
    for layer in trunk:
      setattr(self, layer.name, layer)
    self._trunk_names = tuple(layer.name for layer in trunk)
    self.add_coords = AddCoords(name="add_coords", dtype=policy)
    self.head = conv.Conv2D(HEAD_FILTERS, head_kernel, padding="same",
                            activation=activations.elu, name="conv5", dtype=policy)
    self.params = conv.Conv2D(2 * latent_dim, 1, name="conv6", dtype=policy)

  @property
  def trunk(self):
    return [getattr(self, name) for name in self._trunk_names]

  def build(self, input_shape):
    shape = tuple(input_shape)
    for layer in self.trunk:
      layer.build(shape)
      shape = layer.compute_output_shape(shape)
    shape = self.add_coords.compute_output_shape(shape)
    self.head.build(shape)
    self.params.build(self.head.compute_output_shape(shape))

  def call(self, images):
    features = images
    for layer in self.trunk:
      features = layer(features)
    # `features` has shape [B, H, W, 64].
    features = self.add_coords(features)  # [B, H, W, 66]
    return self.params(self.head(features))  # [B, H, W, 2 * D]

  def get_config(self):
    return {**super().get_config(), "latent_dim": self.latent_dim,
            "num_pooling": self.num_pooling, "head_kernel": self.head_kernel}
