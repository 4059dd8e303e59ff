"""Training: 1 vs 2 replicas, learning progress, exact resume, model-directory checks."""

import dataclasses
import json
import os
import re

import numpy as np
import tensorflow as tf
import pytest

from mvae_tf import checkpoints, config, run_dir, training, training_data
from strategies import strategy as _strategy

# Tiny distinct sizes: 2 sprites, N = 3 objects, D = 5, batch 4 (2 per replica).
MODEL = config.ModelConfig("mvae", num_objects=3, latent_dim=5, num_pooling=3)
QUIET = training.LoopOptions(log_every_secs=1e9, summary_every_steps=2, image_every_steps=3)


def _train_config(**overrides):
  settings = dict(num_sprites=2, batch_size=4, train_steps=2, seed=5)
  settings.update(overrides)
  return config.TrainConfig(**settings)


def _one_step(devices, model_config=MODEL):
  train_config = _train_config()
  trainer = training.Trainer(model_config, train_config, _strategy(*devices))
  initial = [v.numpy() for v in trainer.model.trainable_variables]
  dataset = training_data.training_dataset(model_config, train_config).take(1)
  metrics = trainer.train_step(next(iter(trainer.distribute(dataset))))
  weights = [v.numpy() for v in trainer.model.trainable_variables]
  # Adam's first moments are 0.1 * gradient after one step: unlike Adam's update, they
  # change with the gradient's scale, so they catch a wrong reduction across replicas.
  moments = [v.numpy() for v in trainer.optimizer.variables if "momentum" in v.path]
  assert len(moments) == len(weights)
  return initial, {k: float(v) for k, v in metrics.items()}, weights, moments


@pytest.mark.parametrize("model_config", [MODEL, config.ModelConfig("vae", 1, 7)],
                         ids=["mvae", "vae"])
def test_one_and_two_replicas_take_the_same_step(model_config):
  initial_1, metrics_1, weights_1, moments_1 = _one_step(["/cpu:0"], model_config)
  initial_2, metrics_2, weights_2, moments_2 = _one_step(["/cpu:0", "/cpu:1"], model_config)
  for a, b in zip(moments_1, moments_2):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(a).max())
  for a, b in zip(initial_1, initial_2):
    np.testing.assert_array_equal(a, b)
  for name in ("nll", "kl", "loss"):
    assert metrics_1[name] == pytest.approx(metrics_2[name], rel=1e-5), name
  moved = 0
  for before, a, b in zip(initial_1, weights_1, weights_2):
    # Adam's first step is lr * g / (|g| + eps): where a gradient is near eps, summation
    # order alone moves the step, so the weights agree to 5% of one step (lr = 1e-3).
    np.testing.assert_allclose(a, b, rtol=0, atol=0.05 * 1e-3)
    moved += int(not np.allclose(before, a))
  assert moved == len(weights_1)  # Every variable was updated.


def test_batch_must_divide_across_replicas():
  with pytest.raises(config.ConfigError, match=r"--batch_size must be divisible .*\(2\)"):
    training.Trainer(MODEL, _train_config(batch_size=5),
                     _strategy("/cpu:0", "/cpu:1"))


def test_loss_falls_well_below_its_start():
  train_config = _train_config(batch_size=16, train_steps=150, learning_rate=2e-3,
                               final_learning_rate=2e-3)
  trainer = training.Trainer(MODEL, train_config, _strategy("/cpu:0"))
  iterator = iter(trainer.distribute(training_data.training_dataset(MODEL, train_config)))
  losses = [float(trainer.train_step(next(iterator))["loss"]) for _ in range(150)]
  assert np.mean(losses[-10:]) < 0.25 * losses[0], (losses[0], losses[-10:])


def _weights(model_dir, model_config=MODEL):
  model, _, _, step = checkpoints.restore_model(model_dir)
  return step, [v.numpy() for v in model.trainable_variables]


def test_resumed_run_equals_an_uninterrupted_run(tmp_path):
  # A constant rate, so that the schedule does not depend on train_steps.
  settings = dict(learning_rate=1e-3, final_learning_rate=1e-3)
  split, whole = str(tmp_path / "split"), str(tmp_path / "whole")
  strategy = _strategy("/cpu:0")
  assert training.train(MODEL, _train_config(train_steps=3, **settings), split, strategy,
                        QUIET, log=lambda _: None) == 3
  lines = []
  assert training.train(MODEL, _train_config(train_steps=5, **settings), split, strategy,
                        QUIET, log=lines.append) == 5
  assert any("Resumed" in line and "step 3" in line for line in lines)
  training.train(MODEL, _train_config(train_steps=5, **settings), whole, strategy, QUIET,
                 log=lambda _: None)
  step_split, split_weights = _weights(split)
  step_whole, whole_weights = _weights(whole)
  assert step_split == step_whole == 5
  for a, b in zip(split_weights, whole_weights):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # A finished run returns at once, without a new checkpoint.
  before = sorted(os.listdir(split))
  lines = []
  assert training.train(MODEL, _train_config(train_steps=5, **settings), split, strategy,
                        QUIET, log=lines.append) == 5
  assert "nothing to do" in lines[-1] and sorted(os.listdir(split)) == before
  # TensorBoard scalars every 2 steps and at the end, each averaged over its own window.
  from mvae_tf import tb_logs
  steps, rates = tb_logs.read_scalars(whole, "train/learning_rate")
  np.testing.assert_array_equal(steps, [2, 4, 5])
  np.testing.assert_allclose(rates, 1e-3, rtol=1e-6)
  _, elbo = tb_logs.read_scalars(whole, "train/elbo")
  _, nll = tb_logs.read_scalars(whole, "train/nll")
  _, kl = tb_logs.read_scalars(whole, "train/kl")
  np.testing.assert_allclose(elbo, -(nll + kl), rtol=1e-5)
  assert np.all(nll > 0) and np.all(kl >= 0)
  names = os.listdir(split)
  assert "config.json" in names and any(n.startswith("events.out.tfevents") for n in names)
  with open(os.path.join(split, "config.json")) as f:
    assert json.load(f)["model"]["latent_dim"] == MODEL.latent_dim


