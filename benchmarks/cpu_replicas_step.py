r"""One CPU replica or several: the training step timed in alternation, on the same machine.

  python benchmarks/cpu_replicas_step.py [--sprites 3] [--precision float32]
                                         [--replicas 1,2] [--rounds 12]
                                         [--layers default|pytorch_reference]
                                         [--kernel_march native]

`train.py --num_cpu_devices=N` splits the CPU into N replicas, each op on cores // N
threads and N ops at once (`distribution.make_strategy`). Thread counts are fixed when
TensorFlow starts, so each replica count needs its own process: this tool starts one
`benchmark.ReplicaWorker` per entry of `--replicas`, each of which builds the full training
step exactly as `benchmark.py` times it (`benchmark.training_steps`: the default model,
batch 64, N = sprites + 2, one cached batch) and warms it up. Then it asks the workers in
turn to time 10 steps, `--rounds` times, one worker running at a time, so that every
replica count sees the same machine; a VM whose speed drifts by 10-20% within minutes (this
project's) would otherwise decide the comparison. It prints each round, then the median
images/s of each count and its ratio to the first. `--layers=pytorch_reference` times the
model that `benchmarks/pytorch_reference.py` writes in PyTorch (the 4x4 grid with top-N
selection and max pooling, the defaults when issue 8 was filed) instead of today's
defaults. `--kernel_march` builds the kernels compiled for the CPU for another instruction
set in every worker (as `benchmark.py`'s flag). A measuring tool only; the test suite does
not run this.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position  (sets oneDNN on)
from mvae_tf import native_ops  # pylint: disable=g-import-not-at-top,wrong-import-position

# The model settings (`config.ModelConfig` fields) of each --layers.
LAYERS = {"default": {},
          "pytorch_reference": dict(num_pooling=4, suppression_radius=0, aggregation="max")}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sprites", type=int, default=3)
  parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
  parser.add_argument("--replicas", default="1,2",
                      help="comma-separated replica counts; the first is the reference")
  parser.add_argument("--rounds", type=int, default=12)
  parser.add_argument("--kernel_march", default=native_ops.NATIVE,
                      help="the compiled kernels' instruction set (benchmark.py's flag)")
  parser.add_argument("--layers", default="default", choices=sorted(LAYERS))
  args = parser.parse_args()
  try:
    counts = [int(count) for count in args.replicas.split(",")]
  except ValueError:
    parser.error(f"--replicas must be comma-separated integers; received {args.replicas!r}")
  if min(counts) < 1 or len(set(counts)) != len(counts):
    parser.error(f"--replicas must be distinct counts >= 1; received {args.replicas!r}")
  if args.sprites < 1 or args.rounds < 1:
    parser.error("--sprites and --rounds must be >= 1")
  error = benchmark.print_machine_and_kernels(args.kernel_march)
  if error:
    parser.error(error)
  workers = [benchmark.ReplicaWorker(count, quick=False, kernel_march=args.kernel_march)
             for count in counts]
  for worker in workers:  # One at a time: each warm-up on a quiet machine.
    worker.build(args.sprites, args.precision, **LAYERS[args.layers])
  rates = {count: [] for count in counts}
  for round_index in range(args.rounds):
    for worker in workers:
      rates[worker.replicas].append(worker.rate())
    print(f"round {round_index + 1}: " + ", ".join(
        f"{count} replica(s) {rates[count][-1]:.1f}" for count in counts) + " img/s", flush=True)
  for worker in workers:
    worker.close()
  reference = statistics.median(rates[counts[0]])
  for count in counts:
    median = statistics.median(rates[count])
    print(f"{args.sprites} sprites, {args.precision}, {args.layers} layers, {count} CPU "
          f"replica(s): median {median:.1f} img/s, {median / reference:.2f}x {counts[0]} "
          "replica(s)")


if __name__ == "__main__":
  main()
