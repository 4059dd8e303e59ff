"""Warm start (`train.py --init_from`): weights and step from an export, Adam's moments
estimated, clear errors before anything is written."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import config, export, training, training_data, warm_start
from strategies import strategy as _strategy

# Tiny sizes: 2 sprites, N = 3 objects, D = 5, an 8x8 grid, batch 4.
MODEL = config.ModelConfig("mvae", num_objects=3, latent_dim=5, num_pooling=3)
QUIET = training.LoopOptions(log_every_secs=1e9, summary_every_steps=100,
                             image_every_steps=100)
# A constant rate, so that the expected Adam update below is simple to write.
CONSTANT_RATE = dict(learning_rate=1e-3, final_learning_rate=1e-3)


def _train_config(**overrides):
  settings = dict(num_sprites=2, batch_size=4, train_steps=2, seed=5, kl_warmup_steps=4,
                  **CONSTANT_RATE)
  settings.update(overrides)
  return config.TrainConfig(**settings)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A 2-step run of MODEL, exported: (version directory, the run's weights by path)."""
  base = tmp_path_factory.mktemp("warm")
  model_dir = str(base / "run")
  training.train(MODEL, _train_config(), model_dir, _strategy("/cpu:0"), QUIET,
                 log=lambda _: None)
  path = export.export(model_dir, str(base / "export"))
  from mvae_tf import checkpoints
  model = checkpoints.restore_model(model_dir)[0]
  return path, {v.path: v.numpy() for v in model.variables}


def test_read_export_gives_every_weight_by_path_the_step_and_the_metadata(exported):
  path, weights = exported
  read = warm_start.read_export(path)
  assert read.step == 2 and read.path == path
  assert read.metadata["model"] == "mvae" and read.metadata["num_objects"] == 3
  assert read.metadata["latent_dim"] == 5 and read.metadata["grid_size"] == 8
  assert sorted(read.values) == sorted(weights)
  for name, value in weights.items():
    np.testing.assert_array_equal(read.values[name], value)


def test_assign_weights_makes_a_new_model_compute_the_exported_function(exported):
  path, weights = exported
  trainer = training.Trainer(MODEL, _train_config(seed=9), _strategy("/cpu:0"))
  model = trainer.model
  assert any(not np.array_equal(v.numpy(), weights[v.path]) for v in model.variables)
  warm_start.assign_weights(model, warm_start.read_export(path))
  images = tf.random.stateless_uniform([2, 64, 64, 3], seed=[1, 2])
  served = tf.saved_model.load(path).signatures["encode"](images=images)
  live = model.encode(images)
  for key in ("loc", "scale", "kl", "kl_map"):
    np.testing.assert_allclose(live[key].numpy(), served[key].numpy(), rtol=1e-5, atol=1e-6)


def test_mean_squared_gradients_known_answer():
  means = warm_start.mean_squared_gradients(
      iter([[np.array([1.0, -2.0]), np.array(3.0)], [np.array([3.0, 0.0]), np.array(-1.0)]]))
  np.testing.assert_allclose(means[0], [5.0, 2.0])
  np.testing.assert_allclose(means[1], 5.0)
  with pytest.raises(ValueError, match="at least one batch"):
    warm_start.mean_squared_gradients(iter([]))


def test_start_from_sets_the_step_and_moments_and_the_next_update_is_adams(exported):
  """After `start_from(t, v)` the first step applies Adam's update with m = 0 and v set:
  m' = 0.1 g, v' = 0.999 v + 0.001 g**2,
  w' = w - lr * sqrt(1 - 0.999**(t+1)) / (1 - 0.9**(t+1)) * m' / (sqrt(v') + 1e-7)."""
  path, _ = exported
  train_config = _train_config()
  trainer = training.Trainer(MODEL, train_config, _strategy("/cpu:0"))
  warm_start.assign_weights(trainer.model, warm_start.read_export(path))
  step = 2
  trainer.optimizer.iterations.assign(step)
  batch = next(iter(trainer.distribute(
      training_data.training_dataset(MODEL, train_config, step).take(1))))
  gradients = [g.numpy() for g in trainer.global_gradients(batch)]
  second = [np.full_like(g, 0.5) + g ** 2 for g in gradients]
  trainer.start_from(step, second)
  assert trainer.step == step
  before = [v.numpy() for v in trainer.model.trainable_variables]
  trainer.train_step(batch)
  assert trainer.step == step + 1
  t = step + 1
  rate = 1e-3 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
  for w, g, v, after in zip(before, gradients, second, trainer.model.trainable_variables):
    m_new, v_new = 0.1 * g, 0.999 * v + 0.001 * g ** 2
    np.testing.assert_allclose(after.numpy(), w - rate * m_new / (np.sqrt(v_new) + 1e-7),
                               rtol=1e-4, atol=1e-8)