def test_another_configuration_is_refused_and_nothing_changes(tmp_path):
  model_dir = str(tmp_path / "run")
  run_dir.prepare_model_dir(model_dir, MODEL, _train_config())
  with open(os.path.join(model_dir, "config.json")) as f:
    saved = f.read()
  other = config.ModelConfig("mvae", num_objects=4, latent_dim=6)
  with pytest.raises(config.ConfigError,
                     match=r"another configuration .*latent_dim: 5 -> 6.*num_objects: 3 -> 4"):
    run_dir.prepare_model_dir(model_dir, other, _train_config())
  with pytest.raises(config.ConfigError, match=r"model.model: 'mvae' -> 'vae'"):
    run_dir.prepare_model_dir(model_dir, config.ModelConfig("vae", 1, 5), _train_config())
  with open(os.path.join(model_dir, "config.json")) as f:
    assert f.read() == saved
  # Only train_steps may change.
  run_dir.prepare_model_dir(model_dir, MODEL, _train_config(train_steps=10))


def test_a_foreign_non_empty_directory_is_refused(tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(config.ConfigError, match=r"not empty \(notes.txt\)"):
    run_dir.prepare_model_dir(str(tmp_path), MODEL, _train_config())
  assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_non_finite_step_stops_the_run_before_it_is_saved(tmp_path):
  model_dir = str(tmp_path / "run")
  bad_step = 4  # The 4th step of the run sees a NaN image.

  def poison(dataset):
    def maybe_nan(index, batch):
      nan = tf.cast(index + 1 >= bad_step, tf.float32) * np.nan
      return {**batch, "image": batch["image"] + tf.where(index + 1 >= bad_step, nan, 0.0)}
    return dataset.enumerate().map(maybe_nan)

  every_step = training.LoopOptions(checkpoint_every_secs=1e-9, log_every_secs=1e9,
                                    summary_every_steps=1, image_every_steps=100)
  with pytest.raises(training.TrainingDiverged,
                     match=r"NaN or infinite at step 4; stopped without saving it, so the "
                           r"latest checkpoint is .*ckpt-3\. Rerun with a lower "
                           r"--learning_rate \(this run's is 0.001\)"):
    training.train(MODEL, _train_config(train_steps=10), model_dir, _strategy("/cpu:0"),
                   every_step, log=lambda _: None, dataset_transform=poison)
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-3")
  assert not [n for n in os.listdir(model_dir) if n.startswith("ckpt-4")]
  step, weights = _weights(model_dir)
  assert step == 3 and all(np.isfinite(w).all() for w in weights)


def test_the_step_reports_non_finite_gradients():
  train_config = _train_config()
  trainer = training.Trainer(MODEL, train_config, _strategy("/cpu:0", "/cpu:1"))
  batch = next(iter(training_data.training_dataset(MODEL, train_config)))
  finite = trainer.train_step(next(iter(trainer.distribute(
      tf.data.Dataset.from_tensors(batch)))))
  assert float(finite["nonfinite"]) == 0
  # An infinite noise value on one replica's half of the batch: one replica is non-finite.
  noise = batch["noise"].numpy()
  noise[0, 0, 0] = np.inf
  bad = trainer.train_step(next(iter(trainer.distribute(
      tf.data.Dataset.from_tensors({**batch, "noise": tf.constant(noise)})))))
  assert float(bad["nonfinite"]) == 1


def _listing(directory):
  """{name: (size, mtime_ns)} of a directory's files: what "left untouched" means."""
  return {n: (os.stat(os.path.join(directory, n)).st_size,
              os.stat(os.path.join(directory, n)).st_mtime_ns) for n in os.listdir(directory)}


def test_a_corrupt_latest_checkpoint_is_one_clear_error_and_an_older_one_resumes(tmp_path):
  model_dir = str(tmp_path / "run")
  strategy = _strategy("/cpu:0")
  every_step = training.LoopOptions(checkpoint_every_secs=1e-9, log_every_secs=1e9,
                                    summary_every_steps=100, image_every_steps=100)
  training.train(MODEL, _train_config(train_steps=3), model_dir, strategy, every_step,
                 log=lambda _: None)
  data_file = [n for n in os.listdir(model_dir) if n.startswith("ckpt-3.data")][0]
  with open(os.path.join(model_dir, data_file), "r+b") as f:
    f.truncate(os.path.getsize(f.name) // 2)  # A checkpoint cut short, as by a full disk.
  before = _listing(model_dir)
  with pytest.raises(config.ConfigError,
                     match=r"cannot restore checkpoint .*ckpt-3: .*--model_dir was left "
                           r"untouched; resume from an older one with --restore_from=ckpt-2"):
    training.train(MODEL, _train_config(train_steps=5), model_dir, strategy, every_step,
                   log=lambda _: None)
  assert _listing(model_dir) == before
  with pytest.raises(config.ConfigError, match=r"--restore_from=ckpt-9: no such checkpoint "
                                               r"in .* \(it has ckpt-1, ckpt-2, ckpt-3\)"):
    training.train(MODEL, _train_config(train_steps=5), model_dir, strategy, every_step,
                   log=lambda _: None, restore_from="ckpt-9")
  lines = []
  assert training.train(MODEL, _train_config(train_steps=5), model_dir, strategy, every_step,
                        log=lines.append, restore_from="ckpt-2") == 5
  assert any("Resumed from" in line and "ckpt-2 at step 2" in line for line in lines)
  assert _weights(model_dir)[0] == 5


def test_an_unwritable_model_dir_is_refused_before_any_work(tmp_path, monkeypatch):
  def read_only(*args, **kwargs):
    raise OSError(30, "Read-only file system")  # EROFS, as a read-only mount gives.

  monkeypatch.setattr(run_dir.tempfile, "mkstemp", read_only)
  with pytest.raises(config.ConfigError,
                     match=r"--model_dir '.*run' is not writable: Read-only file system"):
    training.train(MODEL, _train_config(), str(tmp_path / "run"), _strategy("/cpu:0"), QUIET,
                   log=lambda _: None)
  assert os.listdir(tmp_path / "run") == []  # No config.json, no checkpoint.


def test_a_checkpoint_that_cannot_be_written_is_rescued(tmp_path, monkeypatch):
  model_dir = str(tmp_path / "run")
  real_save = tf.train.CheckpointManager.save
  calls = []

  def save(self, checkpoint_number=None, **kwargs):
    if os.path.abspath(self.directory) == os.path.abspath(model_dir):
      calls.append(checkpoint_number)
      if len(calls) == 2:
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    return real_save(self, checkpoint_number=checkpoint_number, **kwargs)

  monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
  every_step = training.LoopOptions(checkpoint_every_secs=1e-9, log_every_secs=1e9,
                                    summary_every_steps=100, image_every_steps=100)
  with pytest.raises(checkpoints.CheckpointWriteError) as raised:
    training.train(MODEL, _train_config(train_steps=4), model_dir, _strategy("/cpu:0"),
                   every_step, log=lambda _: None)
  message = str(raised.value)
  assert "cannot write a checkpoint to --model_dir" in message
  assert "No space left on device" in message
  rescue = message.split("saved step 2 to ")[1].split(" instead")[0]
  assert f"--model_dir={rescue}" in message
  step, weights = _weights(rescue)  # A complete model directory at the lost step.
  assert step == 2 and len(weights) == len(_weights(model_dir)[1])
  assert _weights(model_dir)[0] == 1  # The model_dir keeps its last good checkpoint.
  import shutil
  shutil.rmtree(rescue)


def _first_step_matches(train_config, objective_fn, model_config=MODEL, iterations=0):
  """Checks that the first training step, taken from `iterations` (step iterations + 1),
  follows the gradient of mean(objective_fn(...)) and still reports the negative ELBO.
  Returns that gradient (a list over the trainable variables)."""
  trainer = training.Trainer(model_config, train_config, _strategy("/cpu:0"))
  trainer.optimizer.iterations.assign(iterations)
  batch = next(iter(training_data.training_dataset(model_config, train_config)))
  variables = trainer.model.trainable_variables
  from mvae_tf import losses
  with tf.GradientTape() as tape:
    outputs = trainer.model(batch["image"], noise=batch["noise"])
    terms = losses.negative_elbo(batch["image"], outputs["logits"], outputs["kl"])
    objective = tf.reduce_mean(objective_fn(terms, outputs))
  expected = tape.gradient(objective, variables)
  metrics = trainer.train_step(next(iter(trainer.distribute(
      tf.data.Dataset.from_tensors(batch)))))
  assert float(metrics["loss"]) == pytest.approx(float(tf.reduce_mean(terms["loss"])),
                                                 rel=1e-5)
  moments = [v.numpy() for v in trainer.optimizer.variables if "momentum" in v.path]
  for moment, gradient in zip(moments, expected):  # Adam's m = 0.1 * g after one step.
    np.testing.assert_allclose(moment, 0.1 * gradient.numpy(), rtol=1e-3,
                               atol=1e-4 * np.abs(gradient.numpy()).max())
  return expected


def test_kl_warmup_weights_the_kl_in_the_gradient_but_not_in_the_reported_loss():
  # Step 1 of a 4-step warm-up weights the KL by 1/4.
  _first_step_matches(_train_config(kl_warmup_steps=4, object_sparsity=0.0,
                                    unselected_kl_weight=0.0),
                      lambda terms, outputs: terms["nll"] + 0.25 * terms["kl"])


def test_the_kl_weight_scales_the_warmed_up_kl_in_the_gradient_only():
  # Step 1 of a 4-step warm-up with beta = 2 weights the KL by 2 * 1/4.
  _first_step_matches(_train_config(kl_warmup_steps=4, kl_weight=2.0,
                                    object_sparsity=0.0, unselected_kl_weight=0.0),
                      lambda terms, outputs: terms["nll"] + 0.5 * terms["kl"])


@pytest.mark.parametrize("kl_weight", [0.0, -1.0, float("nan"), float("inf"), True, "2"])
def test_the_kl_weight_is_checked(kl_weight):
  with pytest.raises(config.ConfigError, match=r"--kl_weight must be a finite number > 0; "
                                               rf"received {re.escape(repr(kl_weight))}"):
    _train_config(kl_weight=kl_weight)


def test_the_unselected_cells_kl_is_penalised_in_the_gradient_only():
  def objective(terms, outputs):
    # Written out another way: without suppression the selected cells are the N of
    # highest KL, so the rest are the map's cells sorted by KL after the first N.
    kl_map = outputs["kl_map"]  # [B, H, W]
    flat = tf.reshape(kl_map, [tf.shape(kl_map)[0], -1])  # [B, H*W]
    ranked = tf.sort(flat, axis=-1, direction="DESCENDING")  # [B, H*W]
    left_out = tf.reduce_sum(ranked[:, MODEL.num_objects:], axis=-1)  # [B]
    return terms["nll"] + terms["kl"] + 0.5 * left_out
  _first_step_matches(_train_config(unselected_kl_weight=0.5, kl_warmup_steps=0,
                                    object_sparsity=0.0), objective,
                      dataclasses.replace(MODEL, suppression_radius=0))


def _left_out_cells(outputs):
  """The KL map's cells flattened, [B, H*W], and 1 where a cell was not selected, found
  from the selected objects' coordinates (with suppression those are not the map's
  lowest cells)."""
  kl_map = outputs["kl_map"]  # [B, H, W]
  grid = kl_map.shape[1]
  cells = tf.cast(tf.round((outputs["coords"] + 1) * (grid - 1) / 2), tf.int32)  # [B, N, 2]
  selected = tf.reduce_sum(tf.one_hot(cells[..., 0] * grid + cells[..., 1], grid * grid),
                           axis=1)  # [B, H*W], 1 where a cell was selected.
  return tf.reshape(kl_map, [tf.shape(kl_map)[0], -1]), 1 - selected  # [B, H*W] twice


def test_the_unselected_cost_is_on_by_default_and_follows_suppression():
  """The MVAE's default objective adds 1x the KL of the cells not selected."""
  def objective(terms, outputs):
    flat, left_out = _left_out_cells(outputs)  # [B, H*W] twice
    return terms["nll"] + terms["kl"] + tf.reduce_sum(flat * left_out, axis=-1)
  train_config = _train_config(kl_warmup_steps=0, object_sparsity=0.0)
  assert config.resolve_train_config(MODEL, train_config).unselected_kl_weight == 1.0
  assert MODEL.suppression_radius == config.MVAE_SUPPRESSION_RADIUS == 2
  _first_step_matches(train_config, objective)


def test_the_unselected_cost_spares_each_cells_free_nats():
  """With unselected_kl_free_nats=tau the step follows nll + kl + 0.5 * the left-out
  cells' sum of max(0, KL_c - tau), and differs from the step without the tolerance."""
  def objective(terms, outputs, tau):
    flat, left_out = _left_out_cells(outputs)  # [B, H*W] twice
    return terms["nll"] + terms["kl"] + 0.5 * tf.reduce_sum(
        tf.maximum(flat - tau, 0.0) * left_out, axis=-1)
  train_config = _train_config(kl_warmup_steps=0, object_sparsity=0.0,
                               unselected_kl_weight=0.5)
  # Half the untrained encoder's cells carry more than tau = 0.04 nats, half less.
  spared = _first_step_matches(
      dataclasses.replace(train_config, unselected_kl_free_nats=0.04),
      lambda terms, outputs: objective(terms, outputs, 0.04))
  full = _first_step_matches(train_config, lambda terms, outputs: objective(terms, outputs, 0.0))
  assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(spared, full)) > 1e-3


@pytest.mark.parametrize("end", [{"unselected_kl_steps": 3},
                                 {"unselected_kl_final_steps": 7, "train_steps": 10}],
                         ids=["steps", "final_steps"])
def test_the_unselected_cost_ends_after_its_last_step(end):
  """With unselected_kl_steps=3, or the last 7 of 10 steps without the cost, step 3
  (optimizer iterations 2 before it) follows the gradient of nll + kl + 0.5 * unselected
  KL, and step 4 that of the ELBO."""
  from mvae_tf import losses
  model_config = dataclasses.replace(MODEL, suppression_radius=0)
  train_config = _train_config(unselected_kl_weight=0.5, kl_warmup_steps=0,
                               object_sparsity=0.0, **end)
  assert train_config.unselected_kl_last_step == 3
  with_cost = _first_step_matches(
      train_config, lambda terms, outputs: terms["nll"] + terms["kl"] + 0.5 * losses.unselected_kl(
          outputs["kl_map"], outputs["kl"]), model_config, iterations=2)
  without = _first_step_matches(train_config, lambda terms, outputs: terms["nll"] + terms["kl"],
                                model_config, iterations=3)
  # The cost moves the gradient, so the two steps tell the two objectives apart.
  assert max(float(tf.reduce_max(tf.abs(a - b)))
             for a, b in zip(with_cost, without)) > 1e-3


@pytest.mark.parametrize("kwargs, message", [
    ({"unselected_kl_steps": -1}, r"--unselected_kl_steps must be an integer >= 0; "
                                  r"received -1"),
    ({"unselected_kl_steps": 2.5}, r"--unselected_kl_steps must be an integer >= 0"),
    ({"unselected_kl_steps": 5, "unselected_kl_weight": 0.0},
     r"--unselected_kl_steps=5 ends a cost that is not charged: it needs "
     r"--unselected_kl_weight > 0"),
    ({"unselected_kl_final_steps": -1}, r"--unselected_kl_final_steps must be an integer "
                                        r">= 0; received -1"),
    ({"unselected_kl_final_steps": 1.5}, r"--unselected_kl_final_steps must be an integer"),
    ({"unselected_kl_final_steps": 1, "unselected_kl_weight": 0.0},
     r"--unselected_kl_final_steps=1 ends a cost that is not charged: it needs "
     r"--unselected_kl_weight > 0"),
    ({"unselected_kl_final_steps": 1, "unselected_kl_steps": 1},
     r"--unselected_kl_steps=1 and --unselected_kl_final_steps=1 both end the unselected "
     r"cells' KL; give one"),
    ({"unselected_kl_final_steps": 2}, r"--unselected_kl_final_steps=2 leaves no step of "
                                       r"--train_steps=2 with the unselected cells' KL"),
    ({"unselected_kl_free_nats": -1.0}, r"--unselected_kl_free_nats must be a finite number "
                                        r">= 0; received -1\.0"),
    ({"unselected_kl_free_nats": float("nan")}, r"--unselected_kl_free_nats must be a finite"),
    ({"unselected_kl_free_nats": "2"}, r"--unselected_kl_free_nats must be a finite number"),
    ({"unselected_kl_free_nats": 2.0, "unselected_kl_weight": 0.0},
     r"--unselected_kl_free_nats=2 shapes a cost that is not charged: it needs "
     r"--unselected_kl_weight > 0"),
])
def test_the_unselected_costs_steps_and_free_nats_are_checked(kwargs, message):
  with pytest.raises(config.ConfigError, match=message):
    config.resolve_train_config(MODEL, _train_config(**kwargs))


@pytest.mark.parametrize("name", ["unselected_kl_steps", "unselected_kl_final_steps",
                                  "unselected_kl_free_nats"])
def test_the_unselected_costs_shape_does_not_apply_to_the_vae(name):
  vae = config.ModelConfig("vae", num_objects=1, latent_dim=7)
  with pytest.raises(config.ConfigError, match=rf"--{name} does not apply to "
                                               r"--model=vae .*received 5"):
    config.resolve_train_config(vae, _train_config(**{name: 5, "train_steps": 9}))


@pytest.mark.parametrize("train_steps, settings, final", [
    (50_000, {}, 8000), (3_000_000, {}, 8000),
    # Too short: the cost makes the objects first (docs/counting_study.md, round 22).
    (49_999, {}, 0),
    (6000, {}, 0),  # The study's runs.
    (50_000, {"unselected_kl_weight": 0.0}, 0), (50_000, {"unselected_kl_steps": 40_000}, 0),
    (50_000, {"unselected_kl_final_steps": 0}, 0),
    (9, {"unselected_kl_final_steps": 4}, 4),
])
def test_the_end_phase_defaults_to_the_last_8000_steps_of_a_long_mvae_run(
    train_steps, settings, final):
  resolved = config.resolve_train_config(
      MODEL, _train_config(train_steps=train_steps, **settings))
  assert resolved.unselected_kl_final_steps == final
  assert config.resolve_train_config(MODEL, resolved) == resolved
  vae = config.ModelConfig("vae", num_objects=1, latent_dim=7)
  assert config.resolve_train_config(
      vae, _train_config(train_steps=train_steps)).unselected_kl_final_steps == 0


def test_the_end_phase_is_announced_and_recorded(tmp_path):
  lines = []
  train_config = _train_config(train_steps=3, unselected_kl_final_steps=1)
  training.train(MODEL, train_config, str(tmp_path), _strategy("/cpu:0"), QUIET,
                 log=lines.append)
  assert ("The unselected cells' KL is charged at steps 1-2; steps 3-3 take the paper's "
          "objective without it.") in lines
  assert config.read_run_config(str(tmp_path))[1].unselected_kl_final_steps == 1


def test_a_run_recorded_before_the_free_nats_reads_as_zero():
  saved = config.to_dict(MODEL, _train_config())
  assert saved["train"]["unselected_kl_free_nats"] == 0.0
  del saved["train"]["unselected_kl_free_nats"]
  assert config.from_dict(saved)[1].unselected_kl_free_nats == 0.0


def test_the_unselected_kl_steps_may_change_on_resume_and_default_to_every_step(tmp_path):
  """A run resumes with the cost's end moved (the two-phase end of study round 19), and a
  config.json written before the setting existed reads as the cost at every step."""
  saved = config.to_dict(MODEL, _train_config())
  assert saved["train"]["unselected_kl_steps"] == 0
  del saved["train"]["unselected_kl_steps"]
  config.write_json_atomic(config.config_path(str(tmp_path)), saved)
  assert config.read_run_config(str(tmp_path))[1].unselected_kl_steps == 0
  run_dir.check_model_dir(str(tmp_path), MODEL, _train_config(unselected_kl_steps=59000))


def test_the_end_phase_may_change_on_resume_and_reads_as_none_before_it_existed(tmp_path):
  """A run resumes with more steps, which moves the end phase with them, or with another
  end phase; a config.json written before the setting existed charged the cost to the
  end."""
  saved = config.to_dict(MODEL, config.resolve_train_config(MODEL, _train_config(
      train_steps=60_000)))
  assert saved["train"]["unselected_kl_final_steps"] == 8000
  del saved["train"]["unselected_kl_final_steps"]
  config.write_json_atomic(config.config_path(str(tmp_path)), saved)
  assert config.read_run_config(str(tmp_path))[1].unselected_kl_final_steps == 0
  for final_steps in (None, 100):
    run_dir.check_model_dir(str(tmp_path), MODEL, _train_config(
        train_steps=68_000, unselected_kl_final_steps=final_steps))


def test_object_sparsity_is_warmed_up_with_the_kl_in_the_gradient_only():
  # Step 1 of a 4-step warm-up weights the KL and lambda * sum_n log(1 + KL_n) by 1/4.
  def objective(terms, outputs):
    cost = tf.reduce_sum(tf.math.log1p(outputs["kl"]), axis=-1)  # [B]
    return terms["nll"] + 0.25 * (terms["kl"] + 3.0 * cost)
  _first_step_matches(_train_config(object_sparsity=3.0, kl_warmup_steps=4,
                                    unselected_kl_weight=0.0), objective)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), True, "2"])
