r"""What a candidate grid costs: the training step on two grids, side by side.

  python benchmarks/grid_step.py [--sprites 3] [--precision float32] [--rounds 2]

Times the full training step (forward, backward, Adam) exactly as `benchmark.py` does
(`benchmark.training_rate`: batch 64, N = sprites + 2, one cached batch, median of 7 x 10
steps after 5 warm-up steps) for today's default grid, 16x16 with suppression radius 2
(study round 17), and for the 8x8 grid with radius 1 (the default of rounds 10 to 16),
alternating the two `--rounds` times so that both see the same machine. A measuring tool
only; the test suite does not run this.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position  (sets oneDNN on)

GRIDS = {"16x16, radius 2": dict(num_pooling=2, suppression_radius=2),
         "8x8, radius 1": dict(num_pooling=3, suppression_radius=1)}

if __name__ == "__main__":
  benchmark.compare_steps(__doc__.split("\n\n")[0], GRIDS)
