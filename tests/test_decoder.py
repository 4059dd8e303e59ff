"""The decoder f = h . pool . g: folding, permutation invariance, any number of objects."""

import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import decoder, native_ops

B, N, D = 2, 3, 5
# The training step's compiled kernels (`native_ops`), as a parameter of the pooling's tests.
COMPILED = pytest.param(True, marks=pytest.mark.skipif(shutil.which("c++") is None,
                                                      reason="no C++ compiler `c++` on PATH"))


@pytest.fixture(params=["max", "sum", "softmax", "gated_sum"])
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
  with pytest.raises(ValueError, match=r"Expected 'max', 'sum', 'softmax' or 'gated_sum'. "
                                       r"Received: aggregation='mean'"):
    decoder.Decoder("mean")


def test_softmax_aggregation_known_answers():
  # Two objects at one position, channels (claim, feature): claims 0 and log 3 weigh them
  # 1/4 and 3/4.
  objects = tf.constant([[[0.0, 8.0], [np.log(3.0), 4.0]]])  # [B=1, N=2, C=2]
  np.testing.assert_allclose(decoder.aggregate(objects, "softmax").numpy(),
                             [[0.75 * np.log(3.0), 0.25 * 8.0 + 0.75 * 4.0]], rtol=1e-6)
  # A background claims its share like one more object.
  background = tf.constant([np.log(4.0), 0.0])
  np.testing.assert_allclose(
      decoder.aggregate(objects, "softmax", background).numpy(),
      [[(3 * np.log(3.0) + 4 * np.log(4.0)) / 8, (8.0 + 3 * 4.0) / 8]], rtol=1e-6)
  # One object's claim far above the others: its features alone.
  winner = tf.constant([[[50.0, 1.0, 2.0], [0.0, 7.0, 9.0]]])
  np.testing.assert_allclose(decoder.aggregate(winner, "softmax").numpy(),
                             [[50.0, 1.0, 2.0]], atol=1e-6)


@pytest.mark.parametrize("compiled", [False, COMPILED])
def test_softmax_aggregation_computes_its_weights_in_float32(compiled):
  objects = tf.cast(tf.constant([[[0.0, 8.0], [np.log(3.0), 4.0]]]), tf.bfloat16)
  with native_ops.training_kernels(native_ops.load() if compiled else None):
    pooled = decoder.aggregate(objects, "softmax")
  assert pooled.dtype == tf.bfloat16
  np.testing.assert_allclose(tf.cast(pooled, tf.float32).numpy()[0, 1], 5.0, rtol=1e-2)


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler `c++` on PATH")
def test_the_compiled_softmax_pool_in_bfloat16_rounds_tfs_float32_result_once():
  # The kernels read bf16 objects, compute in float32 and round once: within half a bf16
  # step (2^-8 of the value) of the float32 pooling of the same objects, both ways.
  rng = np.random.RandomState(3)
  objects = tf.cast(2.0 * rng.randn(3, 4, 5, 6).astype(np.float32), tf.bfloat16)
  upstream = tf.cast(rng.randn(3, 5, 6).astype(np.float32), tf.bfloat16)
  results = []
  for dtype, kernels in ((tf.bfloat16, native_ops.load()), (tf.float32, None)):
    x = tf.cast(objects, dtype)
    with tf.GradientTape() as tape, native_ops.training_kernels(kernels):
      tape.watch(x)
      pooled = decoder.aggregate(x, "softmax")
    results.append((pooled, tape.gradient(pooled, x, output_gradients=tf.cast(upstream, dtype))))
  for ours, exact in zip(results[0], results[1]):
    assert ours.dtype == tf.bfloat16
    error = np.abs(tf.cast(ours, tf.float32).numpy() - exact.numpy())
    assert np.all(error <= 2.0 ** -8 * np.abs(exact.numpy()) + 1e-6)


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler `c++` on PATH")
def test_the_compiled_softmax_pool_refuses_shapes_it_cannot_take():
  kernels = native_ops.load()
  with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
      "expected objects [batch, objects >= 1, ..., channels]; received shape [2,3]")):
    kernels.softmax_pool(tf.zeros([2, 3]))
  with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(
      "received shapes [2,3,4], [2,3,1] and [2,5]")):
    kernels.softmax_pool_grad(tf.zeros([2, 3, 4]), tf.zeros([2, 3, 1]), tf.zeros([2, 5]))