def test_object_sparsity_is_checked(value):
  with pytest.raises(config.ConfigError, match=r"--object_sparsity must be a finite number "
                                               rf">= 0; received {re.escape(repr(value))}"):
    _train_config(object_sparsity=value)


def test_object_sparsity_does_not_apply_to_the_vae():
  vae = config.ModelConfig("vae", num_objects=1, latent_dim=7)
  with pytest.raises(config.ConfigError, match=r"--object_sparsity does not apply to "
                                               r"--model=vae"):
    training.Trainer(vae, _train_config(object_sparsity=1.0), _strategy("/cpu:0"))


def test_object_sparsity_defaults_to_the_studys_lambda_for_the_mvae_and_0_for_the_vae(
    tmp_path):
  assert config.TrainConfig().object_sparsity is None  # The model's default, resolved late.
  resolved = config.resolve_train_config(MODEL, _train_config())
  assert resolved.object_sparsity == config.MVAE_OBJECT_SPARSITY == 0.0  # Round 14.
  assert config.resolve_train_config(MODEL, resolved) == resolved
  paper = _train_config(object_sparsity=0.0, unselected_kl_weight=0.0,
                        unselected_kl_final_steps=0)
  assert config.resolve_train_config(MODEL, paper) == paper  # The paper's stays reachable.
  vae = config.ModelConfig("vae", num_objects=1, latent_dim=7)
  assert config.resolve_train_config(vae, _train_config()).object_sparsity == 0.0
  assert training.Trainer(MODEL, _train_config(), _strategy("/cpu:0")).train_config == (
      resolved)
  # config.json records the resolved value, and a run resumes only with it.
  run_dir.prepare_model_dir(str(tmp_path), MODEL, _train_config())
  with open(config.config_path(str(tmp_path))) as f:
    assert json.load(f)["train"]["object_sparsity"] == 0.0
  run_dir.check_model_dir(str(tmp_path), MODEL, _train_config(object_sparsity=0))
  with pytest.raises(config.ConfigError, match=r"train\.object_sparsity: 0\.0 -> 5\.0"):
    run_dir.check_model_dir(str(tmp_path), MODEL, _train_config(object_sparsity=5.0))
  # A run of the earlier default (lambda 5, as the shipped MVAEs) resumes only with it.
  earlier = tmp_path / "earlier"
  run_dir.prepare_model_dir(str(earlier), MODEL, _train_config(object_sparsity=5.0))
  run_dir.check_model_dir(str(earlier), MODEL, _train_config(object_sparsity=5))
  with pytest.raises(config.ConfigError, match=r"train\.object_sparsity: 5\.0 -> 0\.0"):
    run_dir.check_model_dir(str(earlier), MODEL, _train_config())


