"""The checkpoints of a `train.py` model directory (model and optimizer, step =
optimizer.iterations).

Outside any strategy, `restore_model` rebuilds a trained model for export and evaluation.
In training, `restore_latest` resumes a run, and `CheckpointWriter` saves it: a save that
the model directory refuses (a full or failing disk) leaves a complete rescue directory
instead (`save_or_rescue`), so no step is lost without saying where it went.
"""

import os
import shutil
import tempfile

import tensorflow as tf

from mvae_tf import config as config_lib
from mvae_tf import model as model_lib
from mvae_tf import run_dir


class CheckpointError(ValueError):
  """A model directory whose checkpoint is missing or cannot be restored."""


def restore_model(model_dir):
  """Rebuilds the model from `model_dir/config.json` and restores its latest checkpoint.

  Returns:
    (model, model_config, train_config, step).
  """
  if not os.path.isdir(model_dir):
    raise CheckpointError(f"--model_dir {model_dir!r} is not a directory")
  if not os.listdir(model_dir):
    raise CheckpointError(f"--model_dir {model_dir!r} is empty: give the directory a "
                          "train.py run wrote")
  model_config, train_config = config_lib.read_run_config(model_dir)
  path = tf.train.latest_checkpoint(model_dir)
  if path is None:
    raise CheckpointError(f"no checkpoint in --model_dir {model_dir!r}")
  model = model_lib.build_model(model_config)
  step = tf.Variable(0, dtype=tf.int64)
  # The Keras optimizer keeps the step as `_iterations`; nothing else of it is needed.
  optimizer = tf.train.Checkpoint(_iterations=step)
  try:
    status = tf.train.Checkpoint(model=model, optimizer=optimizer).read(path)
    status.assert_existing_objects_matched().expect_partial()
  except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError, OSError) as e:
    raise CheckpointError(
        f"cannot restore checkpoint {path}: {config_lib.error_summary(e)}") from None
  return model, model_config, train_config, int(step.numpy())


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written to the model directory (a full or failing disk)."""


def restore_latest(checkpoint, manager, model_dir, restore_from):
  """Restores into `checkpoint` (a `tf.train.Checkpoint`) the latest checkpoint of
  `manager`, or `restore_from` (a name like ckpt-1200) of `model_dir`; returns its path, or
  None when there is none.

  Raises ConfigError naming the checkpoint when it cannot be read; nothing is written first.
  """
  if restore_from:
    path = os.path.join(model_dir, restore_from)
    if not tf.io.gfile.exists(path + ".index"):
      names = [os.path.basename(p) for p in manager.checkpoints]
      raise config_lib.ConfigError(
          f"--restore_from={restore_from}: no such checkpoint in {model_dir!r} (it has "
          f"{', '.join(names) or 'none'})")
  else:
    path = manager.latest_checkpoint
  if not path:
    return None
  try:
    checkpoint.restore(path).assert_existing_objects_matched()
  except (tf.errors.OpError, AssertionError, ValueError, KeyError, IndexError, OSError) as e:
    older = [os.path.basename(p) for p in manager.checkpoints if p != path]
    how = (f"resume from an older one with --restore_from={older[-1]}" if older else
           "no older checkpoint is left: start a new --model_dir")
    raise config_lib.ConfigError(
        f"cannot restore checkpoint {path}: {config_lib.error_summary(e)}. --model_dir was "
        f"left untouched; {how}") from None
  return path


def save_or_rescue(checkpoint, manager, step, model_dir, model_config, train_config):
  """Saves `checkpoint` through `manager`; if the model directory fails, saves a rescue
  copy and raises CheckpointWriteError.

  The rescue copy is a complete model directory (config.json and a checkpoint) in the
  system's temporary directory, so the run resumes from it with --model_dir=<rescue>.
  """
  try:
    manager.save(checkpoint_number=step)
    return
  except (tf.errors.OpError, OSError) as e:
    error = config_lib.error_summary(e)
  try:
    rescue = tempfile.mkdtemp(prefix=f"mvae-rescue-step{step}-")
    run_dir.record_config(rescue, model_config, train_config)
    tf.train.CheckpointManager(checkpoint, rescue, max_to_keep=1).save(
        checkpoint_number=step)
    saved = (f"saved step {step} to {rescue} instead, a complete model directory: resume "
             f"with --model_dir={rescue}, or copy its files into {model_dir!r} once it has "
             "space")
  except (tf.errors.OpError, OSError) as e:
    saved = (f"the rescue copy failed too ({config_lib.error_summary(e)}); step {step} is "
             "lost")
  raise CheckpointWriteError(
      f"cannot write a checkpoint to --model_dir {model_dir!r}: {error}; {saved}")


class CheckpointWriter:
  """Saves checkpoints: the chief into the model directory, other workers to a scratch one.

  In a multi-worker run every worker must take part in each save (TF's guide to
  MultiWorkerMirroredStrategy); a non-chief worker writes to a temporary directory that is
  deleted right after, so that only the chief's checkpoint is kept.
  """

  def __init__(self, checkpoint, model_dir, model_config, train_config, max_to_keep, chief):
    self.checkpoint = checkpoint
    self.model_dir = model_dir
    self.chief = chief
    self._configs = (model_config, train_config)
    self.manager = (tf.train.CheckpointManager(checkpoint, model_dir, max_to_keep=max_to_keep)
                    if chief else None)

  @property
  def latest(self):
    return self.manager.latest_checkpoint if self.chief else None

  def save(self, step):
    if self.chief:
      save_or_rescue(self.checkpoint, self.manager, step, self.model_dir, *self._configs)
      return
    scratch = tempfile.mkdtemp(prefix="mvae-worker-checkpoint-")
    try:
      tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save(
          checkpoint_number=step)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
