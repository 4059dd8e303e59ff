r"""Object counting from KL maps by the paper's protocol (section 4.3), for a trained model.

  python count_objects.py --model_dir=/tmp/mvae
  python count_objects.py --saved_model=pretrained/mvae_3sprites/67000

Searches the KL threshold on --search_scenes fresh scenes (seed --search_seed), then reports
the accuracy of that threshold on --test_scenes other scenes (seed --test_seed), with the
confusion matrix of true against predicted counts, on scenes of the data the model was
trained on (--num_sprites and --presence_prob change it). Prints JSON; --output also
writes it.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on every CPU (README).

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

flags.DEFINE_string("model_dir", None, "A train.py model directory.")
flags.DEFINE_string("saved_model", None, "An exported version, E/<V> (such as "
                    "pretrained/mvae_3sprites/67000), instead of --model_dir.")
flags.DEFINE_integer("num_sprites", None, "Scene sprites; default: what the model was "
                     "trained on (its config.json, or the export's metadata).")
flags.DEFINE_float("presence_prob", None, "Probability of each sprite slot; default: what "
                   "the model was trained on (0.5 for exports that do not record it).")
flags.DEFINE_integer("search_scenes", 6400, "Scenes on which the threshold is searched.")
flags.DEFINE_integer("test_scenes", 12800, "Scenes on which the threshold is tested.")
flags.DEFINE_integer("search_seed", 1001, "Seed of the search scenes.")
flags.DEFINE_integer("test_seed", 1002, "Seed of the test scenes.")
flags.DEFINE_string("output", None, "Also write the JSON result here.")
FLAGS = flags.FLAGS


def _fail(message):
  print(f"count_objects.py: error: {message}", file=sys.stderr)
  sys.exit(2)


def _check_flags():
  """Every flag that needs no TensorFlow to check, before the model is loaded."""
  if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
    _fail("give exactly one of --model_dir and --saved_model")
  for flag, minimum in (("search_scenes", 1), ("test_scenes", 1), ("search_seed", 0),
                        ("test_seed", 0)):
    if getattr(FLAGS, flag) < minimum:
      _fail(f"--{flag} must be >= {minimum}; received {getattr(FLAGS, flag)}")
  if FLAGS.num_sprites is not None and FLAGS.num_sprites < 1:
    _fail(f"--num_sprites must be >= 1; received {FLAGS.num_sprites}")
  if FLAGS.presence_prob is not None and not 0 <= FLAGS.presence_prob <= 1:
    _fail(f"--presence_prob must be between 0 and 1; received {FLAGS.presence_prob}")
  if FLAGS.output:
    directory = os.path.dirname(os.path.abspath(FLAGS.output))
    if os.path.isdir(FLAGS.output) or not os.path.isdir(directory):
      _fail(f"--output {FLAGS.output!r}: give a file in an existing directory")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  _check_flags()
  from mvae_tf import checkpoints, config, evaluation, trained  # pylint: disable=g-import-not-at-top
  try:
    model = (trained.from_run(FLAGS.model_dir) if FLAGS.model_dir
             else trained.from_export(FLAGS.saved_model))
  except (checkpoints.CheckpointError, config.ConfigError) as e:
    _fail(str(e) if FLAGS.model_dir else f"--saved_model {e}")
  if model.model != "mvae":
    flag = "model_dir" if FLAGS.model_dir else "saved_model"
    _fail(f"--{flag} {getattr(FLAGS, flag)!r} holds a --model={model.model} model: counting "
          "reads an MVAE's KL map of candidate objects (paper 4.3)")
  try:
    num_sprites, presence_prob = model.scene_settings(FLAGS.num_sprites, FLAGS.presence_prob)
  except config.ConfigError as e:
    _fail(f"--num_sprites is required: {e}")
  source = {k: v for k, v in model.source.items() if k in ("model_dir", "saved_model")}
  result = {**source, "step": model.step, "num_sprites": num_sprites,
            "presence_prob": presence_prob, "grid": model.grid_size}
  start = time.time()

  def progress(stage):  # On stderr: stdout is the JSON alone.
    print(f"[{time.time() - start:5.0f}s] {stage}", file=sys.stderr, flush=True)

  result.update(evaluation.object_counting(
      model.codec, num_sprites, FLAGS.search_scenes, FLAGS.test_scenes, FLAGS.search_seed,
      FLAGS.test_seed, presence_prob, progress))
  print(json.dumps(result, indent=2))
  if FLAGS.output:
    config.write_json_atomic(FLAGS.output, result)


if __name__ == "__main__":
  app.run(main)