def test_json_written_atomically_gets_a_new_files_mode_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "metrics.json"
  config.write_json_atomic(str(path), {"b": [1, 2], "a": 0.5})
  umask = os.umask(0)
  os.umask(umask)
  # As open() would make it (0o644 under the usual umask 022), not mkstemp's 0o600.
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
  assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2]}
  assert os.listdir(tmp_path) == ["metrics.json"]
  # A write that fails midway leaves the old file whole and no temporary.
  with pytest.raises(TypeError, match="not JSON serializable"):
    config.write_json_atomic(str(path), {"a": object()})
  assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2]}
  assert os.listdir(tmp_path) == ["metrics.json"]


def test_a_config_json_from_before_object_sparsity_reads_as_the_papers_objective(tmp_path):
  saved = config.to_dict(MODEL, _train_config(object_sparsity=0.0))
  del saved["train"]["object_sparsity"]  # As written before the setting existed.
  config.write_json_atomic(config.config_path(str(tmp_path)), saved)
  assert config.read_run_config(str(tmp_path))[1].object_sparsity == 0.0
  run_dir.check_model_dir(str(tmp_path), MODEL, _train_config())  # Today's default, 0.
  with pytest.raises(config.ConfigError, match=r"train\.object_sparsity: 0\.0 -> 5\.0"):
    run_dir.check_model_dir(str(tmp_path), MODEL, _train_config(object_sparsity=5.0))


