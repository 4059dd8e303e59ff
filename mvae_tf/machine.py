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
  """The first CPU's fields of `path` (str values; "flags" a set); {} when unreadable."""
  fields = {}
  try:
    with open(path) as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if not key:
          if fields:
            break  # The blank line after the first CPU.
          continue
        fields.setdefault(key, value.strip())
  except OSError:
    return {}
  fields["flags"] = set(fields.get("flags", "").split())
  return fields


def cpu_facts(path="/proc/cpuinfo"):
  """The CPU's model, logical core count and the `CPU_FLAGS` it has (bools).

  `cpu_family_model` is "family/model" as the kernel numbers them (e.g. "6/207"), or "" where
  not given: a VM often names every Xeon "Intel(R) Xeon(R) Processor", while the number
  tells two CPU generations of different speed apart.
  """
  fields = _cpuinfo(path)
  family, model = fields.get("cpu family", ""), fields.get("model", "")
  return {"cpu_model": fields.get("model name") or platform.processor() or platform.machine(),
          "cpu_family_model": f"{family}/{model}" if family and model else "",
          "logical_cores": os.cpu_count(),
          **{flag: flag in fields.get("flags", set()) for flag in CPU_FLAGS}}


def cpu_identity(path="/proc/cpuinfo"):
  """One string that differs between CPUs that may not run each other's -march=native code:
  the model's name and numbers and every flag the kernel lists."""
  fields = _cpuinfo(path)
  numbers = [fields.get(key, "") for key in ("vendor_id", "cpu family", "model", "stepping")]
  return "|".join([fields.get("model name") or platform.processor() or platform.machine(),
                   *numbers, " ".join(sorted(fields.get("flags", set())))])


def cpu_has_bfloat16_units(path="/proc/cpuinfo"):
  """Whether the CPU computes in bfloat16 natively (AVX512_BF16 or AMX-BF16)."""
  facts = cpu_facts(path)
  return facts["avx512_bf16"] or facts["amx_bf16"]


# oneDNN's names (`ONEDNN_MAX_CPU_ISA`) of the instruction sets below AVX-512.
_ONEDNN_ISAS_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def onednn_runs_avx2(path="/proc/cpuinfo", environ=None):
  """Whether oneDNN runs its AVX2 kernels here, with FMA: an x86 CPU with AVX2 and FMA and
  either no AVX-512 or `ONEDNN_MAX_CPU_ISA` in `environ` (default `os.environ`) naming an
  instruction set below it (the AVX2 emulation of docs/throughput.md). There its
  convolutions' filter gradients ran at 0.14-0.82 of the matmul's rate
  (`native_ops`, `conv`)."""
  environ = os.environ if environ is None else environ
  flags = _cpuinfo(path).get("flags", set())
  if not {"avx2", "fma"} <= flags:
    return False
  limit = environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
  return "avx512f" not in flags or limit in _ONEDNN_ISAS_BELOW_AVX512


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


def describe(facts):
  """One line naming the machine, from `cpu_facts()` merged with `tensorflow_facts()`."""
  flags_on = [flag for flag in CPU_FLAGS if facts[flag]]
  number = f" (family/model {facts['cpu_family_model']})" if facts["cpu_family_model"] else ""
  return (f"machine: {facts['cpu_model']}{number}, {facts['logical_cores']} logical cores, "
          f"flags {' '.join(flags_on) or 'none'}; TF {facts['tensorflow']}, oneDNN "
          f"{'on' if facts['onednn'] else 'off'}, GPUs: {', '.join(facts['gpus']) or 'none'}")


# NVIDIA GPUs compute bfloat16 in their tensor cores from compute capability 8.0 (Ampere).
GPU_BFLOAT16_CAPABILITY = (8, 0)


def gpu_compute_capabilities():
  """The (major, minor) compute capability of each GPU TF sees, None where TF does not say
  (imports TensorFlow)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [tf.config.experimental.get_device_details(gpu).get("compute_capability")
          for gpu in tf.config.list_physical_devices("GPU")]


def bfloat16_warning(precision, gpu_capabilities, path="/proc/cpuinfo"):
  """A one-line warning when `precision` is bfloat16 on hardware without bfloat16 units,
  or None.

  Args:
    precision: a `config.PRECISIONS` name.
    gpu_capabilities: `gpu_compute_capabilities()`: [] trains on the CPU, whose flags
      (`path`) then decide; GPUs warn when one of them is known to be older than
      GPU_BFLOAT16_CAPABILITY.
  """
  if precision != "mixed_bfloat16":
    return None
  if gpu_capabilities:
    older = sorted({c for c in gpu_capabilities if c and tuple(c) < GPU_BFLOAT16_CAPABILITY})
    if not older:
      return None
    return ("warning: --precision=mixed_bfloat16 on a GPU of compute capability "
            f"{', '.join(f'{major}.{minor}' for major, minor in older)}, without bfloat16 "
            "tensor cores (8.0, Ampere, and later have them): expect it to be no faster "
            "than --precision=float32")
  if cpu_has_bfloat16_units(path):
    return None
  return ("warning: --precision=mixed_bfloat16 on a CPU without bfloat16 units (no "
          "avx512_bf16 or amx_bf16 flag) and no GPU: it trains correctly but slower than "
          "--precision=float32")
