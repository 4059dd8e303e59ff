"""Restoring a trained model from a `train.py` model directory, outside any strategy."""

import os

import tensorflow as tf

from mvae_tf import config as config_lib
from mvae_tf import model as model_lib


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
