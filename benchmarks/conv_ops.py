r"""Each of the model's convolutions alone: TF's three ops, and their GFLOP/s.

  python benchmarks/conv_ops.py [--sprites 3] [--precision float32] [--repeats 7]
                                [--iterations 20] [--nocompiled]

The convolutions are most of the training step (README, "Throughput"). This traces the
default model's forward pass at batch 64 (N = sprites + 2) and, for every 2-D convolution
in it, times TF's three ops on random tensors of its shapes in `--precision`'s compute
dtype: the forward convolution with its bias and, where the layer has one, its ELU (as
oneDNN fuses them in the step), the filter gradient and the input gradient. Each is the
median over `--repeats` of `--iterations` calls run in one graph loop, every call
returning a single element, so that neither Python's cost per call nor the allocation of
a large result is timed. It prints each op's ms and GFLOP/s (`flops.conv2d_flops`), their
sums, and the same process's 2048^2 matmul rate in that dtype for scale. The training step
never computes the first convolution's input gradient (the images take none); it is
printed, and left out of the sums. Where the training step takes the compiled filter
gradient instead of TF's (`conv.Conv2D`: oneDNN running AVX2, float32, 8k channels one
way), that kernel is timed too, the same way right after TF's three ops (its time includes
the bias gradient, which it returns from the same call), and summed apart; `--nocompiled`
leaves it out. A measuring tool only; the test suite does not run it.
"""

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position  (sets oneDNN on)

BATCH = 64


def model_convolutions(sprites):
  """[(layer name, input shape, filter shape, has ELU)] of the default model's Conv2D ops."""
  from mvae_tf import config, flops  # pylint: disable=g-import-not-at-top
  graph = flops.forward_graph(config.ModelConfig(num_objects=sprites + 2), BATCH)
  convolutions = []
  for op in graph.get_operations():
    if op.type != "Conv2D":
      continue
    # Conv2D -> BiasAdd -> Elu where the layer has an activation.
    after_bias = [consumer for bias in op.outputs[0].consumers() if bias.type == "BiasAdd"
                  for consumer in bias.outputs[0].consumers()]
    # e.g. "mvae_1/decoder_1/h_1/conv3_1/convolution" -> "decoder/h/conv3".
    name = "/".join(re.sub(r"_\d+$", "", part) for part in op.name.split("/")[1:-1])
    convolutions.append((name, op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list(),
                         any(consumer.type == "Elu" for consumer in after_bias)))
  return convolutions


def loop_timer(op, iterations):
  """A function running `op` (returning a tensor) `iterations` times in one graph loop."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function
  def run():
    total = tf.zeros([], tf.float32)
    for _ in tf.range(iterations):
      total += tf.cast(tf.reshape(op(), [-1])[0], tf.float32)
    return total

  return run


def median_ms(function, iterations, repeats):
  function().numpy()  # Tracing and oneDNN's primitive caches.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function().numpy()
    times.append((time.perf_counter() - start) / iterations * 1e3)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sprites", type=int, default=3)
  parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--iterations", type=int, default=20)
  parser.add_argument("--nocompiled", dest="compiled", action="store_false",
                      help="leave out the compiled filter gradient")
  args = parser.parse_args()
  if min(args.sprites, args.repeats, args.iterations) < 1:
    parser.error("--sprites, --repeats and --iterations must be >= 1")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mvae_tf import conv, flops, machine  # pylint: disable=g-import-not-at-top
  print(machine.describe({**machine.cpu_facts(), **machine.tensorflow_facts()}), flush=True)
  dtype = tf.bfloat16 if args.precision == "mixed_bfloat16" else tf.float32
  filter_grad = compiled_filter_grad(dtype) if args.compiled else None
  matmul = benchmark.matmul_gflops(dtype, 2048, args.repeats)
  print(f"matmul 2048^2, {dtype.name}: {matmul:.1f} GFLOP/s", flush=True)
  print(f"{args.sprites} sprites, batch {BATCH}, {dtype.name}: ms and GFLOP/s of each op")
  totals = {"forward": 0.0, "filter gradient": 0.0, "input gradient": 0.0}
  compiled_total = 0.0
  seeds = iter(range(1000))
  for index, (name, x_shape, w_shape, elu) in enumerate(model_convolutions(args.sprites)):
    random = lambda shape: tf.cast(tf.random.stateless_normal(shape, [next(seeds), 0]), dtype)
    x, w, bias = random(x_shape), random(w_shape), random(w_shape[-1:])
    dy = random(x_shape[:3] + w_shape[-1:])
    strides = [1, 1, 1, 1]

    def forward(x=x, w=w, bias=bias, elu=elu):
      y = tf.nn.bias_add(tf.nn.conv2d(x, w, 1, "SAME"), bias)
      return tf.nn.elu(y) if elu else y

    ops = {
        "forward": forward,
        "filter gradient": lambda x=x, dy=dy, w_shape=w_shape: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=w_shape, out_backprop=dy, strides=strides, padding="SAME"),
        "input gradient": lambda x_shape=x_shape, w=w, dy=dy: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=x_shape, filter=w, out_backprop=dy, strides=strides, padding="SAME"),
    }
    # The model's convolutions are all stride 1, "same"; conv.Conv2D's other conditions.
    if (filter_grad is not None and w_shape[:2] == [3, 3]
        and conv.kernel_takes_channels(w_shape[2], w_shape[3])):
      ops["compiled filter gradient"] = lambda x=x, dy=dy: filter_grad(x, dy)[0]
    # x_shape[0] is g's B * N objects, where the others have the batch.
    work = x_shape[0] * flops.conv2d_flops(x_shape[1], x_shape[2], w_shape[0], w_shape[1],
                                           w_shape[2], w_shape[3])
    cells = []
    for label, op in ops.items():
      ms = median_ms(loop_timer(op, args.iterations), args.iterations, args.repeats)
      if label == "compiled filter gradient":
        compiled_total += ms
      elif not (index == 0 and label == "input gradient"):
        totals[label] += ms
      cells.append(f"{label} {ms:6.2f} ms {work / ms / 1e6:6.1f}")
    print(f"  {name:<16} {str(x_shape):<18} {str(w_shape):<16}{' +ELU' if elu else '     '} "
          f"{work / 1e9:.3f} GFLOP | " + " | ".join(cells), flush=True)
  print("sums (ms; the first input gradient left out): " + ", ".join(
      f"{label} {ms:.1f}" for label, ms in totals.items()) + f"; all {sum(totals.values()):.1f}")
  if filter_grad is not None:
    print(f"the compiled filter gradients, where the step takes them: {compiled_total:.1f} ms")


def compiled_filter_grad(dtype):
  """The compiled filter gradient where the training step takes it instead of TF's
  (`conv.Conv2D`), else None (saying why)."""
  from mvae_tf import native_ops  # pylint: disable=g-import-not-at-top
  try:
    kernels = native_ops.load()
  except native_ops.BuildError as e:
    print(f"no compiled filter gradient: {e}")
    return None
  if not kernels.use_conv3x3_filter_grad or dtype.name != "float32":
    print("no compiled filter gradient: the training step takes TF's here (it takes the "
          "kernel in float32 where oneDNN runs AVX2: machine.onednn_runs_avx2)")
    return None
  return kernels.conv3x3_filter_grad


if __name__ == "__main__":
  main()
