r"""Trains a multi-entity VAE (or the VAE baseline) on multi-object dSprites.

  python train.py --num_sprites=8 --model_dir=/tmp/mvae

Runs under tf.distribute.MirroredStrategy on all GPUs, or on the CPU when there are none;
with --strategy=multi_worker, under MultiWorkerMirroredStrategy over the cluster in
TF_CONFIG (run the same command on every worker).
Rerun with the same --model_dir (and a larger --train_steps) to resume. SIGTERM or Ctrl-C
saves a checkpoint before stopping. Watch it with `tensorboard --logdir=<model_dir>`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on every CPU (README).

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from mvae_tf import config as config_lib  # Imports no TensorFlow.

_MODEL_DEFAULTS = config_lib.ModelConfig()
_TRAIN_DEFAULTS = config_lib.TrainConfig()

flags.DEFINE_integer("num_sprites", _TRAIN_DEFAULTS.num_sprites,
                     "Sprite slots per scene; each is filled with --presence_prob.")
flags.DEFINE_float("presence_prob", _TRAIN_DEFAULTS.presence_prob,
                   "Probability that each sprite slot is filled.")
flags.DEFINE_enum("dataset", _TRAIN_DEFAULTS.dataset, config_lib.DATASETS,
                  "dsprites: multi-object dSprites generated on the fly (appendix A); "
                  "multi_dsprites: DeepMind's Multi-dSprites TFRecords (--data_path, "
                  "--variant).")
flags.DEFINE_string("data_path", "", "A Multi-dSprites GZIP TFRecord file "
                    "(--dataset=multi_dsprites).")
flags.DEFINE_enum("variant", None, ["binarized", "colored_on_grayscale", "colored_on_colored"],
                  "The Multi-dSprites variant of --data_path.")
flags.DEFINE_integer("num_objects", None,
                     "N, objects kept by KL. Default: num_sprites + 2 for the MVAE (surplus "
                     "slots learn the Null object, paper 4.1); 1 for the VAE.")
flags.DEFINE_integer("latent_dim", None, "D, latent size per object. Default: 12 for the "
                     "MVAE, 60 for the VAE (appendix A).")
flags.DEFINE_enum("aggregation", _MODEL_DEFAULTS.aggregation, config_lib.AGGREGATIONS,
                  "Symmetric pooling over objects: softmax (study round 3b, "
                  "docs/counting_study.md), max "
                  "(the paper's), sum, or gated_sum (each object's features times its own gate; "
                  "study round 16). MVAE only.")
flags.DEFINE_enum("model", _MODEL_DEFAULTS.model, config_lib.MODELS,
                  "mvae, or vae for the standard VAE baseline.")
flags.DEFINE_integer("num_pooling", None,
                     "Max-pooling layers in the encoder: the candidate grid is "
                     "64 / 2**num_pooling cells a side. Default: "
                     f"{config_lib.MVAE_NUM_POOLING} (16x16) for the MVAE, which won the "
                     f"study in docs/counting_study.md; {config_lib.VAE_NUM_POOLING} (4x4) "
                     "for the VAE.")
flags.DEFINE_integer("suppression_radius", None,
                     "0: keep the top-N cells by KL (the paper). r >= 1: after selecting a "
                     "cell, skip the cells within r of it (non-maximum suppression). "
                     f"Default: {config_lib.MVAE_SUPPRESSION_RADIUS}, which won the study "
                     "in docs/counting_study.md. MVAE only.")
flags.DEFINE_float("suppression_kl_ratio", _MODEL_DEFAULTS.suppression_kl_ratio,
                   "With suppression, skip only the neighbours of a selected cell whose KL is "
                   "at most this fraction of its KL, so that a second sprite beside it can "
                   "still be selected; 1 skips them all. In (0, 1]. MVAE only; not in the "
                   "paper.")
flags.DEFINE_integer("head_kernel", _MODEL_DEFAULTS.head_kernel,
                     "Kernel size of the encoder's head convolution on the grid (odd): 3 "
                     "lets each cell see 78 pixels, 1 limits it to 46.")
flags.DEFINE_integer("decoder_width", _MODEL_DEFAULTS.decoder_width,
                     "Multiplies the channels of g's and h's convolutions (1: 16; 32, 16).")
flags.DEFINE_boolean("learned_background", _MODEL_DEFAULTS.learned_background,
                     "Pool a trained feature map with the objects, so that an object matters "
                     "only where it rises above it (MVAE only; the paper has none).")
flags.DEFINE_boolean("position_in_cell", _MODEL_DEFAULTS.position_in_cell,
                     "Make each object's first two latent dimensions its position, predicted "
                     "from its cell's centre and applied by the decoder as a translation "
                     "(MVAE only; not in the paper).")
flags.DEFINE_integer("kl_warmup_steps", _TRAIN_DEFAULTS.kl_warmup_steps,
                     "W: the KL term's weight in the objective rises linearly from 1/W to "
                     "1 over the first W steps (won the study in docs/counting_study.md); "
                     "0: the paper's "
                     "objective.")
flags.DEFINE_float("kl_weight", _TRAIN_DEFAULTS.kl_weight,
                   "beta: the KL term's weight in the training objective after warm-up; 1 "
                   "is the ELBO (the paper), beta > 1 makes every object's KL cost more "
                   "(beta-VAE). The reported loss stays the negative ELBO.")
flags.DEFINE_float("unselected_kl_weight", None,
                   "0 (the paper), or beta: add beta times the KL of the candidate cells "
                   "that were not selected to the training objective (MVAE only). Default: "
                   f"{config_lib.MVAE_UNSELECTED_KL_WEIGHT:g}, which won the study in "
                   "docs/counting_study.md.")
flags.DEFINE_integer("unselected_kl_steps", _TRAIN_DEFAULTS.unselected_kl_steps,
                     "0: --unselected_kl_final_steps ends the unselected cells' KL "
                     "(--unselected_kl_weight). S: it is charged at steps 1..S only, then "
                     "the paper's objective, whatever --train_steps is. May change when a "
                     "run resumes.")
flags.DEFINE_integer("unselected_kl_final_steps", None,
                     "K: the last K steps of --train_steps take the paper's objective, "
                     "without the unselected cells' KL (study round 19 in "
                     "docs/counting_study.md: about "
                     "2 nats of ELBO for about 2 points of counting by the paper's KL "
                     "threshold at 3 sprites, 11 nats for 6-7 points at 8); 0 charges it "
                     "to the end. Default: "
                     f"{config_lib.MVAE_UNSELECTED_KL_FINAL_STEPS} for MVAE runs of at least "
                     f"{config_lib.MVAE_END_PHASE_MIN_TRAIN_STEPS} steps, else 0. May change "
                     "when a run resumes.")
flags.DEFINE_float("unselected_kl_free_nats", _TRAIN_DEFAULTS.unselected_kl_free_nats,
                   "tau: charge each unselected cell only for its KL beyond tau nats, "
                   "max(0, KL - tau), so the cost keeps cells under the counting threshold "
                   "without pressing every cell to the prior; 0 charges all of it.")
flags.DEFINE_float("object_sparsity", _TRAIN_DEFAULTS.object_sparsity,
                   "lambda: add lambda * sum_n log(1 + KL_n) over the selected objects to "
                   "the training objective, a cost that makes a sprite's information "
                   "cheaper in one object than spread over two (MVAE only). Default: "
                   f"{config_lib.MVAE_OBJECT_SPARSITY:g}, the paper's objective, which won "
                   "study round 14 in docs/counting_study.md against 5 (the shipped MVAEs' "
                   "lambda).")
flags.DEFINE_integer("batch_size", _TRAIN_DEFAULTS.batch_size,
                     "Global batch size, split evenly across replicas.")
flags.DEFINE_integer("train_steps", _TRAIN_DEFAULTS.train_steps, "Total optimizer steps.")
flags.DEFINE_integer("schedule_steps", _TRAIN_DEFAULTS.schedule_steps,
                     "0: the learning rate anneals over --train_steps. S: it reaches "
                     "--final_learning_rate at step S instead (stop early on a longer "
                     "schedule). May change when a run resumes.")
flags.DEFINE_float("learning_rate", _TRAIN_DEFAULTS.learning_rate, "Initial Adam rate.")
flags.DEFINE_float("final_learning_rate", _TRAIN_DEFAULTS.final_learning_rate,
                   "Rate reached at --train_steps, or --schedule_steps (log-linear "
                   "annealing).")
flags.DEFINE_string("model_dir", "/tmp/mvae", "Checkpoints, config.json and TensorBoard.")
flags.DEFINE_integer("seed", _TRAIN_DEFAULTS.seed, "Seeds data, noise and initial weights.")
flags.DEFINE_enum("precision", _TRAIN_DEFAULTS.precision, config_lib.PRECISIONS,
                  "float32, or mixed_bfloat16 to compute the encoder and decoder in "
                  "bfloat16 (fast only on CPUs with avx512_bf16/amx_bf16, or GPUs). May "
                  "change when a run resumes.")
flags.DEFINE_boolean("native_kernels", True,
                     "Without GPUs: run the bf16 ELU gradient, the bilinear upsampling, "
                     "the softmax pooling and, where oneDNN runs AVX2, the convolutions' "
                     "filter gradients with kernels compiled for this CPU on first use "
                     "(a C++ compiler is needed; cached in ~/.cache/mvae_tf), the same "
                     "functions as TF's ops and faster (README, \"Throughput\"). "
                     "--nonative_kernels uses TF's.")
flags.DEFINE_enum("strategy", "mirrored", ["mirrored", "multi_worker"],
                  "mirrored: MirroredStrategy on this machine's GPUs (or its CPU). "
                  "multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG "
                  "(README, \"Training on several machines\").")
flags.DEFINE_float("collective_timeout_secs", 300.0,
                   "--strategy=multi_worker: a collective (all-reduce) that does not finish "
                   "in this time fails the run instead of waiting for a lost worker.")
flags.DEFINE_integer("num_cpu_devices", 1,
                     "Without GPUs, split the CPU into this many replicas, each op on "
                     "cores/N threads and N ops at once; on 2 cores, 2 replicas train "
                     "3-6% faster than 1 with the compiled kernels, 7-13% without (README, "
                     "\"Throughput\"). Ignored when GPUs are visible.")
flags.DEFINE_string("restore_from", None,
                    "Resume from this checkpoint of --model_dir (e.g. ckpt-1200) instead of "
                    "the latest, when the latest cannot be read.")
flags.DEFINE_string("init_from", None,
                    "Start a new --model_dir from the weights and step of this export's "
                    "version directory (e.g. pretrained/mvae_3sprites/67000), with the flags "
                    "it was trained with; a --model_dir with a checkpoint resumes from that.")
flags.DEFINE_float("checkpoint_every_secs", 300.0, "Seconds between checkpoints.")
flags.DEFINE_integer("checkpoint_every_steps", None,
                     "Steps between checkpoints, instead of --checkpoint_every_secs. "
                     "Default: 1000 with --strategy=multi_worker (whose workers must save at "
                     "the same step), else unused.")
flags.DEFINE_float("log_every_secs", 15.0, "Seconds between progress lines.")
flags.DEFINE_integer("summary_every_steps", 100, "Steps between TensorBoard scalars.")
flags.DEFINE_integer("image_every_steps", 2000, "Steps between TensorBoard images.")

FLAGS = flags.FLAGS


def configs_from_flags():
  """The run's (ModelConfig, TrainConfig); raises ConfigError on a bad flag."""
  is_vae = FLAGS.model == "vae"
  num_sprites = FLAGS.num_sprites
  if FLAGS.dataset == "multi_dsprites":
    # The variant fixes the scenes: its foreground entities are the sprite slots.
    from mvae_tf import multi_dsprites  # pylint: disable=g-import-not-at-top
    multi_dsprites.check_variant(FLAGS.variant)
    entities = multi_dsprites.MAX_ENTITIES[FLAGS.variant] - 1
    if FLAGS["num_sprites"].present and FLAGS.num_sprites != entities:
      raise config_lib.ConfigError(
          f"--num_sprites={FLAGS.num_sprites} does not match --variant={FLAGS.variant}, "
          f"whose scenes have up to {entities} sprites; leave it out")
    num_sprites = entities
  for name in config_lib.MVAE_ONLY_COSTS:
    if is_vae and FLAGS[name].present:
      raise config_lib.ConfigError(f"--{name} does not apply to --model=vae (it selects no "
                                   "cells); leave it out")
  if is_vae and FLAGS["aggregation"].present:
    raise config_lib.ConfigError("--aggregation does not apply to --model=vae (it decodes "
                                 "one latent, with nothing to pool); leave it out")
  if FLAGS.num_objects is not None:
    num_objects = FLAGS.num_objects
  else:
    num_objects = 1 if is_vae else num_sprites + 2
  if FLAGS.latent_dim is not None:
    latent_dim = FLAGS.latent_dim
  else:
    latent_dim = config_lib.VAE_LATENT_DIM if is_vae else _MODEL_DEFAULTS.latent_dim
  train_config = config_lib.TrainConfig(
      num_sprites=num_sprites, presence_prob=FLAGS.presence_prob,
      dataset=FLAGS.dataset, data_path=FLAGS.data_path, variant=FLAGS.variant or "",
      batch_size=FLAGS.batch_size, train_steps=FLAGS.train_steps,
      learning_rate=FLAGS.learning_rate, final_learning_rate=FLAGS.final_learning_rate,
      seed=FLAGS.seed, kl_warmup_steps=FLAGS.kl_warmup_steps, kl_weight=FLAGS.kl_weight,
      precision=FLAGS.precision,
      unselected_kl_weight=FLAGS.unselected_kl_weight,
      unselected_kl_steps=FLAGS.unselected_kl_steps,
      unselected_kl_final_steps=FLAGS.unselected_kl_final_steps,
      unselected_kl_free_nats=FLAGS.unselected_kl_free_nats, schedule_steps=FLAGS.schedule_steps,
      object_sparsity=FLAGS.object_sparsity)
  model_config = config_lib.ModelConfig(
      model=FLAGS.model, num_objects=num_objects, latent_dim=latent_dim,
      aggregation=None if is_vae else FLAGS.aggregation, num_pooling=FLAGS.num_pooling,
      suppression_radius=FLAGS.suppression_radius, decoder_width=FLAGS.decoder_width,
      learned_background=FLAGS.learned_background, position_in_cell=FLAGS.position_in_cell,
      head_kernel=FLAGS.head_kernel, suppression_kl_ratio=FLAGS.suppression_kl_ratio)
  for name in ("checkpoint_every_secs", "log_every_secs"):
    if getattr(FLAGS, name) <= 0:
      raise config_lib.ConfigError(f"--{name} must be > 0; received {getattr(FLAGS, name)}")
  for name in ("summary_every_steps", "image_every_steps", "num_cpu_devices"):
    if getattr(FLAGS, name) < 1:
      raise config_lib.ConfigError(f"--{name} must be >= 1; received {getattr(FLAGS, name)}")
  if FLAGS.checkpoint_every_steps is not None and FLAGS.checkpoint_every_steps < 1:
    raise config_lib.ConfigError(
        f"--checkpoint_every_steps must be >= 1; received {FLAGS.checkpoint_every_steps}")
  if FLAGS.collective_timeout_secs <= 0:
    raise config_lib.ConfigError(
        f"--collective_timeout_secs must be > 0; received {FLAGS.collective_timeout_secs}")
  if FLAGS.strategy == "multi_worker":
    if FLAGS.init_from:
      raise config_lib.ConfigError(config_lib.INIT_FROM_MULTI_WORKER)
    if FLAGS.num_cpu_devices != 1:
      raise config_lib.ConfigError(
          "--num_cpu_devices applies to --strategy=mirrored only; a multi-worker run has "
          "one CPU replica (or its GPUs) per worker")
    from mvae_tf import cluster  # pylint: disable=g-import-not-at-top
    workers = cluster.read_cluster().num_workers  # Checks TF_CONFIG before TF starts.
    if train_config.batch_size % workers:
      raise config_lib.ConfigError(
          f"--batch_size must be divisible by the number of workers in TF_CONFIG "
          f"({workers}); received {train_config.batch_size}")
  return model_config, train_config


