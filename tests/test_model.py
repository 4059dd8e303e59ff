"""The MVAE and VAE models end to end, and the negative ELBO."""

import math

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import config, losses, model

B, N, D = 2, 3, 5


def _images(batch=B, seed=0):
  return tf.constant(np.random.RandomState(seed).uniform(size=(batch, 64, 64, 3)),
                     tf.float32)


def test_mvae_shapes():
  mvae = model.build_model(config.ModelConfig("mvae", N, D, "max", num_pooling=3,
                                              suppression_radius=0))
  noise = tf.random.normal([B, N, D])
  out = mvae(_images(), noise=noise)
  expected = {"loc": (B, N, D), "scale": (B, N, D), "kl": (B, N), "coords": (B, N, 2),
              "kl_map": (B, 8, 8), "latents": (B, N, D), "logits": (B, 64, 64, 3)}
  assert {k: tuple(v.shape) for k, v in out.items()} == expected
  np.testing.assert_allclose(out["latents"].numpy(),
                             (out["loc"] + out["scale"] * noise).numpy(), rtol=1e-6)
  # Selected KL values are the largest of the map, in descending order.
  top = -np.sort(-out["kl_map"].numpy().reshape(B, -1), axis=1)[:, :N]
  np.testing.assert_allclose(out["kl"].numpy(), top, rtol=1e-6)


def test_the_default_mvae_selects_from_a_16x16_grid_cells_apart():
  """Today's defaults (docs/counting_study.md, round 17): a 16x16 grid, and suppression radius 2, so
  no two of the N objects come from cells within 2 of each other while 256 cells leave
  room. The same weights with top-N selection do pick neighbours (a smooth KL map peaks in
  clusters), so the spacing is the suppression's, not chance's."""
  images = _images(batch=3)

  def closest_pair(model_config, weights=None):
    """The smallest Chebyshev distance, in cells, between two selected objects."""
    mvae = model.build_model(model_config)
    if weights is not None:
      mvae.set_weights(weights)
    out = mvae(images)
    assert out["kl_map"].shape == (3, 16, 16)
    # [3, N, 2]: each object's cell's (y, x) in [-1, 1], 2/15 apart; as (row, column):
    cells = np.round((out["coords"].numpy() + 1) * 15 / 2)
    return min(np.abs(scene[i] - scene[j]).max()
               for scene in cells for i in range(N) for j in range(i)), mvae.get_weights()

  default, weights = closest_pair(config.ModelConfig("mvae", N, D))
  top_n, _ = closest_pair(config.ModelConfig("mvae", N, D, suppression_radius=0), weights)
  assert default >= 3 and top_n <= 1


def test_without_noise_decodes_the_posterior_means():
  mvae = model.build_model(config.ModelConfig("mvae", N, D))
  out = mvae(_images())
  np.testing.assert_array_equal(out["latents"].numpy(), out["loc"].numpy())
  np.testing.assert_allclose(out["logits"].numpy(), mvae.decode(out["loc"]).numpy(),
                             rtol=1e-5, atol=1e-5)


def test_position_in_cell_posteriors_start_at_their_cells_centre():
  """With the last conv at zero, every mean is its cell's centre and nothing else: the KL
  map is 1/2 |c|^2, the four corner cells are picked, and the latent's position is where
  the cell is."""
  mvae = model.build_model(config.ModelConfig("mvae", 4, D, num_pooling=4, suppression_radius=0,
                                              position_in_cell=True))
  for weight in mvae.encoder.params.weights:
    weight.assign(tf.zeros_like(weight))
  out = mvae.encode(_images())
  centres = out["coords"].numpy() * 3 / 4  # A 4x4 grid's corners are at +-1, centres +-0.75.
  np.testing.assert_allclose(np.abs(centres), 0.75)
  np.testing.assert_allclose(out["loc"].numpy()[..., :2], centres, atol=1e-6)
  np.testing.assert_array_equal(out["loc"].numpy()[..., 2:], 0.0)
  np.testing.assert_allclose(out["kl"].numpy(), 0.5 * 2 * 0.75**2, rtol=1e-5)
  assert mvae(_images())["logits"].shape == (B, 64, 64, 3)


def test_vae_presents_one_object():
  vae = model.build_model(config.ModelConfig("vae", 1, 7))
  out = vae(_images(), noise=tf.zeros([B, 1, 7]))
  assert out["loc"].shape == (B, 1, 7) and out["kl"].shape == (B, 1)
  assert out["kl_map"].shape == (B, 1, 1) and out["logits"].shape == (B, 64, 64, 3)
  np.testing.assert_allclose(out["kl"].numpy()[:, 0], out["kl_map"].numpy()[:, 0, 0])


