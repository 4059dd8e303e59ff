"""A trained model to measure: a `train.py` run directory or one exported version.

`evaluate.py` and `count_objects.py` measure either kind the same way, through an
`evaluation.Codec`. A run directory gives its latest checkpoint and `config.json`; an
export (`E/<V>`, what `export.py` writes and TensorFlow Serving serves) gives its
signatures and the `metadata` signature's facts. Both say which data the model was
trained on (`num_sprites`, `presence_prob`), so that the experiments can regenerate such
scenes (appendix A); exports written before the metadata recorded the data say -1 there,
and `scene_settings` then asks for the numbers instead of guessing.

Every failure is one `config.ConfigError` (or `checkpoints.CheckpointError`, a ValueError
too) whose message names the path and what is wrong with it, raised before any scene is
generated.
"""

import dataclasses
import os

import tensorflow as tf

from mvae_tf import checkpoints
from mvae_tf import config as config_lib
from mvae_tf import evaluation

UNKNOWN = -1  # What an export's metadata holds for data it does not record.


@dataclasses.dataclass(frozen=True)
class Trained:
  """A loaded model and what is known of it.

  Attributes:
    codec: its encode and decode, `evaluation.Codec`.
    model: "mvae" or "vae" ("unknown" for an export that does not say).
    step: the training step of the weights.
    grid_size: H = W of its KL map.
    num_sprites, presence_prob: the data it was trained on (UNKNOWN where not recorded).
    source: where it came from, for a result file: {"model_dir", "step", "config"} of a
      run, {"saved_model", "step", "metadata"} of an export.
  """
  codec: evaluation.Codec
  model: str
  step: int
  grid_size: int
  num_sprites: int
  presence_prob: float
  source: dict

  def scene_settings(self, num_sprites=None, presence_prob=None):
    """(num_sprites, presence_prob) of the scenes to measure on: the given values, else
    those the model was trained on.

    An export that does not record its data takes the default presence_prob of
    `TrainConfig` (0.5, the paper's); its number of sprites has no default.

    Raises:
      config.ConfigError: num_sprites not given and not recorded, or a value out of range.
    """
    if num_sprites is None:
      if self.num_sprites < 1:
        raise config_lib.ConfigError(
            f"the export {self.source.get('saved_model')!r} does not record the data it "
            "was trained on")
      num_sprites = self.num_sprites
    if presence_prob is None:
      presence_prob = (self.presence_prob if self.presence_prob >= 0
                       else config_lib.TrainConfig().presence_prob)
    try:
      config_lib.validate_data_args(num_sprites, 1, 0, presence_prob)
    except ValueError as e:
      raise config_lib.ConfigError(str(e)) from None
    return num_sprites, presence_prob


def from_run(model_dir):
  """The latest checkpoint of a `train.py` run directory.

  Raises:
    checkpoints.CheckpointError, config.ConfigError: no run there, or one that cannot be
      restored (`checkpoints.restore_model`).
  """
  model, model_config, train_config, step = checkpoints.restore_model(model_dir)
  return Trained(
      codec=evaluation.Codec.from_model(model), model=model_config.model, step=step,
      grid_size=model_config.kl_map_size, num_sprites=train_config.num_sprites,
      presence_prob=train_config.presence_prob,
      source={"model_dir": model_dir, "step": step,
              "config": config_lib.to_dict(model_config, train_config)})


def from_export(path):
  """One exported version, `E/<V>`.

  Raises:
    config.ConfigError: `path` holds no saved_model.pb (such as the base directory E of
      the versions), or it cannot be loaded as an mvae_tf export.
  """
  if not os.path.isfile(os.path.join(path, "saved_model.pb")):
    raise config_lib.ConfigError(
        f"{path!r} holds no saved_model.pb: give one exported version, E/<V>")
  try:
    codec = evaluation.Codec.from_saved_model(path)
    metadata = codec.metadata
    step, grid_size = int(metadata["step"]), int(metadata["grid_size"])
  except (ValueError, KeyError, OSError, tf.errors.OpError) as e:
    raise config_lib.ConfigError(
        f"{path!r} cannot be loaded as an mvae_tf export: "
        f"{config_lib.error_summary(e)}") from None
  return Trained(
      codec=codec, model=str(metadata.get("model", "unknown")), step=step, grid_size=grid_size,
      num_sprites=int(metadata.get("num_sprites", UNKNOWN)),
      presence_prob=float(metadata.get("presence_prob", UNKNOWN)),
      source={"saved_model": path, "step": step, "metadata": metadata})
