"""The decoder f = h . pool . g: folding, permutation invariance, any number of objects."""

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import decoder

B, N, D = 2, 3, 5


@pytest.fixture(params=["max", "sum"])
def dec(request):
  layer = decoder.Decoder(request.param)
  layer.build((None, None, D))
  return layer


def _latents(n=N, seed=0):
  return tf.constant(np.random.RandomState(seed).randn(B, n, D).astype(np.float32))


def test_output_shape(dec):
  assert dec(_latents()).shape == (B, 64, 64, 3)


def test_folded_equals_a_loop_over_objects(dec):
  latents = _latents()
  per_object = tf.stack([dec.object_network(latents[:, n]) for n in range(N)], axis=1)
  # `per_object` has shape [B, N, 32, 32, C].
  looped = dec.renderer(decoder.aggregate(per_object, dec.aggregation))
  np.testing.assert_allclose(dec(latents).numpy(), looped.numpy(), rtol=1e-5, atol=1e-5)


def test_invariant_to_object_order(dec):
  latents = _latents()
  for permutation in ([2, 0, 1], [1, 2, 0], [2, 1, 0]):
    permuted = tf.gather(latents, permutation, axis=1)
    np.testing.assert_allclose(dec(permuted).numpy(), dec(latents).numpy(),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_objects", [1, 2, 7])
def test_any_number_of_objects(dec, num_objects):
  assert dec(_latents(num_objects)).shape == (B, 64, 64, 3)


def test_max_of_a_duplicated_object_changes_nothing():
  dec = decoder.Decoder("max")
  latents = _latents(2)
  doubled = tf.concat([latents, latents[:, :1]], axis=1)
  np.testing.assert_allclose(dec(doubled).numpy(), dec(latents).numpy(), atol=1e-6)


def test_dynamic_batch_and_objects(dec):
  fn = tf.function(dec).get_concrete_function(tf.TensorSpec([None, None, D]))
  assert fn.structured_outputs.shape.as_list() == [None, 64, 64, 3]


def test_aggregate_known_answers():
  objects = tf.constant([[[1.0, -2.0], [3.0, 0.5]]])  # [B=1, N=2, 2]
  np.testing.assert_array_equal(decoder.aggregate(objects, "max").numpy(), [[3.0, 0.5]])
  np.testing.assert_array_equal(decoder.aggregate(objects, "sum").numpy(), [[4.0, -1.5]])


def test_unknown_aggregation():
  with pytest.raises(ValueError, match=r"aggregation.*Received: aggregation='mean'"):
    decoder.Decoder("mean")
