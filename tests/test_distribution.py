"""distribution.py: how a split CPU shares its cores between replicas."""

import os

import pytest

from mvae_tf import distribution


@pytest.mark.parametrize("replicas, cores, threads", [
    (1, 2, (0, 0)),  # One replica: TF's defaults, every core for each op.
    (2, 2, (1, 2)),  # One core each, both replicas' ops at once.
    (2, 8, (4, 2)),
    (3, 8, (2, 3)),  # The odd core left to TF's other work.
    (4, 2, (1, 4)),  # More replicas than cores: one thread each still.
])
def test_cpu_replicas_share_the_cores(replicas, cores, threads):
  assert distribution.cpu_threads(replicas, cores) == threads


def test_cpu_threads_default_to_the_cores_this_process_may_use():
  cores = len(os.sched_getaffinity(0))
  assert distribution.cpu_threads(2) == (max(1, cores // 2), 2)
  with pytest.raises(ValueError, match=r"num_cpu_devices must be >= 1; received 0"):
    distribution.cpu_threads(0)
