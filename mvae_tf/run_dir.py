"""A run's model directory (`train.py --model_dir`): checked, then its `config.json` written.

The directory holds `config.json` (the run's configuration, which export and evaluation
read back), TF checkpoints (`checkpoints`) and TensorBoard event files. A run resumes only
in a directory of the same configuration, but for the settings that may change on resume
(`config.RESUMABLE_KEYS`); nothing is written before the checks pass but a probe of
writability, removed at once.
"""

import os
import tempfile

from mvae_tf import config as config_lib


def _describe_dir_contents(model_dir):
  names = sorted(os.listdir(model_dir))
  return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def check_model_dir(model_dir, model_config, train_config):
  """Checks `model_dir` against the requested configuration; writes nothing but a probe.

  A new or empty directory is fine. A directory with a `config.json` must match it in every
  setting but the resumable ones (`config.RESUMABLE_KEYS`), or ConfigError names the
  settings that differ. A non-empty directory without one is refused, and so is a directory
  that cannot be created or written (checked by writing and removing a small file, which
  catches read-only and full file systems that permission bits do not show).
  """
  train_config = config_lib.resolve_train_config(model_config, train_config)
  requested = config_lib.to_dict(model_config, train_config)
  path = config_lib.config_path(model_dir)
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise config_lib.ConfigError(f"--model_dir {model_dir!r} exists and is not a directory")
  if os.path.isfile(path):
    saved_model, saved_train = config_lib.read_run_config(model_dir)
    differences = config_lib.config_differences(
        config_lib.to_dict(saved_model, saved_train), requested)
    if differences:
      raise config_lib.ConfigError(
          f"--model_dir {model_dir!r} holds a run of another configuration "
          f"({'; '.join(differences)}); use a new --model_dir or the same settings")
  elif os.path.isdir(model_dir) and os.listdir(model_dir):
    raise config_lib.ConfigError(
        f"--model_dir {model_dir!r} is not empty ({_describe_dir_contents(model_dir)}) and "
        f"has no {config_lib.CONFIG_FILE}; refusing to write into it")
  try:
    os.makedirs(model_dir, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=model_dir, prefix=".tmp-write-probe-")
    try:
      os.write(fd, b"0" * 4096)
      os.fsync(fd)
    finally:
      os.close(fd)
      os.remove(probe)
  except OSError as e:
    raise config_lib.ConfigError(
        f"--model_dir {model_dir!r} is not writable: {e.strerror}") from None


def record_config(model_dir, model_config, train_config):
  """Writes the run's `config.json` (atomically) into a checked `model_dir`, with the
  model-dependent defaults resolved, so that it says what the run trains with."""
  train_config = config_lib.resolve_train_config(model_config, train_config)
  config_lib.write_json_atomic(config_lib.config_path(model_dir),
                               config_lib.to_dict(model_config, train_config))


def prepare_model_dir(model_dir, model_config, train_config):
  """`check_model_dir`, then `record_config`."""
  check_model_dir(model_dir, model_config, train_config)
  record_config(model_dir, model_config, train_config)
