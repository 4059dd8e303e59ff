r"""Is XLA worth it? The training step with and without `jit_compile` on the CPU, side by side.

  python benchmarks/xla_step.py [--sprites 3] [--precision float32] [--rounds 2]

Builds the default model and the full training step (forward, backward, Adam) as
`benchmark.py` times it (batch 64, N = sprites + 2, one cached batch), then the same step
with the forward and backward pass (`Trainer._replica_gradients`, everything but the
optimizer's update) compiled by XLA, and prints the median images/s of each, alternating
the two `--rounds` times so that both see the same machine. A measuring tool only: XLA
stays off in `mvae_tf` unless it measures a gain, and the test suite does not run this.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def images_per_sec(sprites, precision, jit_compile, batch=64, repeats=5, steps=20):
  """Median images/s over `repeats` runs of `steps` steps, after 5 warm-up steps."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mvae_tf import config, training  # pylint: disable=g-import-not-at-top
  model_config = config.ModelConfig(num_objects=sprites + 2)
  train_config = config.TrainConfig(num_sprites=sprites, batch_size=batch, precision=precision)
  trainer = training.Trainer(model_config, train_config, training.make_strategy())
  if jit_compile:
    # The replica's forward and backward pass as one XLA cluster; Adam's update and the
    # all-reduce stay outside it, as MirroredStrategy needs.
    trainer._replica_gradients = tf.function(  # pylint: disable=protected-access
        trainer._replica_gradients, jit_compile=True)  # pylint: disable=protected-access
  dataset = training.training_dataset(model_config, train_config).take(1).cache().repeat()
  batch_data = next(iter(trainer.distribute(dataset)))
  for _ in range(5):  # Warm-up: tracing, XLA compilation, oneDNN's primitive caches.
    float(trainer.train_step(batch_data)["loss"])
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      metrics = trainer.train_step(batch_data)
    float(metrics["loss"])
    rates.append(steps * batch / (time.perf_counter() - start))
  return statistics.median(rates)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sprites", type=int, default=3)
  parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  if args.sprites < 1 or args.rounds < 1:
    parser.error("--sprites and --rounds must be >= 1")
  from mvae_tf import machine  # pylint: disable=g-import-not-at-top
  print({**machine.cpu_facts(), **machine.tensorflow_facts()}, flush=True)
  for _ in range(args.rounds):
    for jit_compile in (False, True):
      rate = images_per_sec(args.sprites, args.precision, jit_compile)
      print(f"{args.sprites} sprites, {args.precision}, jit_compile={jit_compile}: "
            f"{rate:.1f} img/s", flush=True)


if __name__ == "__main__":
  main()
