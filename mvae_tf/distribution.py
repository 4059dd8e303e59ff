"""The replicas a run trains on: `tf.distribute` strategies over GPUs, CPUs and workers.

Every strategy here is data-parallel with mirrored variables; `training` makes the step
the same function on any number of replicas. Without GPUs the CPU can be split into
logical devices, each a replica on its share of the cores.
"""

import os

import tensorflow as tf

from mvae_tf import config as config_lib


def cpu_threads(num_cpu_devices, cores=None):
  """(intra-op, inter-op) thread counts that give each of `num_cpu_devices` replicas its cores.

  One replica uses TF's defaults (0, 0: every core for each op). Split into N replicas, the
  CPU runs best with each op on cores // N threads and N ops at once, so that every replica
  computes its share of the batch on its own cores instead of all replicas' ops taking turns
  on all cores (small convolutions gain little from a second thread). `cores` defaults to
  the cores this process may run on (`taskset` limits them).
  """
  if num_cpu_devices < 1:
    raise ValueError(f"num_cpu_devices must be >= 1; received {num_cpu_devices}")
  if num_cpu_devices == 1:
    return 0, 0
  if cores is None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return max(1, cores // num_cpu_devices), num_cpu_devices


def make_strategy(devices=None, num_cpu_devices=1):
  """MirroredStrategy over `devices`, else all GPUs, else the CPU.

  Without GPUs the CPU is one replica, or `num_cpu_devices` logical devices, each with its
  share of the cores (`cpu_threads`): on 2 cores, 2 replicas train 7-13% faster than one
  (README, "Throughput"). Splitting the CPU must happen before TF initialises; thread counts
  the program has already set are kept.
  """
  if devices is None:
    if tf.config.list_physical_devices("GPU"):
      devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    else:
      if num_cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)
        intra, inter = cpu_threads(num_cpu_devices)
        if not tf.config.threading.get_intra_op_parallelism_threads():
          tf.config.threading.set_intra_op_parallelism_threads(intra)
        if not tf.config.threading.get_inter_op_parallelism_threads():
          tf.config.threading.set_inter_op_parallelism_threads(inter)
      devices = [f"/cpu:{i}" for i in range(num_cpu_devices)]
  return tf.distribute.MirroredStrategy(devices)


def cpu_threads_note(strategy):
  """The training log's note on a CPU whose threads `make_strategy` split, else ''."""
  intra = tf.config.threading.get_intra_op_parallelism_threads()
  inter = tf.config.threading.get_inter_op_parallelism_threads()
  devices = strategy.extended.worker_devices
  if not (intra or inter) or any("GPU" in device.upper() for device in devices):
    return ""
  return f" (CPU split: {intra or 'all'} thread(s) per op, {inter or 'all'} ops at once)"


def make_multi_worker_strategy(collective_timeout_secs):
  """MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (`cluster.read_cluster`).

  Every worker's GPUs (or its CPU) are replicas. Each collective (the gradient all-reduce)
  fails after `collective_timeout_secs` instead of waiting for ever, and TF's coordination
  service notices a worker that stops sending heartbeats, so the others end with an error
  when a worker dies. It must be made before TensorFlow runs any op, on every worker.
  """
  options = tf.distribute.experimental.CommunicationOptions(
      timeout_seconds=collective_timeout_secs)
  return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def is_multi_worker(strategy):
  return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def check_replicas(train_config, strategy):
  replicas = strategy.num_replicas_in_sync
  if train_config.batch_size % replicas:
    raise config_lib.ConfigError(
        f"--batch_size must be divisible by the number of replicas ({replicas}); "
        f"received {train_config.batch_size}")
