r"""Is XLA worth it? The training step with and without `jit_compile` on the CPU, side by side.

  python benchmarks/xla_step.py [--sprites 3] [--precision float32] [--rounds 2]

Times the full training step (forward, backward, Adam) exactly as `benchmark.py` does
(`benchmark.training_rate`: batch 64, N = sprites + 2, one cached batch, median of 7 x 10
steps after 5 warm-up steps), then the same step with each replica's forward and backward
pass compiled by XLA, alternating the two `--rounds` times so that both see the same
machine. A measuring tool only: XLA stays off in `mvae_tf` unless it measures a gain, and
the test suite does not run this.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position  (sets oneDNN on)

if __name__ == "__main__":
  benchmark.compare_steps(__doc__.split("\n\n")[0],
                          {"jit_compile=False": {}, "jit_compile=True": {"jit_compile": True}})
