r"""Throughput of the input pipeline against training, on this machine.

  python benchmark.py [--num_sprites=8] [--batch_size=64] [--steps=30]

Prints images/s for: the tf.data pipeline alone, a training step (MirroredStrategy on the
CPU or all GPUs; data included), and `encode` (inference). The pipeline must outpace
training by 10x or more so that it never holds training back.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

flags.DEFINE_integer("num_sprites", 8, "Sprite slots per scene.")
flags.DEFINE_integer("batch_size", 64, "Global batch.")
flags.DEFINE_integer("steps", 30, "Timed steps (after warm-up).")
flags.DEFINE_integer("num_pooling", 4, "Encoder pooling layers.")
FLAGS = flags.FLAGS


def _rate(fn, steps, batch_size, warmup=3):
  for _ in range(warmup):
    fn()
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return steps * batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mvae_tf import config, data, training  # pylint: disable=g-import-not-at-top
  model_config = config.ModelConfig(num_objects=FLAGS.num_sprites + 2,
                                    num_pooling=FLAGS.num_pooling)
  train_config = config.TrainConfig(num_sprites=FLAGS.num_sprites,
                                    batch_size=FLAGS.batch_size)
  pipeline = iter(data.make_dataset(FLAGS.num_sprites, FLAGS.batch_size, seed=0))
  data_rate = _rate(lambda: next(pipeline)["image"].numpy(), 10 * FLAGS.steps,
                    FLAGS.batch_size)
  trainer = training.Trainer(model_config, train_config, training.make_strategy())
  batches = iter(trainer.distribute(training.training_dataset(model_config, train_config)))
  train_rate = _rate(lambda: float(trainer.train_step(next(batches))["loss"]), FLAGS.steps,
                     FLAGS.batch_size)
  encode = tf.function(trainer.model.encode)
  images = next(pipeline)["image"]
  encode_rate = _rate(lambda: encode(images)["kl_map"].numpy(), FLAGS.steps,
                      FLAGS.batch_size)
  print(f"num_sprites={FLAGS.num_sprites} batch={FLAGS.batch_size} "
        f"replicas={trainer.strategy.num_replicas_in_sync} "
        f"grid={model_config.grid_size}x{model_config.grid_size} N={model_config.num_objects}")
  print(f"data pipeline: {data_rate:9.1f} images/s")
  print(f"training step: {train_rate:9.1f} images/s")
  print(f"encode:        {encode_rate:9.1f} images/s")
  print(f"pipeline / training: {data_rate / train_rate:.1f}x")


if __name__ == "__main__":
  app.run(main)
