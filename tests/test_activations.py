"""`activations.elu`: TF's ELU, its bf16 gradient from the compiled kernel only in training."""

import shutil

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import activations, config, native_ops, training
from strategies import strategy as _strategy

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None,
                                    reason="no C++ compiler `c++` on PATH")
MODEL = config.ModelConfig("mvae", num_objects=3, latent_dim=5, num_pooling=3)


def _gradient_graph_ops(dtype, kernel):
  """The op types of elu's forward and gradient, traced with `kernel` in scope."""
  x = tf.cast(tf.linspace(-3.0, 3.0, 24), dtype)

  @tf.function
  def value_and_gradient(x):
    with tf.GradientTape() as tape, activations.elu_gradient(kernel):
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
  kernel = native_ops.load_elu_grad()
  ops, y, dx = _gradient_graph_ops(tf.bfloat16, kernel)
  plain_ops, plain_y, plain_dx = _gradient_graph_ops(tf.bfloat16, None)
  assert "MvaeEluGrad" in ops and "EluGrad" not in ops
  assert "EluGrad" in plain_ops and "MvaeEluGrad" not in plain_ops
  np.testing.assert_array_equal(tf.bitcast(y, tf.uint16), tf.bitcast(plain_y, tf.uint16))
  np.testing.assert_array_equal(tf.bitcast(dx, tf.uint16), tf.bitcast(plain_dx, tf.uint16))
  assert np.count_nonzero(tf.cast(dx, tf.float32).numpy()) == 23  # Only dy[0] is 0.


def test_float32_elu_keeps_tfs_gradient_in_scope():
  calls = []
  ops, y, _ = _gradient_graph_ops(tf.float32, lambda dy, y: calls.append(1) or dy)
  assert "EluGrad" in ops and not calls
  np.testing.assert_array_equal(y, tf.nn.elu(tf.linspace(-3.0, 3.0, 24)))


def _train(precision, native_kernels, steps=3):
  train_config = config.TrainConfig(num_sprites=2, batch_size=6, train_steps=steps, seed=4,
                                    precision=precision)
  trainer = training.Trainer(MODEL, train_config, _strategy("/cpu:0"),
                             native_kernels=native_kernels)
  iterator = iter(trainer.distribute(training.training_dataset(MODEL, train_config)))
  losses = [float(trainer.train_step(next(iterator))["loss"]) for _ in range(steps)]
  return trainer, losses, [v.numpy() for v in trainer.model.trainable_variables]


@needs_compiler
def test_the_bf16_step_with_the_compiled_kernel_trains_exactly_as_with_tfs():
  native, native_losses, native_weights = _train("mixed_bfloat16", True)
  plain, plain_losses, plain_weights = _train("mixed_bfloat16", False)
  assert native.elu_gradient_kernel is not None and native.native_kernel_error is None
  assert plain.elu_gradient_kernel is None
  assert native_losses == plain_losses
  for ours, tfs in zip(native_weights, plain_weights):
    np.testing.assert_array_equal(ours, tfs)


def test_float32_training_builds_no_kernel(monkeypatch):
  monkeypatch.setattr(native_ops, "load_elu_grad", lambda: pytest.fail("built a kernel"))
  trainer, _, _ = _train("float32", True, steps=1)
  assert trainer.elu_gradient_kernel is None and trainer.native_kernel_error is None


def test_a_kernel_that_cannot_be_built_leaves_tfs_and_one_log_line(monkeypatch, tmp_path):
  def fail():
    raise native_ops.BuildError("no C++ compiler 'c++' on PATH")
  monkeypatch.setattr(native_ops, "load_elu_grad", fail)
  lines = []
  settings = dict(num_sprites=2, batch_size=4, seed=5, train_steps=1,
                  precision="mixed_bfloat16")
  assert training.train(MODEL, config.TrainConfig(**settings), str(tmp_path), _strategy("/cpu:0"),
                        training.LoopOptions(log_every_secs=1e9), log=lines.append) == 1
  assert [line for line in lines if "ELU" in line] == [
      "The bf16 ELU gradient runs TF's slower kernel: no C++ compiler 'c++' on PATH"]
