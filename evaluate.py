r"""The paper's experiments on a trained run: figures and measured numbers.

  python evaluate.py --model_dir=/tmp/mvae --output_dir=/tmp/mvae_eval
  python evaluate.py --saved_model=/tmp/mvae_export/12345 --output_dir=...

Writes PNG figures and metrics.json into --output_dir (and, with --tensorboard, the same as
TensorBoard summaries under --output_dir/tensorboard). --vae_model_dir adds the VAE
baseline: its test ELBO, its traversals and its training curve; --vae_saved_model adds the
same from an exported VAE (such as pretrained/vae_3sprites/55000), without the curve, which
an export does not keep.
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
flags.DEFINE_string("saved_model", None, "An exported version, E/<V>, instead of --model_dir.")
flags.DEFINE_string("vae_model_dir", None, "A --model=vae run to compare against.")
flags.DEFINE_string("vae_saved_model", None, "An exported --model=vae version, E/<V>, to "
                    "compare against, instead of --vae_model_dir.")
flags.DEFINE_string("output_dir", None, "Where figures and metrics.json go.")
flags.DEFINE_integer("num_sprites", None, "Scene sprites; default: what the model was "
                     "trained on (its config.json, or the export's metadata).")
flags.DEFINE_float("presence_prob", None, "Probability of each sprite slot; default: what "
                   "the model was trained on (0.5 for exports that do not record it).")
flags.DEFINE_string("data_path", None, "Evaluate on DeepMind's Multi-dSprites instead: "
                    "test ELBO and FG-ARI on this GZIP TFRecord file's first "
                    "--segmentation_scenes scenes (nothing else).")
flags.DEFINE_enum("variant", None, ["binarized", "colored_on_grayscale", "colored_on_colored"],
                  "The Multi-dSprites variant of --data_path.")
flags.DEFINE_boolean("tensorboard", False, "Also write figures and numbers to TensorBoard.")
flags.DEFINE_integer("elbo_scenes", 2048, "Scenes for the test ELBO.")
flags.DEFINE_integer("search_scenes", 6400, "Scenes for the counting threshold search.")
flags.DEFINE_integer("test_scenes", 12800, "Scenes for the counting test.")
flags.DEFINE_integer("segmentation_scenes", 1024, "Scenes for FG-ARI.")
flags.DEFINE_integer("exchange_pairs", 512, "Scene pairs for entity exchange.")
flags.DEFINE_integer("sequential_scenes", 1024,
                     "Scenes for sequential decoding, and one-sprite scenes for "
                     "lone_sprite_decoding.")
flags.DEFINE_integer("seed", 2000, "Base seed of all evaluation scenes.")
FLAGS = flags.FLAGS


class _Progress:
  """Prints each stage with the elapsed time and an ETA over the stages' weights."""

  def __init__(self, stages):
    self.stages, self.done, self.start = stages, 0.0, time.time()

  def __call__(self, name):
    elapsed = time.time() - self.start
    total = sum(self.stages.values())
    eta = elapsed / self.done * (total - self.done) if self.done else float("nan")
    print(f"[{elapsed:6.0f}s, ETA {eta:5.0f}s] {name}", flush=True)
    self.done += self.stages[name]


def _fail(message):
  print(f"evaluate.py: error: {message}", file=sys.stderr)
  sys.exit(2)


# The flags that count scenes (or pairs of scenes), each at least 1.
SCENE_COUNT_FLAGS = ("elbo_scenes", "search_scenes", "test_scenes", "segmentation_scenes",
                     "exchange_pairs", "sequential_scenes")


