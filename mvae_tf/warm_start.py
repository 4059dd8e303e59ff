"""Starting a training run from an exported model (`train.py --init_from=EXPORT`).

An export (`export.py`) keeps the model's weights and its step but not Adam's moments. A run
warm-started from it continues that model's training in a new model directory:

  * the weights are the export's, matched to the model's variables by name and shape;
  * the step is the export's, so the learning-rate schedule (`schedule.LogLinearDecay`) and
    the KL warm-up continue where the exported run left them, and the data stream continues
    at that step's batches;
  * Adam's moments start as a run at that step would hold them in the steady state: the
    first moment m = 0 and the second v = mean of g**2 over `moment_batches` global batches
    at the exported weights. Adam (Kingma and Ba, 2015, algorithm 1) divides m by sqrt(v)
    after a bias correction 1 / (1 - beta**t) that is 1 at t = step >> 1000; zero moments at
    such a step would make the first updates up to 1 / sqrt(1 - beta_2**k) times (6.5x at
    k = 10) the step size, a shock to trained weights. With v estimated, m / sqrt(v) grows
    from 0 to its usual size over the first ~1 / (1 - beta_1) = 10 steps.

Only a model directory without a checkpoint starts this way: once the run has saved one,
the same command resumes from its own checkpoint (which has the moments). The run records
where it started in `warm_start.json` beside `config.json`.

The export's metadata signature names the model, N, D and the grid, which must match the
configuration; the variables must match one to one by name and shape. Options that change
no variable (`aggregation`, `suppression_radius`) cannot be checked from an export: they
are the run's flags.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from mvae_tf import config as config_lib
from mvae_tf import export

WARM_START_FILE = "warm_start.json"
# Global batches whose mean squared gradient starts Adam's second moment.
MOMENT_BATCHES = 50


@dataclasses.dataclass(frozen=True)
class ExportedWeights:
  """What a warm start takes from an export.

  Attributes:
    path: the export's version directory.
    step: the step the export was taken at (its metadata).
    values: variable name (a Keras variable path, such as "mvae/encoder/conv1/kernel") ->
      its value.
    metadata: the export's metadata signature, as Python values.
  """
  path: str
  step: int
  values: dict
  metadata: dict


def _error(path, message):
  return config_lib.ConfigError(f"--init_from={path}: {message}")


def read_export(path):
  """Loads the weights, step and metadata of an export's version directory.

  Raises:
    config.ConfigError: naming what is wrong when `path` is not an `export.py` version
      directory (such as `pretrained/mvae_3sprites/67000`).
  """
  if not os.path.isdir(path):
    raise _error(path, "no such directory; give an export's version directory, such as "
                 "pretrained/mvae_3sprites/67000")
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    versions = sorted(name for name in os.listdir(path) if name.isdigit())
    hint = (f"; it holds the versions {', '.join(versions)}: give one of them" if versions
            else "")
    raise _error(path, f"not a SavedModel (no saved_model.pb){hint}")
  try:
    loaded = tf.saved_model.load(path)
  except (tf.errors.OpError, ValueError, OSError) as e:
    raise _error(path, f"cannot load the SavedModel: {config_lib.error_summary(e)}") from None
  if "metadata" not in loaded.signatures:
    raise _error(path, "the SavedModel has no metadata signature; give a version directory "
                 "that export.py wrote")
  metadata = export.read_metadata(loaded)
  missing = sorted({"step", "model", "num_objects", "latent_dim", "grid_size"} - set(metadata))
  if missing or not getattr(loaded, "variables", None):
    what = f"no {', '.join(missing)} in its metadata" if missing else "no variables"
    raise _error(path, f"the SavedModel has {what}; give a version directory that export.py "
                 "wrote")
  # A tf.Variable's name is the Keras variable's path with TF's ":0" output suffix.
  values = {variable.name.split(":")[0]: variable.numpy() for variable in loaded.variables}
  return ExportedWeights(path, int(metadata["step"]), values, metadata)


def check_matches(exported, model_config):
  """Raises ConfigError naming the first architecture fact of the export's metadata that
  differs from `model_config`."""
  wanted = {"model": model_config.model, "num_objects": model_config.num_objects,
            "latent_dim": model_config.latent_dim, "grid_size": model_config.kl_map_size}
  for key, value in wanted.items():
    if exported.metadata.get(key) != value:
      raise _error(exported.path, f"the export has {key}={exported.metadata.get(key)!r} but "
                   f"this run has {key}={value!r}; give the flags the exported model was "
                   "trained with")


def assign_weights(model, exported):
  """Sets every variable of `model` to the export's value of the same name.

  Raises ConfigError, before assigning anything, when the names or shapes differ.
  """
  variables = {variable.path: variable for variable in model.variables}
  missing = sorted(set(variables) - set(exported.values))
  extra = sorted(set(exported.values) - set(variables))
  reshaped = [f"{name} {tuple(exported.values[name].shape)} (this run: "
              f"{tuple(variables[name].shape)})" for name in sorted(variables)
              if name in exported.values
              and tuple(exported.values[name].shape) != tuple(variables[name].shape)]
  problems = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
      [f"unknown {', '.join(extra[:3])}"] if extra else []) + (
      [f"other shapes: {', '.join(reshaped[:3])}"] if reshaped else [])
  if problems:
    raise _error(exported.path, "its variables do not match this run's model ("
                 + "; ".join(problems) + "); give the flags the exported model was trained "
                 "with")
  for name, variable in variables.items():
    variable.assign(exported.values[name])


def record(model_dir, exported, moment_batches):
  """Writes `warm_start.json` (atomically): where and at which step the run started."""
  config_lib.write_json_atomic(
      os.path.join(model_dir, WARM_START_FILE),
      {"init_from": os.path.abspath(exported.path), "step": exported.step,
       "moment_batches": moment_batches, "metadata": exported.metadata})


def mean_squared_gradients(gradient_batches):
  """The elementwise mean of g**2 over an iterable of gradient lists (numpy or tensors)."""
  total, count = None, 0
  for gradients in gradient_batches:
    squares = [np.square(np.asarray(g, np.float64)) for g in gradients]
    total = squares if total is None else [t + s for t, s in zip(total, squares)]
    count += 1
  if not count:
    raise ValueError("mean_squared_gradients needs at least one batch of gradients")
  return [(t / count).astype(np.float32) for t in total]
