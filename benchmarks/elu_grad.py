r"""The ELU's gradient in bf16: TF's `EluGrad` against other ways to write it, op alone.

  python benchmarks/elu_grad.py [--repeats 5] [--iterations 20]

In mixed precision `EluGrad` is the largest cost that bf16 makes slower than fp32 (TF runs
it in Eigen, which converts bf16 element by element; README, "Throughput"). For each of
three tensors of the step's sizes (the encoder's first conv, h's 64x64 conv, g's last conv
over B*N objects), this times TF's op, the kernel `mvae_tf.native_ops` compiles for this CPU
(which the training step uses) and five equal forms of dL/dx = g where y > 0 and
g * (y + 1) elsewhere (y = elu(x)), alternated `--repeats` times, each the median ms of
`--iterations` calls; a form that differs from `EluGrad` by more than bf16's rounding is
reported. A measuring tool only; the test suite does not run it.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mvae_tf import native_ops  # pylint: disable=g-import-not-at-top,wrong-import-position

SHAPES = {"encoder conv1 [64, 64, 64, 32]": [64, 64, 64, 32],
          "h conv2 [64, 64, 64, 16]": [64, 64, 64, 16],
          "g conv2 [320, 32, 32, 16]": [320, 32, 32, 16]}


def forms():
  """{name: f(g, y)}, each the ELU's gradient given upstream g and output y."""
  return {
      "EluGrad": lambda g, y: tf.raw_ops.EluGrad(gradients=g, outputs=y),
      "float32 round trip": lambda g, y: tf.cast(tf.raw_ops.EluGrad(
          gradients=tf.cast(g, tf.float32), outputs=tf.cast(y, tf.float32)), g.dtype),
      "g*(min(y,0)+1)": lambda g, y: g * (tf.minimum(y, 0) + 1),
      "where": lambda g, y: tf.where(y > 0, g, g * (y + 1)),
      "g+g*min(y,0)": lambda g, y: g + g * tf.minimum(y, 0),
      "g-g*relu(-y)": lambda g, y: g - g * tf.nn.relu(-y),
      "compiled kernel": native_ops.load().elu_grad,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--iterations", type=int, default=20)
  args = parser.parse_args()
  if args.repeats < 1 or args.iterations < 1:
    parser.error("--repeats and --iterations must be >= 1")
  for label, shape in SHAPES.items():
    g = tf.cast(tf.random.stateless_normal(shape, seed=[1, 2]), tf.bfloat16)
    y = tf.cast(tf.nn.elu(tf.random.stateless_normal(shape, seed=[3, 4])), tf.bfloat16)
    functions = {name: tf.function(form) for name, form in forms().items()}
    reference = tf.cast(functions["EluGrad"](g, y), tf.float32)
    for name, function in functions.items():
      error = float(tf.reduce_max(tf.abs(tf.cast(function(g, y), tf.float32) - reference)))
      if error > 0.05:  # bf16 keeps 8 bits: |g| < 5 rounds by up to 2^-5.
        print(f"{name} differs from EluGrad by {error}")
    times = {name: [] for name in functions}
    for _ in range(args.repeats):
      for name, function in functions.items():
        start = time.perf_counter()
        for _ in range(args.iterations):
          result = function(g, y)
        result.numpy()
        times[name].append((time.perf_counter() - start) / args.iterations * 1e3)
    print(f"{label}, bf16, ms: " + ", ".join(
        f"{name} {np.median(values):.2f}" for name, values in times.items()), flush=True)


if __name__ == "__main__":
  main()