@pytest.mark.parametrize("images, message", [
    (tf.zeros([B, 32, 32, 3]), r"shape \[batch, 64, 64, 3\]"),
    (tf.zeros([B, 64, 64, 1]), r"shape \[batch, 64, 64, 3\]"),
    (tf.zeros([B, 64, 64, 3], tf.float64), "float32"),
    (np.zeros([B, 64, 64, 3]), "float32"),  # numpy's default float64
    (np.zeros([64, 64, 3], np.float32), r"shape \[batch, 64, 64, 3\]"),
])
def test_bad_images(images, message):
  mvae = model.build_model(config.ModelConfig("mvae", N, D))
  with pytest.raises(ValueError, match=message):
    mvae.encode(images)


@pytest.mark.parametrize("model_config", [config.ModelConfig("mvae", N, D),
                                          config.ModelConfig("vae", 1, 7)], ids=["mvae", "vae"])
def test_bad_latents(model_config):
  built = model.build_model(model_config)
  dim = model_config.latent_dim
  for latents in (tf.zeros([B, dim]), tf.zeros([B, N, dim + 1]), np.zeros([B, 1, N, dim])):
    with pytest.raises(ValueError, match=rf"latents of shape \[batch, objects, {dim}\]"):
      built.decode(latents)
  # Any number of objects decodes, none included; arrays as tensors.
  for objects in (0, 1, N + 2):
    assert built.decode(np.zeros([B, objects, dim], np.float32)).shape == (B, 64, 64, 3)


def test_encode_takes_numpy_images_as_it_takes_tensors():
  mvae = model.build_model(config.ModelConfig("mvae", N, D))
  images = _images()
  from_array, from_tensor = mvae.encode(images.numpy()), mvae.encode(images)
  for key, value in from_tensor.items():
    np.testing.assert_array_equal(from_array[key].numpy(), value.numpy(), err_msg=key)