def _check_flags():
  """Every flag that needs no TensorFlow to check, before anything is loaded."""
  if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
    _fail("give exactly one of --model_dir and --saved_model")
  if not FLAGS.output_dir:
    _fail("--output_dir is required")
  if os.path.exists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
    _fail(f"--output_dir {FLAGS.output_dir!r} is a file, not a directory")
  for flag in SCENE_COUNT_FLAGS:
    if getattr(FLAGS, flag) < 1:
      _fail(f"--{flag} must be >= 1; received {getattr(FLAGS, flag)}")
  if FLAGS.seed < 0:
    _fail(f"--seed must be >= 0; received {FLAGS.seed}")
  if FLAGS.num_sprites is not None and FLAGS.num_sprites < 1:
    _fail(f"--num_sprites must be >= 1; received {FLAGS.num_sprites}")
  if FLAGS.presence_prob is not None and not 0 <= FLAGS.presence_prob <= 1:
    _fail(f"--presence_prob must be between 0 and 1; received {FLAGS.presence_prob}")
  if FLAGS.vae_model_dir and FLAGS.vae_saved_model:
    _fail("give at most one of --vae_model_dir and --vae_saved_model")
  if bool(FLAGS.data_path) != bool(FLAGS.variant):
    _fail("--data_path and --variant go together")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  _check_flags()
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from mvae_tf import checkpoints, config, evaluation, figures, tb_logs, trained
  # pylint: enable=g-import-not-at-top
  if FLAGS.data_path:
    from mvae_tf import multi_dsprites  # pylint: disable=g-import-not-at-top
    try:
      multi_dsprites.check_file(FLAGS.data_path, FLAGS.variant)
    except config.ConfigError as e:
      _fail(str(e))

  def load(model_dir_flag, saved_model_flag):
    """The model of whichever of the two flags is set, or None."""
    model_dir, saved_model = getattr(FLAGS, model_dir_flag), getattr(FLAGS, saved_model_flag)
    try:
      if model_dir:
        return trained.from_run(model_dir)
      return trained.from_export(saved_model) if saved_model else None
    except (checkpoints.CheckpointError, config.ConfigError) as e:
      if model_dir:
        _fail(str(e).replace("--model_dir", f"--{model_dir_flag}", 1))
      _fail(f"--{saved_model_flag} {e}")

  # Everything is loaded before any work, so a bad path fails at once.
  vae = load("vae_model_dir", "vae_saved_model")
  if vae and vae.model != "vae":
    flag = "vae_model_dir" if FLAGS.vae_model_dir else "vae_saved_model"
    kind = "run" if FLAGS.vae_model_dir else "export"
    _fail(f"--{flag} {getattr(FLAGS, flag)!r} holds a --model={vae.model} {kind}, not a VAE")
  model = load("model_dir", "saved_model")
  codec, step, source = model.codec, model.step, model.source
  if not FLAGS.data_path:  # Multi-dSprites brings its own scenes.
    try:
      num_sprites, presence_prob = model.scene_settings(FLAGS.num_sprites,
                                                        FLAGS.presence_prob)
    except config.ConfigError as e:
      _fail(f"--num_sprites is required: {e}")
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  if FLAGS.data_path:
    print(f"Evaluating on {FLAGS.data_path} ({FLAGS.variant})", flush=True)
    try:
      measured = evaluation.multi_dsprites_evaluation(
          codec, FLAGS.data_path, FLAGS.variant, FLAGS.segmentation_scenes, FLAGS.seed)
    except ValueError as e:
      _fail(f"--data_path: {e}")
    results = {"source": source, "multi_dsprites": measured}
    config.write_json_atomic(os.path.join(FLAGS.output_dir, "metrics.json"), results)
    print(json.dumps({"test_elbo": measured["test_elbo"]["elbo"],
                      "fg_ari": measured["segmentation"]["fg_ari"]}))
    print(f"Wrote metrics.json to {FLAGS.output_dir}", flush=True)
    return

  seed = FLAGS.seed
  stages = {"test ELBO": 1, "object counting": 6, "segmentation": 2, "entity exchange": 2,
            "sequential decoding": 2, "figures": 1, "VAE baseline": 2 if vae else 0}
  progress = _Progress(stages)
  results = {"source": source, "num_sprites": num_sprites, "presence_prob": presence_prob,
             "scene_batch_size": evaluation.SCENE_BATCH,
             "kl_map_batch_size": evaluation.KL_MAP_BATCH}
  progress("test ELBO")
  results["test_elbo"] = evaluation.test_elbo(codec, num_sprites, FLAGS.elbo_scenes, seed + 1,
                                              presence_prob)
  progress("object counting")
  results["object_counting"] = evaluation.object_counting(
      codec, num_sprites, FLAGS.search_scenes, FLAGS.test_scenes, seed + 2, seed + 3,
      presence_prob)
  progress("segmentation")
  results["segmentation"] = evaluation.segmentation(
      codec, num_sprites, FLAGS.segmentation_scenes, seed + 4, presence_prob)
  progress("entity exchange")
  results["entity_exchange"] = evaluation.entity_exchange(
      codec, num_sprites, FLAGS.exchange_pairs, seed + 5, presence_prob)
  progress("sequential decoding")
  results["sequential_decoding"] = evaluation.sequential_decoding(
      codec, num_sprites, FLAGS.sequential_scenes, seed + 6, presence_prob)
  results["lone_sprite_decoding"] = evaluation.lone_sprite_decoding(
      codec, FLAGS.sequential_scenes, seed + 8)

  progress("figures")
  rng = np.random.RandomState(seed)
  shown = next(evaluation.scenes(num_sprites, 16, seed + 7, presence_prob=presence_prob))
  images = shown["image"]
  busiest = images[int(np.argmax(shown["count"]))]
  written = {
      "reconstructions_samples.png": figures.reconstructions_and_samples(codec, images[:8],
                                                                         rng),
      "kl_maps.png": figures.kl_maps(codec, images[:8]),
      "entity_exchange.png": figures.entity_exchange(codec, images[:6], images[6:12]),
      "sequential_decoding.png": figures.sequential_decoding(codec, images[:4]),
      "traversals.png": figures.traversals(codec, busiest),
  }
  curves = {}
  if FLAGS.model_dir:
    steps, elbo = tb_logs.read_scalars(FLAGS.model_dir, "train/elbo")
    if len(steps):
      curves["MVAE"] = (steps, elbo)
  if vae:
    progress("VAE baseline")
    vae_elbo = evaluation.test_elbo(vae.codec, num_sprites, FLAGS.elbo_scenes, seed + 1,
                                    presence_prob)
    results["vae_baseline"] = {
        **vae.source, "test_elbo": vae_elbo,
        "mvae_minus_vae_elbo": results["test_elbo"]["elbo"] - vae_elbo["elbo"],
        "mvae_minus_vae_elbo_by_scene": evaluation.elbo_gap_by_scene(
            results["test_elbo"]["by_scene"], vae_elbo["by_scene"])}
    written["vae_traversals.png"] = figures.traversals(
        vae.codec, busiest, dims=range(vae.codec.latent_dim),
        title="VAE latent traversals (paper Fig. 5)")
    if FLAGS.vae_model_dir:  # An export keeps no training curve.
      steps, elbo = tb_logs.read_scalars(FLAGS.vae_model_dir, "train/elbo")
      if len(steps):
        curves["VAE"] = (steps, elbo)
  if curves:
    written["training_curves.png"] = figures.training_curves(curves)
  writer = (tf.summary.create_file_writer(os.path.join(FLAGS.output_dir, "tensorboard"))
            if FLAGS.tensorboard else None)
  for name, fig in written.items():
    if writer:
      fig.canvas.draw()
      pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]
      with writer.as_default():
        tf.summary.image(name[:-4], pixels[None], step=step)
    figures.save(fig, os.path.join(FLAGS.output_dir, name))
  results["figures"] = sorted(written)
  if writer:
    with writer.as_default():
      for key, value in [("test/elbo", results["test_elbo"]["elbo"]),
                         ("test/nll", results["test_elbo"]["nll"]),
                         ("test/count_accuracy",
                          results["object_counting"]["test"]["accuracy"]),
                         ("test/fg_ari", results["segmentation"]["fg_ari"]),
                         ("test/exchange_success",
                          results["entity_exchange"]["success_rate"])]:
        tf.summary.scalar(key, value, step=step)
    writer.flush()
  config.write_json_atomic(os.path.join(FLAGS.output_dir, "metrics.json"), results)
  print(json.dumps({"test_elbo": results["test_elbo"]["elbo"],
                    "count_accuracy": results["object_counting"]["test"]["accuracy"],
                    "fg_ari": results["segmentation"]["fg_ari"],
                    "exchange_success": results["entity_exchange"]["success_rate"]}))
  print(f"Wrote {len(written)} figures and metrics.json to {FLAGS.output_dir}", flush=True)


if __name__ == "__main__":
  app.run(main)