def test_softmax_aggregation_gradient_known_answer():
  # L = o_pool[1] with weights 1/4, 3/4 (as above): dL/do_n,1 = w_n, and through the
  # claims dL/ds_n = w_n (o_n,1 - o_pool,1) = 1/4 (8 - 5), 3/4 (4 - 5).
  objects = tf.constant([[[0.0, 8.0], [np.log(3.0), 4.0]]])  # [B=1, N=2, C=2]
  with tf.GradientTape() as tape:
    tape.watch(objects)
    loss = decoder.aggregate(objects, "softmax")[0, 1]
  np.testing.assert_allclose(tape.gradient(loss, objects).numpy(),
                             [[[0.75, 0.25], [-0.75, 0.75]]], rtol=1e-6)


def _plain_softmax_pool(objects):
  """The softmax pooling as TF differentiates it by itself: the reference for its gradient."""
  weights = tf.nn.softmax(objects[..., :1], axis=1)  # [B, N, ..., 1]
  return tf.reduce_sum(weights * objects, axis=1)


@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 1, 2, 5), (2, 4, 3, 2, 6)])
@pytest.mark.parametrize("with_background", [False, True])
@pytest.mark.parametrize("compiled", [False, COMPILED])  # The training step's kernels.
def test_softmax_aggregation_gradient_equals_tfs(shape, with_background, compiled):
  rng = np.random.RandomState(len(shape))
  objects = tf.constant(2.0 * rng.randn(*shape).astype(np.float32))
  background = tf.constant(rng.randn(*shape[2:]).astype(np.float32))
  upstream = tf.constant(rng.randn(shape[0], *shape[2:]).astype(np.float32))

  def gradients(pool):
    with tf.GradientTape() as tape:
      tape.watch([objects, background])
      if with_background:
        pooled = pool(objects, background)
      else:
        pooled = pool(objects)
      loss = tf.reduce_sum(upstream * pooled)
    return pooled, tape.gradient(loss, [objects, background])

  def reference(objects, background=None):
    if background is not None:
      background = tf.broadcast_to(background, [shape[0], 1, *shape[2:]])  # [B, 1, ...]
      objects = tf.concat([objects, background], axis=1)  # [B, N + 1, ...]
    return _plain_softmax_pool(objects)

  with native_ops.training_kernels(native_ops.load() if compiled else None):
    pooled, (grad, grad_background) = gradients(
        lambda objects, background=None: decoder.aggregate(objects, "softmax", background))
  expected, (expected_grad, expected_background) = gradients(reference)
  np.testing.assert_allclose(pooled.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad.numpy(), expected_grad.numpy(), rtol=1e-5, atol=1e-6)
  if with_background:
    np.testing.assert_allclose(grad_background.numpy(), expected_background.numpy(),
                               rtol=1e-5, atol=1e-6)
  else:
    assert grad_background is None


def test_softmax_aggregation_gradient_in_bfloat16_follows_float32():
  rng = np.random.RandomState(3)
  objects = rng.randn(2, 5, 4, 4, 16).astype(np.float32)
  upstream = rng.randn(2, 4, 4, 16).astype(np.float32)
  grads = {}
  for dtype in (tf.float32, tf.bfloat16):
    x = tf.cast(objects, dtype)
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(tf.cast(decoder.aggregate(x, "softmax"), tf.float32) * upstream)
    grad = tape.gradient(loss, x)
    assert grad.dtype == dtype
    grads[dtype] = tf.cast(grad, tf.float32).numpy()
  # bf16 keeps 8 bits of mantissa: each factor is rounded to about 0.4%.
  np.testing.assert_allclose(grads[tf.bfloat16], grads[tf.float32], rtol=0.05, atol=0.05)


