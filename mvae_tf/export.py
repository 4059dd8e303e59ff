"""SavedModel export for TensorFlow Serving and other TF code.

The SavedModel is written with `keras.export.ExportArchive`: a `tf.Module` holding Keras 3
models saved with `tf.saved_model.save` loads in Python but not in the C++ loader that TF
Serving uses (tensorflow#72963, keras#20095); ExportArchive's output loads in both.

Signatures (the contract; names and keys as here, batch dimension dynamic):

  encode(images f32[B, 64, 64, 3] in [0, 1])
      -> loc f32[B, N, D], scale f32[B, N, D]   the N selected posteriors, descending KL
         kl f32[B, N], coords f32[B, N, 2]      their KL and their cells' relative (y, x)
         kl_map f32[B, H, W]                    every candidate's KL
     Deterministic: no sampling.
  decode(latents f32[B, M, D], any M >= 1) -> logits f32[B, 64, 64, 3], images (sigmoid)
  reconstruct(images) -> images (decode of the posterior means), kl f32[B, N]
  serving_default: the same as encode.
  metadata() -> num_objects, latent_dim, grid_size (H = W of kl_map), step, num_sprites
      (int64 scalars), presence_prob (float32), model (string); num_sprites and
      presence_prob describe the scenes the model was trained on (-1: unknown)

A `--model=vae` export has the same signatures with N = 1, D = 60 and a 1x1 kl_map.

Versions: TF Serving polls the export directory for numeric subdirectories and loads them
without any completeness check, so a version is written into a sibling whose name is not a
number (`.tmp-export-*`) and renamed into place only once complete. Replacing a version
(`overwrite`) swaps the new directory with the old one in one atomic exchange
(Linux's renameat2 with RENAME_EXCHANGE), so a served version is never missing; where the
exchange is not available it moves the old version aside, moves the new one in, and moves
the old one back if that fails. An export holds an exclusive lock on its staging directory
while it runs, so the next export can tell a killed export's leftovers (unlocked) from a
running one's and removes only those.
"""

import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from mvae_tf import checkpoints
from mvae_tf import config as config_lib
from mvae_tf import model as model_lib

SIGNATURES = ("encode", "decode", "reconstruct", "serving_default", "metadata")


class ExportError(ValueError):
  """An export that cannot be made; the message says why."""


def _checked(tensor, expected, message):
  """`tensor` after an in-graph check of its shape against `expected` (None: any size).

  Python callers of a loaded signature are stopped by its TensorSpec already; the C++
  loader that TF Serving uses checks nothing, so the graph itself says what it expects.
  The check avoids ops on the rank (graph optimisation folds those from the declared
  shape): the runtime shape is padded with -1 and compared with `expected` + [-1].
  """
  k = len(expected)
  padded = tf.concat([tf.shape(tensor), tf.fill([k + 1], -1)], axis=0)[:k + 1]  # [k + 1]
  wanted = tf.constant([-2 if size is None else size for size in expected] + [-1])
  matches = tf.equal(padded, wanted) | (tf.equal(wanted, -2) & (padded >= 0))
  check = tf.debugging.Assert(tf.reduce_all(matches), [message, "; received shape",
                                                       tf.shape(tensor)])
  with tf.control_dependencies([check]):
    return tf.identity(tensor)


def read_metadata(loaded):
  """The `metadata` signature of a loaded export (`tf.saved_model.load`) as Python values:
  strings decoded, numbers as Python's int and float. KeyError if it has none."""
  metadata = {}
  for key, value in loaded.signatures["metadata"]().items():
    value = value.numpy()
    metadata[key] = value.decode() if isinstance(value, bytes) else value.item()
  return metadata


def _signature_functions(model, step, train_config=None):
  """The exported functions, each taking named tensors and returning a dict."""
  model_config = model.config
  image_spec = tf.TensorSpec([None, *model_lib.IMAGE_SHAPE], tf.float32, name="images")
  latent_spec = tf.TensorSpec([None, None, model_config.latent_dim], tf.float32,
                              name="latents")
  image_shape = (None, *model_lib.IMAGE_SHAPE)
  image_message = "images must be float32 [batch, 64, 64, 3]"
  latent_shape = (None, None, model_config.latent_dim)
  latent_message = f"latents must be float32 [batch, objects, {model_config.latent_dim}]"

  def encode(images):
    return model.encode(_checked(images, image_shape, image_message))

  def decode(latents):
    logits = model.decode(_checked(latents, latent_shape, latent_message))
    return {"logits": logits, "images": tf.sigmoid(logits)}

  def reconstruct(images):
    encoded = model.encode(_checked(images, image_shape, image_message))
    return {"images": tf.sigmoid(model.decode(encoded["loc"])), "kl": encoded["kl"]}

  # The data the model was trained on, so that evaluation can regenerate such scenes;
  # -1 where unknown (a model exported without its run's configuration).
  num_sprites = train_config.num_sprites if train_config else -1
  presence_prob = train_config.presence_prob if train_config else -1.0

  def metadata():
    return {
        "num_objects": tf.constant(model_config.num_objects, tf.int64),
        "latent_dim": tf.constant(model_config.latent_dim, tf.int64),
        "grid_size": tf.constant(model_config.kl_map_size, tf.int64),
        "step": tf.constant(step, tf.int64),
        "model": tf.constant(model_config.model),
        "num_sprites": tf.constant(num_sprites, tf.int64),
        "presence_prob": tf.constant(presence_prob, tf.float32),
    }

  return [("encode", encode, [image_spec]), ("decode", decode, [latent_spec]),
          ("reconstruct", reconstruct, [image_spec]), ("metadata", metadata, [])]