def loop_options():
  """The loop's `LoopOptions` from the flags."""
  every_steps = FLAGS.checkpoint_every_steps
  if every_steps is None:
    every_steps = 1000 if FLAGS.strategy == "multi_worker" else 0
  from mvae_tf import training  # pylint: disable=g-import-not-at-top
  return training.LoopOptions(
      checkpoint_every_secs=FLAGS.checkpoint_every_secs,
      checkpoint_every_steps=every_steps,
      log_every_secs=FLAGS.log_every_secs,
      summary_every_steps=FLAGS.summary_every_steps,
      image_every_steps=FLAGS.image_every_steps)


def _fail(error, code):
  print(f"train.py: error: {error}", file=sys.stderr)
  sys.exit(code)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    model_config, train_config = configs_from_flags()
  except config_lib.ConfigError as e:
    _fail(e, 2)
  from mvae_tf import checkpoints, distribution, training  # pylint: disable=g-import-not-at-top
  try:
    if FLAGS.strategy == "multi_worker":
      strategy = distribution.make_multi_worker_strategy(FLAGS.collective_timeout_secs)
    else:
      strategy = distribution.make_strategy(num_cpu_devices=FLAGS.num_cpu_devices)
    distribution.check_replicas(train_config, strategy)
    training.train(model_config, train_config, FLAGS.model_dir, strategy, loop_options(),
                   log=lambda line: print(line, flush=True), restore_from=FLAGS.restore_from,
                   init_from=FLAGS.init_from, native_kernels=FLAGS.native_kernels)
  except config_lib.ConfigError as e:
    _fail(e, 2)
  except (training.TrainingDiverged, checkpoints.CheckpointWriteError,
          training.ClusterError) as e:
    _fail(e, 1)

if __name__ == "__main__":
  app.run(main)