def test_the_grid_suppression_and_unselected_cost_default_to_the_studys_for_the_mvae_only():
  mvae, vae = config.ModelConfig(), config.ModelConfig("vae", num_objects=1, latent_dim=7)
  assert (mvae.num_pooling, mvae.grid_size, mvae.suppression_radius) == (2, 16, 2)
  assert (vae.num_pooling, vae.grid_size, vae.suppression_radius) == (4, 4, 0)
  assert config.TrainConfig().unselected_kl_weight is None  # The model's, resolved late.
  assert config.resolve_train_config(mvae, _train_config()).unselected_kl_weight == 1.0
  assert config.resolve_train_config(vae, _train_config()).unselected_kl_weight == 0.0
  # The paper's selection on this project's first grid stays two flags away.
  paper = config.ModelConfig(num_pooling=4, suppression_radius=0)
  assert (paper.grid_size, paper.suppression_radius) == (4, 0)


def test_a_config_json_from_before_the_grid_defaults_reads_as_4x4_top_n(tmp_path):
  """A run recorded before the settings existed trained with a 4x4 grid, top-N selection and
  no unselected cost; it resumes with those flags, and today's defaults are named."""
  old_model = config.ModelConfig(num_objects=3, latent_dim=5, num_pooling=4,
                                 suppression_radius=0)
  old_train = _train_config(unselected_kl_weight=0.0)
  saved = config.to_dict(old_model, old_train)
  for section, key in [("model", "num_pooling"), ("model", "suppression_radius"),
                       ("train", "unselected_kl_weight")]:
    del saved[section][key]  # As written before the setting existed.
  config.write_json_atomic(config.config_path(str(tmp_path)), saved)
  model_config, train_config = config.read_run_config(str(tmp_path))
  assert (model_config.num_pooling, model_config.suppression_radius) == (4, 0)
  assert train_config.unselected_kl_weight == 0.0
  run_dir.check_model_dir(str(tmp_path), old_model, old_train)  # Resumes: no difference.
  with pytest.raises(config.ConfigError, match=r"model\.num_pooling: 4 -> 2.*"
                                               r"model\.suppression_radius: 0 -> 2"):
    run_dir.check_model_dir(str(tmp_path), config.ModelConfig(num_objects=3, latent_dim=5),
                             old_train)


