"""The multi-entity VAE (paper section 2) and the standard VAE baseline (appendix A).

MVAE, end to end:

  x --CandidateEncoder--> (mu, sigma) [B, H, W, D] --KL to N(0, I)--> kl_map [B, H, W]
    --TopKByKL--> N posteriors q(z_n | x) [B, N, D]  --z_n = mu_n + sigma_n * eps_n-->
    --Decoder f = h . pool . g--> Bernoulli logits [B, 64, 64, 3].

Both models expose the same interface, which training, export and evaluation rely on:

* `encode(images)` -> dict(loc, scale [B, N, D], kl [B, N], coords [B, N, 2],
  kl_map [B, H, W]), the selected posteriors in descending KL order, without sampling;
* `decode(latents [B, M, D])` -> logits [B, 64, 64, 3];
* `call(images, noise=None)` -> encode's dict plus `latents` and `logits`; `noise`
  [B, N, D] is the standard-normal eps of the reparameterisation z = mu + sigma * eps, or
  None to decode the posterior means.

Precision. `precision="mixed_bfloat16"` computes the encoder's and the decoder's layers in
bfloat16 with float32 variables (Keras mixed precision). The model itself stays float32 at
its edges: images in, and everything that is probability rather than features, the
posterior parameters, the KL map, the top-k selection, the sample z and the logits, is
float32, so losses and selection never see bfloat16 rounding of their inputs.

The VAE baseline shares the encoder (with a 24-channel output, as the MVAE's at D=12), then a
linear map of the flattened grid to one 60-D Gaussian; its decoder is g then h. It presents
itself as one object (N = 1, D = 60) with a 1x1 `kl_map`.
"""

import keras
import tensorflow as tf

from mvae_tf import config as config_lib
from mvae_tf import decoder as decoder_lib
from mvae_tf import encoder as encoder_lib
from mvae_tf import selection

IMAGE_SHAPE = (64, 64, 3)
MVAE_LATENT_DIM = config_lib.MVAE_LATENT_DIM


def _checked_images(images):
  """`images` (a tensor or an array) as a tensor, or ValueError unless float32 [B, 64, 64, 3]."""
  images = tf.convert_to_tensor(images)
  shape = images.shape
  if shape.rank != 4 or tuple(shape[1:]) != IMAGE_SHAPE:
    raise ValueError(f"Expected images of shape [batch, 64, 64, 3]. Received: {shape}")
  if images.dtype != tf.float32:
    raise ValueError(f"Expected float32 images in [0, 1]. Received dtype: {images.dtype.name}")
  return images


def _sample(loc, scale, noise):
  """The reparameterised sample z = mu + sigma * eps, or mu when `noise` is None."""
  return loc if noise is None else loc + scale * noise


class _LatentVariableModel(keras.Model):
  """What the MVAE and the VAE share: float32 edges, `decode` and `call`.

  Subclasses set `self.config`, `self.decoder` and implement `encode`.

  Args:
    precision: a `config.PRECISIONS` name: the dtype policy of the encoder and decoder.
  """

  def __init__(self, precision="float32", **kwargs):
    if precision not in config_lib.PRECISIONS:
      raise ValueError("Invalid value received for argument `precision`. Expected one of "
                       f"{config_lib.PRECISIONS}. Received: precision={precision!r}")
    # The model's own policy is float32 whatever the precision: Keras casts a model's
    # inputs to its compute dtype, and images, noise and outputs stay float32.
    super().__init__(dtype="float32", **kwargs)
    self.precision = precision

  def _base_config(self):
    """What `get_config` keeps of Keras's own arguments: not the dtype, which `precision`
    sets."""
    return {"name": self.name, "trainable": self.trainable}

  def decode(self, latents):
    """Latents [B, M, D] -> float32 Bernoulli logits [B, 64, 64, 3], for any number M of
    objects, 0 included: g runs per object and the pooling takes whatever number comes
    (paper section 2)."""
    latents = tf.convert_to_tensor(latents)
    shape = latents.shape
    if shape.rank != 3 or shape[-1] != self.config.latent_dim:
      raise ValueError(f"Expected latents of shape [batch, objects, {self.config.latent_dim}]."
                       f" Received: {shape}")
    return tf.cast(self.decoder(latents), tf.float32)

  def call(self, images, noise=None):
    outputs = self.encode(images)
    outputs["latents"] = _sample(outputs["loc"], outputs["scale"], noise)  # [B, N, D]
    outputs["logits"] = self.decode(outputs["latents"])
    return outputs


