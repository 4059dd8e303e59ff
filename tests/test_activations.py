"""`activations.elu` and the training step with the compiled kernels: TF's functions."""

import dataclasses
import shutil

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import activations, config, native_ops, training, training_data
from strategies import strategy as _strategy

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None,
                                    reason="no C++ compiler `c++` on PATH")
MODEL = config.ModelConfig("mvae", num_objects=3, latent_dim=5, num_pooling=3)


def _gradient_graph_ops(dtype, kernels):
  """The op types of elu's forward and gradient, traced with `kernels` in scope."""
  x = tf.cast(tf.linspace(-3.0, 3.0, 24), dtype)

  @tf.function
  def value_and_gradient(x):
    with tf.GradientTape() as tape, native_ops.training_kernels(kernels):
      tape.watch(x)
      y = activations.elu(x)
    return y, tape.gradient(y, x, output_gradients=tf.cast(tf.range(24.0), dtype))

  graph = value_and_gradient.get_concrete_function(x).graph
  ops = {op.type for op in graph.get_operations()}
  for function in graph.as_graph_def().library.function:
    ops |= {node.op for node in function.node_def}
  y, dx = value_and_gradient(x)
  return ops, y, dx


@needs_compiler
def test_in_scope_bf16_elu_differentiates_with_the_kernel_exactly_as_tf():
  ops, y, dx = _gradient_graph_ops(tf.bfloat16, native_ops.load())
  plain_ops, plain_y, plain_dx = _gradient_graph_ops(tf.bfloat16, None)
  assert "MvaeEluGrad" in ops and "EluGrad" not in ops
  assert "EluGrad" in plain_ops and "MvaeEluGrad" not in plain_ops
  np.testing.assert_array_equal(tf.bitcast(y, tf.uint16), tf.bitcast(plain_y, tf.uint16))
  np.testing.assert_array_equal(tf.bitcast(dx, tf.uint16), tf.bitcast(plain_dx, tf.uint16))
  assert np.count_nonzero(tf.cast(dx, tf.float32).numpy()) == 23  # Only dy[0] is 0.


def test_float32_elu_keeps_tfs_gradient_in_scope():
  calls = []
  kernels = native_ops.Kernels(**{field.name: None for field in
                                  dataclasses.fields(native_ops.Kernels)})
  kernels = dataclasses.replace(kernels, elu_grad=lambda dy, y: calls.append(1) or dy)
  ops, y, _ = _gradient_graph_ops(tf.float32, kernels)
  assert "EluGrad" in ops and not calls
  np.testing.assert_array_equal(y, tf.nn.elu(tf.linspace(-3.0, 3.0, 24)))


def _gradients(precision, native_kernels):
  """The first step's global gradients from seed 4, and the trainer."""
  train_config = config.TrainConfig(num_sprites=2, batch_size=6, train_steps=3, seed=4,
                                    precision=precision)
  trainer = training.Trainer(MODEL, train_config, _strategy("/cpu:0"),
                             native_kernels=native_kernels)
  batch = next(iter(trainer.distribute(training_data.training_dataset(MODEL, train_config))))
  return trainer, [g.numpy() for g in trainer.global_gradients(batch)]


# Each variable's gradient, ||ours - TF's|| / ||TF's||. In float32 the kernels compute the
# upsampling, the softmax pooling and (where oneDNN runs AVX2) the filter gradients in
# another order than TF's ops (measured at most 2.6e-6 over the model's variables).
@needs_compiler
def test_the_float32_step_with_the_compiled_kernels_has_tfs_gradients():
  native, ours = _gradients("float32", True)
  plain, tfs = _gradients("float32", False)
  assert native.kernels is not None and native.native_kernel_error is None
  assert plain.kernels is None
  for name, (a, b) in zip([v.path for v in native.model.trainable_variables], zip(ours, tfs)):
    assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(b), name


# In bf16 the ELU gradient is bit for bit TF's, but the upsampling and the pooling round
# once where TF's ops round twice or more, which moves activations by bf16 steps (2^-8).
# How far that takes the gradients from TF's bf16 ones depends on how TF computes in bf16:
# at most 0.6% on CPUs with bf16 units (oneDNN's kernels), up to 3.8% on an AVX2-only AMD
# EPYC, where TF's bf16 convolutions run in Eigen and its own bf16 gradients differ from the
# float32 ones by 3-10%. So the kernels are held to TF's own accuracy: each variable's bf16
# gradient no farther from the float32 gradient than TF's bf16 ops' (measured at most
# 1.013x as far there), with a tenth of slack.
@needs_compiler
def test_the_bfloat16_step_with_the_compiled_kernels_is_as_accurate_as_tfs():
  native, ours = _gradients("mixed_bfloat16", True)
  plain, tfs = _gradients("mixed_bfloat16", False)
  _, exact = _gradients("float32", False)
  assert native.kernels is not None and plain.kernels is None
  for name, a, b, c in zip([v.path for v in native.model.trainable_variables], ours, tfs,
                           exact):
    assert np.linalg.norm(a - c) <= 1.1 * np.linalg.norm(b - c), name
    assert np.linalg.norm(a - b) <= 0.1 * np.linalg.norm(c), name  # the same function


def test_kernels_that_cannot_be_built_leave_tfs_ops_and_one_log_line(monkeypatch, tmp_path):
  def fail():
    raise native_ops.BuildError("no C++ compiler 'c++' on PATH")
  monkeypatch.setattr(native_ops, "load", fail)
  lines = []
  settings = dict(num_sprites=2, batch_size=4, seed=5, train_steps=1,
                  precision="mixed_bfloat16")
  assert training.train(MODEL, config.TrainConfig(**settings), str(tmp_path),
                        _strategy("/cpu:0"), training.LoopOptions(log_every_secs=1e9),
                        log=lines.append) == 1
  assert [line for line in lines if "kernels" in line] == [
      "The kernels compiled for this CPU are not used, so each step runs TF's slower ops: "
      "no C++ compiler 'c++' on PATH"]