def test_a_run_of_the_8x8_defaults_resumes_only_with_their_flags(tmp_path):
  """Runs made from study round 10 until round 17 record the 8x8 grid with radius 1 (as the
  shipped models' runs do); today's defaults differ, and the error names both settings."""
  grid8 = config.ModelConfig(num_objects=3, latent_dim=5, num_pooling=3, suppression_radius=1)
  config.write_json_atomic(config.config_path(str(tmp_path)),
                           config.to_dict(grid8, _train_config()))
  run_dir.check_model_dir(str(tmp_path), grid8, _train_config())  # Resumes: no difference.
  with pytest.raises(config.ConfigError, match=r"model\.num_pooling: 3 -> 2.*"
                                               r"model\.suppression_radius: 1 -> 2"):
    run_dir.check_model_dir(str(tmp_path), config.ModelConfig(num_objects=3, latent_dim=5),
                             _train_config())


def test_a_config_json_without_the_kl_ratio_reads_as_plain_suppression_and_resumes(tmp_path):
  """Runs recorded before `suppression_kl_ratio` existed suppressed every neighbour: 1."""
  saved = config.to_dict(config.ModelConfig(num_objects=3, latent_dim=5), _train_config())
  assert saved["model"]["suppression_kl_ratio"] == 1.0
  del saved["model"]["suppression_kl_ratio"]
  config.write_json_atomic(config.config_path(str(tmp_path)), saved)
  assert config.read_run_config(str(tmp_path))[0].suppression_kl_ratio == 1.0
  run_dir.check_model_dir(str(tmp_path), config.ModelConfig(num_objects=3, latent_dim=5),
                           _train_config())
  with pytest.raises(config.ConfigError, match=r"model\.suppression_kl_ratio: 1\.0 -> 0\.5"):
    run_dir.check_model_dir(str(tmp_path), config.ModelConfig(
        num_objects=3, latent_dim=5, suppression_kl_ratio=0.5), _train_config())


