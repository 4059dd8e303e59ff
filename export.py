r"""Exports a trained run as a SavedModel that TF Serving serves and TF code loads.

  python export.py --model_dir=/tmp/mvae --export_dir=/tmp/mvae_export [--version=V]

Restores the latest checkpoint of --model_dir (using the config.json saved there) and
writes --export_dir/<V>/, V being the checkpoint's training step by default. The version
is written under a non-numeric name and renamed into place when complete. See
mvae_tf/export.py for the signatures.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on every CPU (README).

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

flags.DEFINE_string("model_dir", None, "A train.py model directory.")
flags.DEFINE_string("export_dir", None, "Base directory of the versions (TF Serving's "
                    "--model_base_path).")
flags.DEFINE_integer("version", None, "Version number; default: the training step.")
flags.DEFINE_boolean("overwrite", False, "Replace an existing version.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  for name in ("model_dir", "export_dir"):
    if not getattr(FLAGS, name):
      print(f"export.py: error: --{name} is required", file=sys.stderr)
      sys.exit(2)
  from mvae_tf import checkpoints, config  # pylint: disable=g-import-not-at-top
  from mvae_tf import export  # pylint: disable=g-import-not-at-top
  try:
    path = export.export(FLAGS.model_dir, FLAGS.export_dir, FLAGS.version, FLAGS.overwrite)
  except (export.ExportError, checkpoints.CheckpointError, config.ConfigError) as e:
    print(f"export.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"Exported {path}")


if __name__ == "__main__":
  app.run(main)