def test_negative_elbo_known_answer():
  images = tf.concat([tf.zeros([1, 64, 64, 3]), tf.ones([1, 64, 64, 3])], axis=0)
  kl = tf.constant([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
  terms = losses.negative_elbo(images, tf.zeros([2, 64, 64, 3]), kl)
  # Logits 0 give p = 1/2 for every value: log 2 nats each.
  np.testing.assert_allclose(terms["nll"].numpy(), [64 * 64 * 3 * math.log(2)] * 2,
                             rtol=1e-5)
  np.testing.assert_allclose(terms["kl"].numpy(), [3.5, 0.0])
  np.testing.assert_allclose(terms["loss"].numpy(), terms["nll"].numpy() + [3.5, 0.0])
  np.testing.assert_allclose(terms["elbo"].numpy(), -terms["loss"].numpy())
  confident = losses.bernoulli_nll(images, tf.constant(40.0) * (2 * images - 1))
  np.testing.assert_allclose(confident.numpy(), [0.0, 0.0], atol=1e-6)


def test_bernoulli_nll_and_its_gradient_equal_tfs_at_extreme_logits():
  rng = np.random.RandomState(4)
  images = tf.constant(rng.rand(3, 64, 64, 3).astype(np.float32))  # Intensities in [0, 1].
  # Logits from -100 to 100: TF's formula is stable there, and so must ours be.
  logits = tf.constant((rng.randn(3, 64, 64, 3) * 30).clip(-100, 100).astype(np.float32))
  weights = tf.constant([1.0, -2.0, 0.5])

  def value_and_gradient(nll):
    with tf.GradientTape() as tape:
      tape.watch(logits)
      value = nll(images, logits)
      total = tf.reduce_sum(weights * value)
    return value, tape.gradient(total, logits)

  value, gradient = value_and_gradient(losses.bernoulli_nll)
  expected, expected_gradient = value_and_gradient(lambda x, l: tf.reduce_sum(
      tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=l), axis=[1, 2, 3]))
  assert np.all(np.isfinite(value.numpy()))
  np.testing.assert_allclose(value.numpy(), expected.numpy(), rtol=1e-6)
  np.testing.assert_allclose(gradient.numpy(), expected_gradient.numpy(), atol=1e-6)
  # Worked answer: d/dl of sum (softplus(l) - x l) is sigmoid(l) - x, times each weight.
  np.testing.assert_allclose(
      gradient.numpy(),
      weights.numpy()[:, None, None, None] * (tf.sigmoid(logits) - images).numpy(), atol=1e-6)


def test_unselected_kl_known_answer_with_and_without_free_nats():
  """On a planted 2x2 KL map with the 20-nat cell selected, the left-out cells (3, 0.5
  and 12 nats) cost 15.5 in all, and 7 beyond 5 free nats each."""
  kl_map = tf.constant([[[20.0, 3.0], [0.5, 12.0]]])  # [B=1, H=2, W=2]
  kl = tf.constant([[20.0]])  # [B=1, N=1]
  np.testing.assert_allclose(losses.unselected_kl(kl_map, kl).numpy(), [15.5])
  np.testing.assert_allclose(losses.unselected_kl(kl_map, kl, free_nats=5.0).numpy(), [7.0])
  # With the 3-nat cell selected instead, the 20-nat cell costs its 15 nats beyond 5 and
  # the 12-nat cell its 7.
  np.testing.assert_allclose(
      losses.unselected_kl(kl_map, tf.constant([[3.0]]), free_nats=5.0).numpy(), [22.0])


def test_object_sparsity_known_answer_and_splitting_costs_more():
  kl = tf.constant([[0.0, math.e - 1.0, 1.0], [3.0, 0.0, 0.0]])
  np.testing.assert_allclose(losses.object_sparsity(kl).numpy(),
                             [1.0 + math.log(2.0), math.log(4.0)], rtol=1e-6)
  # One sprite's 20 nats in one object, or spread over two as 12 + 8: the rate (the ELBO's
  # kl) is the same, the sparsity cost is higher by log(1 + 12 * 8 / 21).
  whole, split = tf.constant([[20.0, 0.0]]), tf.constant([[12.0, 8.0]])
  assert float(tf.reduce_sum(whole)) == float(tf.reduce_sum(split))
  np.testing.assert_allclose(
      (losses.object_sparsity(split) - losses.object_sparsity(whole)).numpy(),
      [math.log(1.0 + 12.0 * 8.0 / 21.0)], rtol=1e-5)


@pytest.mark.parametrize("model_config", [
    config.ModelConfig("mvae", N, D), config.ModelConfig("vae", 1, 7),
    config.ModelConfig("mvae", N, D, learned_background=True),
    config.ModelConfig("mvae", N, D, position_in_cell=True),
    config.ModelConfig("mvae", N, D, head_kernel=1),
    config.ModelConfig("vae", 1, 7, head_kernel=1)],
                         ids=["mvae", "vae", "mvae_learned_background", "mvae_position_in_cell",
                              "mvae_head_kernel_1", "vae_head_kernel_1"])
def test_a_checkpoint_holds_every_variable(tmp_path, model_config):
  """tf.train.Checkpoint must reach every weight (Keras 3 lists of layers it would miss)."""
  saved = model.build_model(model_config)
  path = tf.train.Checkpoint(model=saved).write(str(tmp_path / "ckpt"))
  names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
  assert sum(name.startswith("model/") for name in names) == len(saved.weights)
  restored = model.build_model(model_config)
  tf.train.Checkpoint(model=restored).read(path).assert_consumed()
  for a, b in zip(saved.weights, restored.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  images = _images()
  np.testing.assert_array_equal(saved(images)["logits"].numpy(),
                                restored(images)["logits"].numpy())


@pytest.mark.parametrize("model_config", [config.ModelConfig("mvae", N, D, head_kernel=1),
                                          config.ModelConfig("vae", 1, 7, head_kernel=1)],
                         ids=["mvae", "vae"])
def test_head_kernel_reaches_the_encoders_head(model_config):
  built = model.build_model(model_config)
  assert built.encoder.head.kernel.shape[:2] == (1, 1)
  assert built.config == model_config


@pytest.mark.parametrize("model_config, precision", [
    (config.ModelConfig("mvae", N, D), "float32"),
    (config.ModelConfig("mvae", N, D, "gated_sum", num_pooling=3, suppression_radius=1,
                        decoder_width=2, learned_background=True, position_in_cell=True,
                        head_kernel=1, suppression_kl_ratio=0.5), "float32"),
    (config.ModelConfig("mvae", N, D), "mixed_bfloat16"),
    (config.ModelConfig("vae", 1, 7, num_pooling=3), "float32")],
                         ids=["mvae", "mvae_every_option", "mvae_bf16", "vae"])
def test_the_keras_format_round_trips(tmp_path, model_config, precision):
  """`model.save("m.keras")` and `keras.models.load_model` give the same model: its class,
  config, precision and weights (made distinct from any fresh initialisation first)."""
  import keras
  saved = model.build_model(model_config, precision)
  rng = np.random.RandomState(3)
  for weight in saved.weights:
    weight.assign(weight.numpy() + rng.normal(0.0, 0.1, weight.shape).astype(np.float32))
  path = str(tmp_path / "m.keras")
  saved.save(path)
  loaded = keras.models.load_model(path)
  assert type(loaded) is type(saved) and loaded.name == saved.name
  assert loaded.config == model_config and loaded.precision == precision
  assert loaded.get_config() == saved.get_config()
  assert [w.path for w in loaded.weights] == [w.path for w in saved.weights]
  for a, b in zip(saved.weights, loaded.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
  images = _images()
  np.testing.assert_array_equal(saved(images)["logits"].numpy(),
                                loaded(images)["logits"].numpy())