@pytest.mark.parametrize("kwargs, message", [
    ({"suppression_kl_ratio": 0.0}, r"--suppression_kl_ratio must be a number in \(0, 1\]"),
    ({"suppression_kl_ratio": True}, r"--suppression_kl_ratio must be a number in \(0, 1\]"),
    ({"suppression_kl_ratio": 0.5, "suppression_radius": 0},
     r"--suppression_kl_ratio=0\.5 needs suppression \(--suppression_radius >= 1\)"),
    ({"model": "vae", "num_objects": 1, "suppression_kl_ratio": 0.5},
     r"--suppression_kl_ratio does not apply to --model=vae"),
])
def test_the_kl_ratio_is_checked(kwargs, message):
  with pytest.raises(config.ConfigError, match=message):
    config.ModelConfig(**kwargs)


def test_the_unselected_kl_weight_is_checked():
  with pytest.raises(config.ConfigError, match=r"--unselected_kl_weight must be a number >= 0"):
    _train_config(unselected_kl_weight=-1.0)
  vae = config.ModelConfig("vae", num_objects=1, latent_dim=7)
  with pytest.raises(config.ConfigError, match=r"does not apply to --model=vae"):
    training.Trainer(vae, _train_config(unselected_kl_weight=1.0), _strategy("/cpu:0"))


def test_suppression_by_kl_ratio_a_wider_decoder_and_a_learned_background_train():
  model_config = config.ModelConfig("mvae", num_objects=3, latent_dim=5, num_pooling=3,
                                    suppression_radius=1, decoder_width=2,
                                    learned_background=True, suppression_kl_ratio=0.5)
  trainer = training.Trainer(model_config, _train_config(), _strategy("/cpu:0"))
  assert trainer.model.top_k.suppression_kl_ratio == 0.5
  assert trainer.model.get_config()["suppression_kl_ratio"] == 0.5
  assert trainer.model.decoder.object_network.conv2.filters == 32
  assert trainer.model.decoder.renderer.conv1.filters == 64
  iterator = iter(trainer.distribute(training_data.training_dataset(model_config,
                                                               _train_config())))
  background = trainer.model.decoder.background.numpy()
  metrics = trainer.train_step(next(iterator))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["nonfinite"]) == 0
  assert background.shape == (32, 32, 32)
  assert np.any(trainer.model.decoder.background.numpy() != background)  # It is trained.
  images = tf.random.stateless_uniform([2, 64, 64, 3], seed=[1, 2])
  encoded = trainer.model.encode(images)
  assert encoded["loc"].shape == (2, 3, 5) and encoded["kl_map"].shape == (2, 8, 8)


def test_position_in_cell_trains():
  model_config = config.ModelConfig("mvae", num_objects=3, latent_dim=5, num_pooling=3,
                                    position_in_cell=True)
  trainer = training.Trainer(model_config, _train_config(), _strategy("/cpu:0"))
  assert trainer.model.decoder.object_network.dense1.kernel.shape == (3, 256)
  iterator = iter(trainer.distribute(training_data.training_dataset(model_config,
                                                               _train_config())))
  for _ in range(2):
    metrics = trainer.train_step(next(iterator))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["nonfinite"]) == 0


def test_softmax_aggregation_with_a_learned_background_trains_in_bfloat16():
  model_config = config.ModelConfig("mvae", num_objects=3, latent_dim=5, num_pooling=3,
                                    aggregation="softmax", learned_background=True)
  train_config = _train_config(precision="mixed_bfloat16")
  trainer = training.Trainer(model_config, train_config, _strategy("/cpu:0"))
  iterator = iter(trainer.distribute(training_data.training_dataset(model_config, train_config)))
  background = trainer.model.decoder.background.numpy()
  for _ in range(2):
    metrics = trainer.train_step(next(iterator))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["nonfinite"]) == 0
  assert np.any(trainer.model.decoder.background.numpy() != background)  # It is trained.