def test_gated_sum_aggregation_known_answers():
  # Channels (gate input, feature): gates tanh(1 + c0), each object's own.
  objects = tf.constant([[[0.0, 8.0], [1.0, 4.0]]])  # [B=1, N=2, C=2]
  gates = np.tanh([1.0, 2.0])
  np.testing.assert_allclose(decoder.aggregate(objects, "gated_sum").numpy(),
                             [[gates[1] * 1.0, gates[0] * 8.0 + gates[1] * 4.0]], rtol=1e-6)
  # An object at ELU's floor (-1 in its gate channel) adds nothing: the pool of a scene
  # with a Null object equals the pool of its other objects, as decoding one object alone
  # needs.
  null = tf.constant([[[-1.0, 5.0]]])
  with_null = tf.concat([objects, null], axis=1)  # [1, 3, 2]
  np.testing.assert_allclose(decoder.aggregate(with_null, "gated_sum").numpy(),
                             decoder.aggregate(objects, "gated_sum").numpy(), rtol=1e-6)
  # Two overlapping objects add up, where softmax would average them.
  same = tf.constant([[[3.0, 2.0], [3.0, 2.0]]])
  np.testing.assert_allclose(decoder.aggregate(same, "gated_sum").numpy(),
                             2 * np.tanh(4.0) * np.array([[3.0, 2.0]]), rtol=1e-6)
  np.testing.assert_allclose(decoder.aggregate(same, "softmax").numpy(), [[3.0, 2.0]])
  # A background is gated like one more object.
  background = tf.constant([0.5, 2.0])
  np.testing.assert_allclose(
      decoder.aggregate(objects, "gated_sum", background).numpy(),
      decoder.aggregate(objects, "gated_sum").numpy() + np.tanh(1.5) * np.array([0.5, 2.0]),
      rtol=1e-6)


def test_gated_sum_aggregation_keeps_the_compute_dtype():
  objects = tf.cast(tf.constant([[[0.0, 8.0], [1.0, 4.0]]]), tf.bfloat16)
  pooled = decoder.aggregate(objects, "gated_sum")
  assert pooled.dtype == tf.bfloat16
  expected = np.tanh(1.0) * 8.0 + np.tanh(2.0) * 4.0
  np.testing.assert_allclose(tf.cast(pooled, tf.float32).numpy()[0, 1], expected, rtol=1e-2)


def test_aggregate_with_a_background_known_answers():
  objects = tf.constant([[[1.0, -2.0], [3.0, 0.5]]])  # [B=1, N=2, 2]
  background = tf.constant([2.0, 1.0])
  np.testing.assert_array_equal(decoder.aggregate(objects, "max", background).numpy(),
                                [[3.0, 1.0]])
  np.testing.assert_array_equal(decoder.aggregate(objects, "sum", background).numpy(),
                                [[6.0, -0.5]])


def _twin_decoders(aggregation):
  """A decoder with a learned background and one without, sharing g's and h's weights."""
  plain = decoder.Decoder(aggregation)
  plain.build((None, None, D))
  with_background = decoder.Decoder(aggregation, learned_background=True)
  with_background.build((None, None, D))
  for source, target in ((plain.object_network, with_background.object_network),
                         (plain.renderer, with_background.renderer)):
    target.set_weights(source.get_weights())
  return plain, with_background


@pytest.mark.parametrize("aggregation, identity", [("max", -1.0), ("sum", 0.0)])
def test_a_learned_background_at_the_poolings_identity_is_the_papers_decoder(aggregation,
                                                                             identity):
  plain, with_background = _twin_decoders(aggregation)
  # One extra weight, b [32, 32, C], starting at zero.
  extra = [w for w in with_background.weights if "background" in w.path]
  assert len(with_background.weights) == len(plain.weights) + 1 and len(extra) == 1
  assert tuple(extra[0].shape) == (32, 32, 16)
  np.testing.assert_array_equal(extra[0].numpy(), 0.0)
  # g's outputs are ELUs, >= -1: a background of -1 under max (0 under sum) changes nothing.
  extra[0].assign(np.full((32, 32, 16), identity, np.float32))
  latents = _latents()
  np.testing.assert_allclose(with_background(latents).numpy(), plain(latents).numpy(),
                             rtol=1e-5, atol=1e-5)


