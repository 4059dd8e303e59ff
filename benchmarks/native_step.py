r"""The training step with TF's ops and with the compiled kernels, in alternation.

  python benchmarks/native_step.py [--sprites 3] [--precision float32] [--rounds 12]
                                   [--kernel_march native] [--baseline tf_ops]

Builds the full training step (forward, backward, Adam) twice, exactly as `benchmark.py`
times it (`benchmark.training_steps`: the default model, batch 64, N = sprites + 2, one
cached batch): with TF's ops only (`train.py --nonative_kernels`), and with the kernels
`mvae_tf.native_ops` compiles for this CPU (the default: the bf16 ELU gradient, and the
bilinear upsampling and the softmax pooling both ways). After warm-up it times 10 steps of each in turn,
`--rounds` times, so that both see the same machine (this project's VM drifts by 10-20%
within minutes), and prints each round, the medians, their ratio and the rounds the
kernels won. `--baseline=onednn_filter_grads` compares the compiled kernels with and
without the convolutions' filter gradients (`conv.Conv2D`; taken only where oneDNN runs
AVX2), instead of against TF's ops. `--kernel_march` builds the kernels for another instruction set (as
`benchmark.py`'s flag). Each kernel is tested to be the same function as TF's ops
(tests/test_native_ops.py). A measuring tool only; the test suite does not run it.
"""

import argparse
import dataclasses
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position  (sets oneDNN on)
from mvae_tf import native_ops  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sprites", type=int, default=3)
  parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
  parser.add_argument("--rounds", type=int, default=12)
  parser.add_argument("--kernel_march", default=native_ops.NATIVE,
                      help="the compiled kernels' instruction set (benchmark.py's flag)")
  parser.add_argument("--baseline", default="tf_ops", choices=["tf_ops", "onednn_filter_grads"],
                      help="what the compiled kernels are timed against: TF's ops, or the "
                      "compiled kernels with oneDNN's filter gradients")
  args = parser.parse_args()
  if args.sprites < 1 or args.rounds < 1:
    parser.error("--sprites and --rounds must be >= 1")
  error = benchmark.print_machine_and_kernels(args.kernel_march)
  if error:
    parser.error(error)
  sizes = benchmark.Sizes(quick=False)
  if args.baseline == "tf_ops":
    baseline, settings = "TF's ops", dict(native_kernels=False)
  else:
    kernels = native_ops.load()
    if not kernels.use_conv3x3_filter_grad:
      parser.error("--baseline=onednn_filter_grads: the compiled kernels take no filter "
                   "gradients here (oneDNN does not run AVX2: machine.onednn_runs_avx2)")
    baseline = "oneDNN's filter gradients"
    settings = dict(kernels=dataclasses.replace(kernels, use_conv3x3_filter_grad=False))
  variants = {baseline: settings, "compiled kernels": {}}
  steps = {name: benchmark.training_steps(args.sprites, args.precision, sizes, **variant)
           for name, variant in variants.items()}
  rates = {name: [] for name in variants}
  for _ in range(sizes.warmup):
    for step in steps.values():
      step()
  for round_index in range(args.rounds):
    for name, step in steps.items():
      rates[name].append(benchmark.throughput(step, sizes.steps * sizes.batch))
    print(f"round {round_index + 1}: " + ", ".join(
        f"{name} {rates[name][-1]:.1f}" for name in variants) + " img/s", flush=True)
  base_rate, ours = (statistics.median(rates[name]) for name in variants)
  won = sum(a < b for a, b in zip(*rates.values()))
  print(f"{args.sprites} sprites, {args.precision}: {baseline} {base_rate:.1f} img/s, compiled "
        f"kernels {ours:.1f} img/s ({ours / base_rate:.3f}x; won {won} of {args.rounds} rounds)")


if __name__ == "__main__":
  main()