@pytest.mark.parametrize("settings, message", [
    (dict(model="vae", num_objects=1, latent_dim=7, suppression_radius=1),
     r"--suppression_radius does not apply to --model=vae"),
    (dict(suppression_radius=-1), r"--suppression_radius must be an integer >= 0"),
    (dict(decoder_width=0), r"--decoder_width must be an integer >= 1"),
    (dict(learned_background=1), r"--learned_background must be true or false; received 1"),
    (dict(model="vae", num_objects=1, latent_dim=7, learned_background=True),
     r"--learned_background does not apply to --model=vae"),
    (dict(position_in_cell="no"), r"--position_in_cell must be true or false; received 'no'"),
    (dict(model="vae", num_objects=1, latent_dim=7, position_in_cell=True),
     r"--position_in_cell does not apply to --model=vae"),
    (dict(latent_dim=2, position_in_cell=True),
     r"--position_in_cell needs --latent_dim >= 3 .*; received 2"),
])
def test_bad_model_options_are_refused(settings, message):
  with pytest.raises(config.ConfigError, match=message):
    config.ModelConfig(**settings)


@pytest.mark.parametrize("content, message", [
    ('{"model": {"model": "mvae"}, "train": ', r"unreadable run configuration .*config.json"),
    ("[1, 2]", r"malformed run configuration .*config.json: missing or unexpected"),
    ('{"model": {"latent_dim": "x"}, "train": {}}',
     r"malformed run configuration .*config.json: --latent_dim must be an integer"),
    ('{"model": {}, "train": {"batch": 3}}',
     r"malformed run configuration .*config.json: missing or unexpected setting"),
])
def test_a_malformed_config_json_names_the_file(tmp_path, content, message):
  (tmp_path / "config.json").write_text(content)
  with pytest.raises(config.ConfigError, match=message):
    run_dir.check_model_dir(str(tmp_path), MODEL, _train_config())
  assert os.listdir(tmp_path) == ["config.json"]


def test_schedule_steps_sets_where_the_learning_rate_reaches_its_final_value():
  paper = training.Trainer(MODEL, _train_config(train_steps=100), _strategy("/cpu:0"))
  assert float(paper.learning_rate(100)) == pytest.approx(1e-5)
  # Stopping at step 100 of a 10,000-step schedule: at step 100 the rate has fallen by
  # (1e-2) ** (100 / 10000).
  early = training.Trainer(MODEL, _train_config(train_steps=100, schedule_steps=10_000),
                           _strategy("/cpu:0"))
  assert float(early.learning_rate(100)) == pytest.approx(1e-3 * 0.01 ** 0.01, rel=1e-5)
  assert float(early.learning_rate(10_000)) == pytest.approx(1e-5)
  with pytest.raises(config.ConfigError, match=r"--schedule_steps must be an integer >= 0"):
    _train_config(schedule_steps=-1)


def test_checkpoint_every_steps_saves_at_those_steps_and_the_end(tmp_path):
  model_dir = str(tmp_path / "run")
  options = dataclasses.replace(QUIET, checkpoint_every_steps=2, max_checkpoints=5)
  training.train(MODEL, _train_config(train_steps=5), model_dir, _strategy("/cpu:0"),
                 options, log=lambda _: None)
  saved = sorted(n for n in os.listdir(model_dir) if n.endswith(".index"))
  assert saved == ["ckpt-2.index", "ckpt-4.index", "ckpt-5.index"]


def test_a_config_json_from_before_the_warmup_default_reads_as_the_papers_objective(
    tmp_path):
  assert config.TrainConfig().kl_warmup_steps == 2000  # The default the study chose.
  saved = config.to_dict(MODEL, _train_config())
  del saved["train"]["kl_warmup_steps"]  # As written before the setting existed.
  config.write_json_atomic(config.config_path(str(tmp_path)), saved)
  _, train_config = config.read_run_config(str(tmp_path))
  assert train_config.kl_warmup_steps == 0


@pytest.mark.parametrize("setting", ["learned_background", "position_in_cell"])
def test_a_config_json_from_before_a_decoder_option_reads_as_without_it(tmp_path, setting):
  saved = config.to_dict(MODEL, _train_config())
  del saved["model"][setting]  # As written before the setting existed.
  config.write_json_atomic(config.config_path(str(tmp_path)), saved)
  model_config, _ = config.read_run_config(str(tmp_path))
  assert getattr(model_config, setting) is False
  run_dir.check_model_dir(str(tmp_path), MODEL, _train_config())  # Resumes: no difference.


def test_a_config_json_from_before_the_kl_weight_reads_as_the_elbo(tmp_path):
  saved = config.to_dict(MODEL, _train_config())
  del saved["train"]["kl_weight"]  # As written before the setting existed.
  config.write_json_atomic(config.config_path(str(tmp_path)), saved)
  _, train_config = config.read_run_config(str(tmp_path))
  assert train_config.kl_weight == 1.0
  run_dir.check_model_dir(str(tmp_path), MODEL, _train_config())  # Resumes: no difference.
  with pytest.raises(config.ConfigError, match=r"train\.kl_weight: 1\.0 -> 2\.0"):
    run_dir.check_model_dir(str(tmp_path), MODEL, _train_config(kl_weight=2.0))


def test_softmax_is_the_mvaes_default_pooling_and_a_max_pooling_run_resumes_only_as_such(
    tmp_path):
  assert config.ModelConfig().aggregation == config.MVAE_AGGREGATION == "softmax"
  vae = config.ModelConfig("vae", 1, 7)
  assert vae.aggregation == "max"  # The VAE pools nothing.
  assert config.from_dict(config.to_dict(vae, _train_config()))[0] == vae
  # A run made when max pooling (the paper's) was the default records it, and keeps it.
  paper = dataclasses.replace(MODEL, aggregation="max")
  config.write_json_atomic(config.config_path(str(tmp_path)),
                           config.to_dict(paper, _train_config()))
  assert config.read_run_config(str(tmp_path))[0].aggregation == "max"
  run_dir.check_model_dir(str(tmp_path), paper, _train_config())
  with pytest.raises(config.ConfigError, match=r"model\.aggregation: 'max' -> 'softmax'"):
    run_dir.check_model_dir(str(tmp_path), MODEL, _train_config())
