r"""Object counting from KL maps by the paper's protocol (section 4.3), for a trained run.

  python count_objects.py --model_dir=/tmp/mvae

Searches the KL threshold on --search_scenes fresh scenes (seed --search_seed), then reports
the accuracy of that threshold on --test_scenes other scenes (seed --test_seed), with the
confusion matrix of true against predicted counts. Prints JSON; --output also writes it.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on every CPU (README).

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

flags.DEFINE_string("model_dir", None, "A train.py model directory.", required=True)
flags.DEFINE_integer("search_scenes", 6400, "Scenes on which the threshold is searched.")
flags.DEFINE_integer("test_scenes", 12800, "Scenes on which the threshold is tested.")
flags.DEFINE_integer("search_seed", 1001, "Seed of the search scenes.")
flags.DEFINE_integer("test_seed", 1002, "Seed of the test scenes.")
flags.DEFINE_string("output", None, "Also write the JSON result here.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mvae_tf import checkpoints, config, evaluation  # pylint: disable=g-import-not-at-top
  try:
    model, model_config, train_config, step = checkpoints.restore_model(FLAGS.model_dir)
  except (checkpoints.CheckpointError, config.ConfigError) as e:
    print(f"count_objects.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  result = {"model_dir": FLAGS.model_dir, "step": step,
            "num_sprites": train_config.num_sprites, "grid": model_config.kl_map_size}
  result.update(evaluation.object_counting(
      evaluation.Codec.from_model(model), train_config.num_sprites, FLAGS.search_scenes,
      FLAGS.test_scenes, FLAGS.search_seed, FLAGS.test_seed, train_config.presence_prob))
  print(json.dumps(result, indent=2))
  if FLAGS.output:
    config.write_json_atomic(FLAGS.output, result)


if __name__ == "__main__":
  app.run(main)