@keras.saving.register_keras_serializable(package="mvae_tf")
class MVAE(_LatentVariableModel):
  """The multi-entity VAE.

  Args:
    num_objects: N, the number of objects kept by KL.
    latent_dim: D.
    aggregation: "max", "sum", "softmax" or "gated_sum" (`decoder.aggregate`).
    num_pooling: pooling layers in the encoder; the grid is 64 / 2**num_pooling a side
      (default `config.MVAE_NUM_POOLING`: 16x16).
    precision: "float32" or "mixed_bfloat16" (the encoder's and decoder's layers).
    suppression_radius: 0 (top-N, the paper) or r >= 1 (`selection.TopKByKL`; default
      `config.MVAE_SUPPRESSION_RADIUS`).
    decoder_width: multiplies g's and h's channels.
    learned_background: pool a trained feature map with the objects (`decoder.Decoder`).
    position_in_cell: the first two latent dimensions are the object's position, predicted
      from its cell's centre (`encoder.anchor_positions`) and applied by the decoder as a
      translation (`decoder.Decoder`).
    head_kernel: the encoder's head convolution's kernel size (`encoder.CandidateEncoder`).
    suppression_kl_ratio: with suppression, skip only the neighbours with at most this
      fraction of the selected cell's KL (`selection.TopKByKL`; 1: all of them).
  """

  def __init__(self, num_objects=5, latent_dim=MVAE_LATENT_DIM,
               aggregation=config_lib.MVAE_AGGREGATION,
               num_pooling=config_lib.MVAE_NUM_POOLING, precision="float32",
               suppression_radius=config_lib.MVAE_SUPPRESSION_RADIUS, decoder_width=1,
               learned_background=False, position_in_cell=False,
               head_kernel=config_lib.HEAD_KERNEL, suppression_kl_ratio=1.0, **kwargs):
    super().__init__(precision, **kwargs)
    self.config = config_lib.ModelConfig("mvae", num_objects, latent_dim, aggregation,
                                         num_pooling, suppression_radius, decoder_width,
                                         learned_background, position_in_cell, head_kernel,
                                         suppression_kl_ratio)
    self.encoder = encoder_lib.CandidateEncoder(latent_dim, num_pooling, head_kernel,
                                                name="encoder", dtype=precision)
    self.top_k = selection.TopKByKL(num_objects, suppression_radius, suppression_kl_ratio,
                                    name="top_k_by_kl", dtype="float32")
    self.decoder = decoder_lib.Decoder(aggregation, decoder_width, learned_background,
                                       position_in_cell, name="decoder", dtype=precision)

  def build(self, input_shape=(None, *IMAGE_SHAPE)):
    self.encoder.build(input_shape)
    self.decoder.build((None, None, self.config.latent_dim))
    super().build(input_shape)

  def encode(self, images):
    images = _checked_images(images)
    params = tf.cast(self.encoder(images), tf.float32)  # [B, H, W, 2 * D]
    loc, scale = encoder_lib.split_params(params)  # [B, H, W, D] each
    if self.config.position_in_cell:
      loc = encoder_lib.anchor_positions(loc)  # [B, H, W, D]
    kl_map = encoder_lib.kl_to_prior(loc, scale)  # [B, H, W]
    selected = self.top_k(loc, scale, kl_map)
    del selected["indices"]
    return selected

  def get_config(self):
    return {**self._base_config(),
            "num_objects": self.config.num_objects, "latent_dim": self.config.latent_dim,
            "aggregation": self.config.aggregation, "num_pooling": self.config.num_pooling,
            "precision": self.precision,
            "suppression_radius": self.config.suppression_radius,
            "decoder_width": self.config.decoder_width,
            "learned_background": self.config.learned_background,
            "position_in_cell": self.config.position_in_cell,
            "head_kernel": self.config.head_kernel,
            "suppression_kl_ratio": self.config.suppression_kl_ratio}


@keras.saving.register_keras_serializable(package="mvae_tf")
class VAE(_LatentVariableModel):
  """The standard VAE baseline of appendix A, presented as one 60-D object."""

  def __init__(self, latent_dim=config_lib.VAE_LATENT_DIM, num_pooling=config_lib.VAE_NUM_POOLING,
               precision="float32", decoder_width=1, head_kernel=config_lib.HEAD_KERNEL,
               **kwargs):
    super().__init__(precision, **kwargs)
    self.config = config_lib.ModelConfig("vae", 1, latent_dim, num_pooling=num_pooling,
                                         decoder_width=decoder_width, head_kernel=head_kernel)
    self.encoder = encoder_lib.CandidateEncoder(MVAE_LATENT_DIM, num_pooling, head_kernel,
                                                name="encoder", dtype=precision)
    self.flatten = keras.layers.Flatten(name="flatten", dtype=precision)
    self.project = keras.layers.Dense(2 * latent_dim, name="project", dtype=precision)
    self.decoder = decoder_lib.Decoder(self.config.aggregation, decoder_width, name="decoder",
                                       dtype=precision)

  def build(self, input_shape=(None, *IMAGE_SHAPE)):
    self.encoder.build(input_shape)
    grid = self.config.grid_size
    self.project.build((None, grid * grid * 2 * MVAE_LATENT_DIM))
    self.decoder.build((None, 1, self.config.latent_dim))
    super().build(input_shape)

  def encode(self, images):
    images = _checked_images(images)
    features = self.flatten(self.encoder(images))  # [B, H*W*24]
    params = tf.cast(self.project(features), tf.float32)  # [B, 2 * D]
    loc, scale = encoder_lib.split_params(params[:, None, :])  # [B, 1, D] each
    kl = encoder_lib.kl_to_prior(loc, scale)  # [B, 1]
    return {"loc": loc, "scale": scale, "kl": kl,
            "coords": tf.zeros_like(loc[..., :2]),  # [B, 1, 2]
            "kl_map": kl[:, :, None]}  # [B, 1, 1]

  def get_config(self):
    return {**self._base_config(),
            "latent_dim": self.config.latent_dim, "num_pooling": self.config.num_pooling,
            "precision": self.precision, "decoder_width": self.config.decoder_width,
            "head_kernel": self.config.head_kernel}


def build_model(model_config, precision="float32"):
  """Builds (and creates the variables of) the model a `ModelConfig` describes.

  `precision` changes how it computes, not its variables (always float32), so a checkpoint
  written in one precision restores into a model of the other.
  """
  if model_config.model == "vae":
    model = VAE(model_config.latent_dim, model_config.num_pooling, precision,
                model_config.decoder_width, model_config.head_kernel, name="vae")
  else:
    model = MVAE(model_config.num_objects, model_config.latent_dim, model_config.aggregation,
                 model_config.num_pooling, precision, model_config.suppression_radius,
                 model_config.decoder_width, model_config.learned_background,
                 model_config.position_in_cell, model_config.head_kernel,
                 model_config.suppression_kl_ratio, name="mvae")
  model.build()
  return model
