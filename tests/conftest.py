"""Test setup: split the CPU into two logical devices before TensorFlow initialises.

Multi-replica code is tested on these two devices (there is no GPU in CI); single-replica
code runs on /cpu:0 as usual.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The kernels users get (mvae_tf turns oneDNN on), so numerical tests check those.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import tensorflow as tf  # pylint: disable=g-import-not-at-top

NUM_LOGICAL_CPUS = 2

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)