def write_saved_model(model, step, path, train_config=None):
  """Writes `model`'s signatures as a SavedModel at `path` (not atomically).

  `train_config`, the run's `TrainConfig`, puts its data facts (num_sprites,
  presence_prob) in the metadata signature.
  """
  archive = keras.export.ExportArchive()
  archive.track(model)
  for name, fn, spec in _signature_functions(model, step, train_config):
    archive.add_endpoint(name, fn, input_signature=spec)
  # `encode` is the first endpoint, so ExportArchive also serves it as serving_default.
  archive.write_out(path, verbose=False)


def _check_export_dir(export_dir):
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise ExportError(f"--export_dir {export_dir!r} exists and is not a directory")
  try:
    os.makedirs(export_dir, exist_ok=True)
  except OSError as e:
    raise ExportError(f"cannot create --export_dir {export_dir!r}: {e.strerror}") from None
  if not os.access(export_dir, os.W_OK | os.X_OK):
    raise ExportError(f"--export_dir {export_dir!r} is not writable")


def export(model_dir, export_dir, version=None, overwrite=False):
  """Exports the latest checkpoint of a `train.py` run as `export_dir/<version>/`.

  Args:
    model_dir: the run's model directory (its config.json says what to build).
    export_dir: the base directory TF Serving watches.
    version: the integer version, by default the checkpoint's training step.
    overwrite: replace an existing version.

  Returns:
    The path of the new version.

  Raises:
    ExportError, checkpoints.CheckpointError, config.ConfigError: with one clear message;
      nothing is left in `export_dir` but what was there before.
  """
  if version is not None and not (config_lib.is_int(version) and version >= 0):
    raise ExportError(f"--version must be an integer >= 0; received {version!r}")
  model, _, train_config, step = checkpoints.restore_model(model_dir)
  version = step if version is None else version
  final = os.path.join(export_dir, str(version))
  if os.path.exists(final) and not overwrite:
    raise ExportError(f"version {final!r} exists; pass --overwrite to replace it")
  _check_export_dir(export_dir)
  remove_stale_staging(export_dir)
  staging = tempfile.mkdtemp(dir=export_dir, prefix=f"{STAGING_PREFIX}{version}-")
  lock = _lock(staging)
  try:
    write_saved_model(model, step, os.path.join(staging, "model"), train_config)
    _install(os.path.join(staging, "model"), final, os.path.join(staging, "replaced"))
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    os.close(lock)
  return final


STAGING_PREFIX = ".tmp-export-"
_LOCK_FILE = ".lock"
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _lock(staging):
  """Takes an exclusive lock that marks `staging` as in use until the fd closes (or dies)."""
  fd = os.open(os.path.join(staging, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  return fd


def remove_stale_staging(export_dir):
  """Removes the staging directories of exports that died; returns their names.

  A directory is stale when nobody holds its lock (an export's lock ends with its process,
  however it ends). One without a lock file is a killed export's only if it is more than
  an hour old: a running export creates its lock a moment after the directory.
  """
  removed = []
  for name in sorted(os.listdir(export_dir)):
    path = os.path.join(export_dir, name)
    if not name.startswith(STAGING_PREFIX) or not os.path.isdir(path):
      continue
    try:
      fd = os.open(os.path.join(path, _LOCK_FILE), os.O_RDWR)
    except FileNotFoundError:
      if time.time() - os.path.getmtime(path) > 3600:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(name)
      continue
    except OSError:
      continue
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      continue  # A running export holds it.
    finally:
      os.close(fd)
    shutil.rmtree(path, ignore_errors=True)
    removed.append(name)
  return removed


def _exchange(a, b):
  """Atomically swaps two paths (renameat2 RENAME_EXCHANGE); OSError where unsupported."""
  libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
  renameat2 = getattr(libc, "renameat2", None)
  if renameat2 is None:
    raise OSError(errno.ENOSYS, "renameat2 is not available")
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE):
    code = ctypes.get_errno()
    raise OSError(code, os.strerror(code), a)


def _install(new, final, aside):
  """Puts the directory `new` at `final`.

  A replaced version is left at `new` (exchanged) or at `aside` (moved), both in the staging
  directory that the caller removes. A served `final` is never missing: it is exchanged
  with `new` atomically where the OS can, and otherwise moved aside only for the moment of
  the second rename, and moved back if that rename fails.
  """
  if not os.path.exists(final):
    os.rename(new, final)
    return
  try:
    _exchange(new, final)
  except OSError as e:
    if e.errno not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
      raise
  else:
    return  # `new` now holds the old version.
  os.rename(final, aside)
  try:
    os.rename(new, final)
  except BaseException:
    os.rename(aside, final)
    raise
