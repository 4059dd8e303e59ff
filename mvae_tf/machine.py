"""Facts about the machine that decide which kernels and precisions are fast.

Speed figures are only comparable on one machine, so the benchmark records these facts
beside every figure. Imports no TensorFlow until `tensorflow_facts` is called.
"""

import os
import platform

# CPU flags (as Linux's /proc/cpuinfo names them) that matter for this model's kernels:
# oneDNN's fast paths need AVX2 or AVX-512, and bfloat16 arithmetic needs AVX512_BF16 (dot
# products) or AMX (tiles).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo(path="/proc/cpuinfo"):
  """(model name, set of flags) of the first CPU in `path`; ("", set()) when unreadable."""
  model, flags = "", set()
  try:
    with open(path) as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
          model = value.strip()
        elif key == "flags" and not flags:
          flags = set(value.split())
  except OSError:
    pass
  return model, flags


def cpu_facts(path="/proc/cpuinfo"):
  """The CPU's model, logical core count and the `CPU_FLAGS` it has (bools)."""
  model, flags = _cpuinfo(path)
  return {"cpu_model": model or platform.processor() or platform.machine(),
          "logical_cores": os.cpu_count(),
          **{flag: flag in flags for flag in CPU_FLAGS}}


def cpu_has_bfloat16_units(path="/proc/cpuinfo"):
  """Whether the CPU computes in bfloat16 natively (AVX512_BF16 or AMX-BF16)."""
  facts = cpu_facts(path)
  return facts["avx512_bf16"] or facts["amx_bf16"]


def onednn_enabled():
  """Whether TensorFlow runs its oneDNN kernels in this process (imports TensorFlow)."""
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
  return bool(_pywrap_util_port.IsMklEnabled())


def tensorflow_facts():
  """TF's version, whether oneDNN is on, and the GPUs TF sees (imports TensorFlow)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gpus = tf.config.list_physical_devices("GPU")
  names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
           for gpu in gpus]
  return {"tensorflow": tf.__version__, "onednn": onednn_enabled(), "gpus": names}


def bfloat16_warning(precision, num_gpus, path="/proc/cpuinfo"):
  """A one-line warning when `precision` is bfloat16 on hardware that emulates it, or None."""
  if precision != "mixed_bfloat16" or num_gpus or cpu_has_bfloat16_units(path):
    return None
  return ("warning: --precision=mixed_bfloat16 on a CPU without bfloat16 units (no "
          "avx512_bf16 or amx_bf16 flag) and no GPU: it trains correctly but slower than "
          "--precision=float32")