def test_objects_below_a_learned_background_change_nothing():
  _, dec = _twin_decoders("max")
  dec.background.assign(np.full((32, 32, 16), 50.0, np.float32))  # Above any g output here.
  empty = dec.renderer(tf.fill([B, 32, 32, 16], 50.0))  # h(b): the empty scene.
  for num_objects in (1, 4):
    np.testing.assert_allclose(dec(_latents(num_objects)).numpy(), empty.numpy(), atol=1e-5)


def test_learned_background_is_order_invariant_and_takes_any_number_of_objects():
  _, dec = _twin_decoders("max")
  dec.background.assign(np.random.RandomState(1).randn(32, 32, 16).astype(np.float32))
  latents = _latents()
  np.testing.assert_allclose(dec(tf.gather(latents, [2, 0, 1], axis=1)).numpy(),
                             dec(latents).numpy(), rtol=1e-5, atol=1e-5)
  assert dec(_latents(1)).shape == (B, 64, 64, 3)


def test_learned_background_must_be_a_bool():
  with pytest.raises(ValueError, match=r"Expected True or False. Received: "
                                       r"learned_background='yes'"):
    decoder.Decoder("max", learned_background="yes")


def _positioned_decoder(latent_dim=D):
  dec = decoder.Decoder("max", position_in_cell=True)
  dec.build((None, None, latent_dim))
  return dec


def test_position_in_cell_leaves_the_position_out_of_g():
  dec = _positioned_decoder()
  assert dec.object_network.dense1.kernel.shape == (D - 2, 256)
  assert dec(_latents()).shape == (B, 64, 64, 3)
  assert dec(_latents(1)).shape == (B, 64, 64, 3)


def test_position_in_cell_is_order_invariant():
  dec = _positioned_decoder()
  latents = _latents()
  np.testing.assert_allclose(dec(tf.gather(latents, [1, 2, 0], axis=1)).numpy(),
                             dec(latents).numpy(), rtol=1e-5, atol=1e-5)


def test_moving_the_position_moves_the_decoded_object():
  """One object moved by one pixel of g's 32x32 map is the same image moved by 2 pixels."""
  dec = _positioned_decoder()
  appearance = _latents(1)[..., 2:]  # [B, 1, D - 2]
  positions = tf.constant([[[0.05, -0.1]], [[-0.2, 0.15]]])  # [B, 1, 2], near the middle
  latents = tf.concat([positions, appearance], axis=-1)  # [B, 1, D]
  step = tf.constant([2.0 / 32, -4.0 / 32] + [0.0] * (D - 2))  # (1, -2) pixels at 32x32
  here = dec(latents).numpy()
  there = dec(latents + step).numpy()
  # Away from the edges, where h's padding and the clamped border differ:
  np.testing.assert_allclose(there[:, 10:54, 6:50], here[:, 8:52, 10:54], rtol=1e-4,
                             atol=1e-4)
  assert np.abs(there - here).max() > 1e-2  # It moved.


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_position_in_cell_needs_an_appearance(latent_dim):
  with pytest.raises(ValueError, match=r"position_in_cell needs latents of more than 2"):
    _positioned_decoder(latent_dim)


def test_position_in_cell_must_be_a_bool():
  with pytest.raises(ValueError, match=r"Expected True or False. Received: "
                                       r"position_in_cell=1"):
    decoder.Decoder("max", position_in_cell=1)


def test_the_image_has_a_gradient_with_respect_to_the_position():
  dec = _positioned_decoder()
  latents = tf.Variable(_latents(2) * tf.constant([0.2, 0.2] + [1.0] * (D - 2)))
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.square(dec(latents)))
  gradient = tape.gradient(loss, latents).numpy()  # [B, 2, D]
  assert np.all(np.abs(gradient[..., :2]) > 0)


def test_position_in_cell_traces_with_dynamic_batch_and_objects():
  dec = _positioned_decoder()
  fn = tf.function(dec).get_concrete_function(tf.TensorSpec([None, None, D]))
  assert fn.structured_outputs.shape.as_list() == [None, 64, 64, 3]
  np.testing.assert_allclose(fn(_latents(2)).numpy(), dec(_latents(2)).numpy(), atol=1e-5)
