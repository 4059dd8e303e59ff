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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mvae_tf import checkpoints, config, counting, kl_maps  # pylint: disable=g-import-not-at-top
  try:
    model, model_config, train_config, step = checkpoints.restore_model(FLAGS.model_dir)
  except (checkpoints.CheckpointError, config.ConfigError) as e:
    print(f"count_objects.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  encode = tf.function(model.encode)
  sprites, prob = train_config.num_sprites, train_config.presence_prob
  search_maps, search_counts = kl_maps.scene_kl_maps(
      encode, sprites, FLAGS.search_scenes, FLAGS.search_seed, prob)
  threshold, search_accuracy = counting.search_threshold(search_maps, search_counts)
  test_maps, test_counts = kl_maps.scene_kl_maps(
      encode, sprites, FLAGS.test_scenes, FLAGS.test_seed, prob)
  predicted = counting.predicted_counts(test_maps, threshold)
  result = {
      "model_dir": FLAGS.model_dir, "step": step, "num_sprites": sprites,
      "grid": model_config.grid_size, "threshold": threshold,
      "search": {"scenes": FLAGS.search_scenes, "seed": FLAGS.search_seed,
                 "accuracy": search_accuracy},
      "test": {"scenes": FLAGS.test_scenes, "seed": FLAGS.test_seed,
               "accuracy": float((predicted == test_counts).mean()),
               "confusion_true_by_predicted": counting.confusion_matrix(
                   test_counts, predicted, sprites).tolist()},
  }
  text = json.dumps(result, indent=2)
  print(text)
  if FLAGS.output:
    config.write_json_atomic(FLAGS.output, result)


if __name__ == "__main__":
  app.run(main)