def test_global_gradients_of_two_replicas_equal_one_replicas(exported):
  path, _ = exported
  train_config = _train_config()
  results = []
  for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
    trainer = training.Trainer(MODEL, train_config, _strategy(*devices))
    warm_start.assign_weights(trainer.model, warm_start.read_export(path))
    batch = next(iter(training_data.distributed_training_data(trainer.strategy, MODEL,
                                                         train_config, 2)))
    results.append([g.numpy() for g in trainer.global_gradients(batch)])
  # Summation order differs between one replica and two: relative to each gradient's scale.
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(a).max())


def test_a_warm_started_run_continues_at_the_exported_step_and_then_resumes(
    exported, tmp_path):
  path, weights = exported
  model_dir = str(tmp_path / "continued")
  lines = []
  assert training.train(MODEL, _train_config(train_steps=3), model_dir, _strategy("/cpu:0"),
                        QUIET, log=lines.append, init_from=path) == 3
  assert any(f"Started from the export {path} at step 2" in line for line in lines)
  assert any("from step 2 to 3" in line for line in lines)
  with open(os.path.join(model_dir, warm_start.WARM_START_FILE)) as f:
    record = json.load(f)
  assert record["step"] == 2 and record["init_from"] == os.path.abspath(path)
  assert record["moment_batches"] == warm_start.MOMENT_BATCHES
  # One step from the exported weights: close to them, not equal.
  from mvae_tf import checkpoints
  model, _, _, step = checkpoints.restore_model(model_dir)
  assert step == 3
  changes = [np.max(np.abs(v.numpy() - weights[v.path])) for v in model.trainable_variables]
  assert 0 < max(changes) < 0.01
  # With a checkpoint in the directory the same command resumes from it.
  lines = []
  assert training.train(MODEL, _train_config(train_steps=4), model_dir, _strategy("/cpu:0"),
                        QUIET, log=lines.append, init_from=path) == 4
  assert any("is not used" in line for line in lines)
  assert any("Resumed" in line and "step 3" in line for line in lines)


@pytest.mark.parametrize("model_config, train_overrides, message", [
    (dataclasses.replace(MODEL, num_objects=4), {},
     r"the export has num_objects=3 but this run has num_objects=4"),
    (dataclasses.replace(MODEL, num_pooling=4), {},
     r"the export has grid_size=8 but this run has grid_size=4"),
    (config.ModelConfig("vae", 1, 5), {}, r"the export has model='mvae' but this run has "
                                          r"model='vae'"),
    (dataclasses.replace(MODEL, decoder_width=2), {},
     r"its variables do not match this run's model \(other shapes: mvae/decoder"),
    (dataclasses.replace(MODEL, learned_background=True), {},
     r"its variables do not match this run's model \(missing mvae/decoder"),
    (MODEL, {"train_steps": 2}, r"is at step 2, not below --train_steps=2"),
])
def test_an_export_of_another_configuration_is_refused_and_nothing_is_written(
    exported, tmp_path, model_config, train_overrides, message):
  path, _ = exported
  model_dir = tmp_path / "run"
  train_config = _train_config(**{"train_steps": 5, **train_overrides})
  with pytest.raises(config.ConfigError, match=message):
    training.train(model_config, train_config, str(model_dir), _strategy("/cpu:0"), QUIET,
                   log=lambda _: None, init_from=path)
  assert not model_dir.exists() or not os.listdir(model_dir)


def test_a_directory_that_is_not_an_export_is_refused(tmp_path):
  (tmp_path / "base" / "7").mkdir(parents=True)
  with pytest.raises(config.ConfigError, match=r"not a SavedModel .*the versions 7"):
    warm_start.read_export(str(tmp_path / "base"))
  with pytest.raises(config.ConfigError, match=r"no such directory"):
    warm_start.read_export(str(tmp_path / "missing"))
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "saved_model.pb").write_bytes(b"not a protobuf")
  with pytest.raises(config.ConfigError, match=r"cannot load the SavedModel"):
    warm_start.read_export(str(tmp_path / "bad"))


def test_a_saved_model_that_export_py_did_not_write_is_refused(tmp_path):
  module = tf.Module()
  module.metadata = tf.function(lambda: {"model": tf.constant("mvae")}, input_signature=[])
  path = str(tmp_path / "other")
  tf.saved_model.save(module, path, signatures={"metadata": module.metadata})
  with pytest.raises(config.ConfigError,
                     match=r"no grid_size, latent_dim, num_objects, step in its metadata"):
    warm_start.read_export(path)
  path = str(tmp_path / "plain")
  tf.saved_model.save(tf.Module(), path)
  with pytest.raises(config.ConfigError, match=r"has no metadata signature"):
    warm_start.read_export(path)
