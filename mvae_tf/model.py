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
MVAE_LATENT_DIM = 12


def _check_images(images):
  shape = images.shape
  if shape.rank != 4 or tuple(shape[1:]) != IMAGE_SHAPE:
    raise ValueError(f"Expected images of shape [batch, 64, 64, 3]. Received: {shape}")
  if images.dtype != tf.float32:
    raise ValueError(f"Expected float32 images in [0, 1]. Received dtype: {images.dtype.name}")


def _sample(loc, scale, noise):
  """The reparameterised sample z = mu + sigma * eps, or mu when `noise` is None."""
  return loc if noise is None else loc + scale * noise


class MVAE(keras.Model):
  """The multi-entity VAE.

  Args:
    num_objects: N, the number of objects kept by KL.
    latent_dim: D.
    aggregation: "max" or "sum".
    num_pooling: pooling layers in the encoder; the grid is 64 / 2**num_pooling a side.
  """

  def __init__(self, num_objects=5, latent_dim=MVAE_LATENT_DIM, aggregation="max",
               num_pooling=4, **kwargs):
    super().__init__(**kwargs)
    self.config = config_lib.ModelConfig("mvae", num_objects, latent_dim, aggregation,
                                         num_pooling)
    self.encoder = encoder_lib.CandidateEncoder(latent_dim, num_pooling, name="encoder")
    self.top_k = selection.TopKByKL(num_objects, name="top_k_by_kl")
    self.decoder = decoder_lib.Decoder(aggregation, name="decoder")

  def build(self, input_shape=(None, *IMAGE_SHAPE)):
    self.encoder.build(input_shape)
    self.decoder.build((None, None, self.config.latent_dim))
    super().build(input_shape)

  def encode(self, images):
    _check_images(images)
    loc, scale = encoder_lib.split_params(self.encoder(images))  # [B, H, W, D] each
    kl_map = encoder_lib.kl_to_prior(loc, scale)  # [B, H, W]
    selected = self.top_k(loc, scale, kl_map)
    del selected["indices"]
    return selected

  def decode(self, latents):
    return self.decoder(latents)

  def call(self, images, noise=None):
    outputs = self.encode(images)
    outputs["latents"] = _sample(outputs["loc"], outputs["scale"], noise)  # [B, N, D]
    outputs["logits"] = self.decode(outputs["latents"])
    return outputs

  def get_config(self):
    return {"num_objects": self.config.num_objects, "latent_dim": self.config.latent_dim,
            "aggregation": self.config.aggregation, "num_pooling": self.config.num_pooling}


class VAE(keras.Model):
  """The standard VAE baseline of appendix A, presented as one 60-D object."""

  def __init__(self, latent_dim=config_lib.VAE_LATENT_DIM, num_pooling=4, **kwargs):
    super().__init__(**kwargs)
    self.config = config_lib.ModelConfig("vae", 1, latent_dim, "max", num_pooling)
    self.encoder = encoder_lib.CandidateEncoder(MVAE_LATENT_DIM, num_pooling, name="encoder")
    self.flatten = keras.layers.Flatten(name="flatten")
    self.project = keras.layers.Dense(2 * latent_dim, name="project")
    self.decoder = decoder_lib.Decoder("max", name="decoder")

  def build(self, input_shape=(None, *IMAGE_SHAPE)):
    self.encoder.build(input_shape)
    grid = self.config.grid_size
    self.project.build((None, grid * grid * 2 * MVAE_LATENT_DIM))
    self.decoder.build((None, 1, self.config.latent_dim))
    super().build(input_shape)

  def encode(self, images):
    _check_images(images)
    features = self.flatten(self.encoder(images))  # [B, H*W*24]
    params = self.project(features)  # [B, 2 * D]
    loc, scale = encoder_lib.split_params(params[:, None, :])  # [B, 1, D] each
    kl = encoder_lib.kl_to_prior(loc, scale)  # [B, 1]
    return {"loc": loc, "scale": scale, "kl": kl,
            "coords": tf.zeros_like(loc[..., :2]),  # [B, 1, 2]
            "kl_map": kl[:, :, None]}  # [B, 1, 1]

  def decode(self, latents):
    return self.decoder(latents)

  def call(self, images, noise=None):
    outputs = self.encode(images)
    outputs["latents"] = _sample(outputs["loc"], outputs["scale"], noise)  # [B, 1, D]
    outputs["logits"] = self.decode(outputs["latents"])
    return outputs

  def get_config(self):
    return {"latent_dim": self.config.latent_dim, "num_pooling": self.config.num_pooling}


def build_model(model_config):
  """Builds (and creates the variables of) the model a `ModelConfig` describes."""
  if model_config.model == "vae":
    model = VAE(model_config.latent_dim, model_config.num_pooling, name="vae")
  else:
    model = MVAE(model_config.num_objects, model_config.latent_dim, model_config.aggregation,
                 model_config.num_pooling, name="mvae")
  model.build()
  return model
