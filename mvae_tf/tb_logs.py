"""Reading scalar series back from a run's TensorBoard event files."""

import glob
import os

import numpy as np
import tensorflow as tf


def read_scalars(log_dir, tag):
  """All values of scalar `tag` in `log_dir`'s event files, as (steps, values) by step.

  A step written twice (a resumed run repeats no step, but a restarted one may) keeps its
  last value.
  """
  points = {}
  for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          scalar = (tf.make_ndarray(value.tensor) if value.HasField("tensor")
                    else value.simple_value)
          points[event.step] = float(scalar)
  steps = np.array(sorted(points), np.int64)
  return steps, np.array([points[s] for s in steps], np.float64)
