"""Kernels compiled on the user's machine, for what TF's own build leaves slow.

TensorFlow's wheels run their non-oneDNN ops (Eigen's) in code built for any x86-64 CPU
with AVX, and some of the step's work takes several TF ops where one pass would do
(README, "Throughput"). `kernels/` holds four such pieces, each the same function as
TF's ops:

* `MvaeEluGrad` (`elu_grad.cc`), the ELU's gradient in bfloat16, bit for bit TF's
  `EluGrad`, which oneDNN does not cover in TF and which Eigen ran slower in bf16 than in
  fp32 (14.6 against 6.0 ms of a 3-sprite step's op time on the AVX512_BF16 EPYC). Used by
  `activations.elu`.
* `MvaeBilinearUpsample2x` and its gradient (`upsample.cc`), g's and h's bilinear 2x
  upsampling and its adjoint in one pass each, in float32 or bfloat16, where TF takes a
  resize, edge-padding copies and a depthwise convolution (fp32) or two batched matrix
  products each way (bf16). Used by `upsampling.bilinear_upsample_2x`.
* `MvaeSoftmaxPool` and its gradient (`softmax_pool.cc`), the softmax pooling over
  objects and its closed-form gradient (`decoder._softmax_pool`) in one pass each, where TF
  takes a slice, a softmax over a middle axis, a dozen elementwise ops over
  [B, N, 32, 32, C] and, in bf16, casts to float32 and back. Used by `decoder.aggregate`.
* `MvaeConv3x3FilterGrad` (`conv_filter_grad.cc`), the filter gradient of a 3x3 "same"
  convolution in float32, as register tiles of fused multiply-adds over an image row at a
  time, the three taps of a filter row at once, where oneDNN's AVX2 kernel ran at
  0.14-0.82 of the matmul's rate on an AVX2-only CPU. Used by `conv.Conv2D` where oneDNN
  runs AVX2 kernels.

Scope. `Kernels` holds the loaded ops. Within `training_kernels(kernels)` (the training
step opens it, `training.Trainer`), `activations.elu`, `upsampling.bilinear_upsample_2x`,
`decoder.aggregate` and `conv.Conv2D` trace them, through `tf.custom_gradient`; everything
else, export above all, traces TF's ops alone, so a SavedModel needs nothing of this
module. The scope is a `contextvars.ContextVar`, read when a function is traced: the
training step opens it inside each replica's function, since MirroredStrategy traces
replicas in threads of their own.

Building. `build` compiles the sources with the C++ compiler against the installed TF's
headers and library (`tf.sysconfig`), 24 s on the AMD EPYC of README's "Throughput", into
a cache directory (`default_cache_dir()`: `~/.cache/mvae_tf/kernels`, or
`$XDG_CACHE_HOME/mvae_tf/kernels`). The file's name is a digest of everything the binary
depends on: the sources and headers, TF's version and flags, the compiler's version and
the CPU (its model and flags, since -march=native code may not run on another CPU), so a
changed source, TF or machine builds anew and a cache shared between machines stays right.
It writes to a temporary name and renames into place, so processes building at once, or
one stopped half-way, leave no broken file.

Loading. TF registers a library's ops for the whole process, and a second library of the
same ops would register nothing, so `load` loads once per process and returns the same
`Kernels` after (the one piece of state this module keeps beside the scope, mirroring TF's
registry).
"""

import contextlib
import contextvars
import dataclasses
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Callable

from mvae_tf import machine

KERNELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
LIBRARY_NAME = "mvae_kernels"
# -ffp-contract=off: no fused multiply-adds, which would round differently from TF's kernel.
OPTIMISATION_FLAGS = ("-O3", "-ffp-contract=off")
# The instruction set the kernels are compiled for (`-march`): this CPU's, all of it.
NATIVE = "native"
BUILD_TIMEOUT_SECS = 300

_LOADED = {}  # KERNELS_DIR -> the loaded `Kernels`, or the BuildError ("Loading" above).
_ACTIVE = contextvars.ContextVar("mvae_tf_training_kernels", default=None)


class BuildError(RuntimeError):
  """A kernel could not be compiled or loaded; the message says why."""


def default_cache_dir():
  """`$XDG_CACHE_HOME/mvae_tf/kernels`, or `~/.cache/mvae_tf/kernels`."""
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache, "mvae_tf", "kernels")


def _compiler_version(compiler):
  """The first line `compiler --version` prints, or "" (the build then says what fails)."""
  try:
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                            timeout=60, check=False)
  except (OSError, subprocess.TimeoutExpired):
    return ""
  return result.stdout.splitlines()[0] if result.returncode == 0 and result.stdout else ""


def sources(kernels_dir=KERNELS_DIR):
  """The C++ files compiled into the library, and the headers they include."""
  return (sorted(glob.glob(os.path.join(kernels_dir, "*.cc"))),
          sorted(glob.glob(os.path.join(kernels_dir, "*.h"))))


def build(kernels_dir=KERNELS_DIR, cache_dir=None, compiler="c++", march=NATIVE):
  """Compiles the kernels of `kernels_dir` into one TF op library in `cache_dir` (once).

  Args:
    kernels_dir: a directory of C++ sources (`*.cc`, compiled) and headers (`*.h`).
    cache_dir: where built libraries are kept (None: `default_cache_dir()`).
    compiler: the C++ compiler, a name on PATH or a path.
    march: the compiler's `-march`: "native" (this CPU's instruction set), or a
      narrower one such as "x86-64-v3" (AVX2 and FMA, no AVX-512), to measure the kernels
      as a CPU with less would run them (docs/throughput.md: the AVX2 emulation).

  Returns:
    The library's path.

  Raises:
    BuildError: naming what is missing or what the compiler said.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = shutil.which(compiler)
  if path is None:
    raise BuildError(f"no C++ compiler {compiler!r} on PATH (Debian: apt-get install g++)")
  compiled, headers = sources(kernels_dir)
  if not compiled:
    raise BuildError(f"no kernel sources (*.cc) in {kernels_dir}")
  compile_flags, link_flags = tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()
  digest = hashlib.sha256()
  for name in compiled + headers:
    with open(name, "rb") as f:
      digest.update(os.path.basename(name).encode() + b"\0" + f.read())
  optimisation = (*OPTIMISATION_FLAGS, f"-march={march}")
  for part in (tf.__version__, *compile_flags, *link_flags, *optimisation, path,
               _compiler_version(path), machine.cpu_identity()):
    digest.update(part.encode() + b"\0")
  cache_dir = cache_dir or default_cache_dir()
  library = os.path.join(cache_dir, f"{LIBRARY_NAME}-{digest.hexdigest()[:16]}.so")
  if os.path.exists(library):
    return library
  try:
    os.makedirs(cache_dir, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(suffix=".so.partial", dir=cache_dir)
    os.close(descriptor)
  except OSError as e:
    raise BuildError(f"cannot write to the kernel cache {cache_dir}: {e}") from None
  command = [path, "-shared", "-fPIC", *optimisation, "-w", *compile_flags, *compiled,
             "-o", partial, *link_flags]
  try:
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_SECS, check=False)
    if result.returncode != 0:
      said = (result.stderr or result.stdout).strip().splitlines()[-5:]
      raise BuildError(f"{compiler} failed on the kernels in {kernels_dir} (exit "
                       f"{result.returncode}): " + " | ".join(said))
    os.replace(partial, library)
  except subprocess.TimeoutExpired:
    raise BuildError(f"{compiler} took over {BUILD_TIMEOUT_SECS} s on the kernels in "
                     f"{kernels_dir}") from None
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return library


@dataclasses.dataclass(frozen=True)
class Kernels:
  """The compiled ops, on the CPU, each the same function as TF's.

  Attributes:
    elu_grad: (gradients, outputs) -> backprops, bfloat16 only: `tf.raw_ops.EluGrad` with
      outputs = elu(x), bit for bit.
    upsample: [B, H, W, C] -> [B, 2H, 2W, C], float32 or bfloat16:
      `tf.image.resize(x, [2H, 2W], "bilinear")`, to float32's rounding.
    upsample_grad: [B, 2H, 2W, C] -> [B, H, W, C]: `upsample`'s adjoint, the gradient.
    softmax_pool: objects [B, N, ..., C] -> (pooled [B, ..., C], weights [B, N, ..., 1]
      float32): `decoder._softmax_pool` and its softmax weights, to float32's rounding.
    softmax_pool_grad: (objects, weights, dL/dpooled) -> dL/dobjects, its gradient.
    conv3x3_filter_grad: (inputs [B, H, W, I], gradients [B, H, W, O]) -> (filter
      gradient [3, 3, I, O], bias gradient [O]), float32, I or O a multiple of 8:
      `tf.raw_ops.Conv2DBackpropFilter` of a 3x3 convolution, stride 1, "SAME" padding, and
      the sum of the gradients over pixels, to float32's rounding (summed in another order).
    use_conv3x3_filter_grad: whether the model's convolutions take it in training
      (`conv.Conv2D`): where oneDNN runs its AVX2 kernels (`machine.onednn_runs_avx2`),
      whose filter gradients it beat 1.33-1.72x over the step's shapes; oneDNN's AVX-512
      ones ran at 0.8-1.1 of the matmul and are kept (docs/throughput.md).
    march: the instruction set they were compiled for (`build`'s).
  """
  elu_grad: Callable
  upsample: Callable
  upsample_grad: Callable
  softmax_pool: Callable
  softmax_pool_grad: Callable
  conv3x3_filter_grad: Callable
  use_conv3x3_filter_grad: bool = False
  march: str = NATIVE

  @property
  def description(self):
    """What the training step runs of them, in words (train.py's start line, the
    benchmark's table)."""
    built_for = ("compiled for this CPU" if self.march == NATIVE
                 else f"compiled for -march={self.march}")
    if self.use_conv3x3_filter_grad:
      built_for += ", the convolutions' filter gradients among them (oneDNN runs AVX2 here)"
    return built_for


def load(cache_dir=None, compiler="c++", march=NATIVE):
  """The compiled kernels (`Kernels`), built if needed; loaded once per process, so later
  calls return the first `Kernels` whatever their arguments. A failure is kept too: later
  calls raise it again rather than run the compiler again (every `training.Trainer` of a
  process, such as `benchmark.py`'s, asks). So a process that calls `load(march=...)`
  first trains with those kernels (`benchmark.py --kernel_march`).

  Raises:
    BuildError: when they cannot be built or loaded.
  """
  if KERNELS_DIR not in _LOADED:
    try:
      _LOADED[KERNELS_DIR] = _build_and_load(cache_dir, compiler, march)
    except BuildError as e:
      _LOADED[KERNELS_DIR] = e
  if isinstance(_LOADED[KERNELS_DIR], BuildError):
    raise _LOADED[KERNELS_DIR]
  return _LOADED[KERNELS_DIR]


def _build_and_load(cache_dir, compiler, march):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  library = build(KERNELS_DIR, cache_dir, compiler, march)
  try:
    ops = tf.load_op_library(library)
  except (tf.errors.OpError, OSError) as e:
    raise BuildError(f"cannot load {library}: {e}") from None
  return Kernels(elu_grad=ops.mvae_elu_grad,
                 upsample=ops.mvae_bilinear_upsample2x,
                 upsample_grad=ops.mvae_bilinear_upsample2x_grad,
                 softmax_pool=ops.mvae_softmax_pool,
                 softmax_pool_grad=ops.mvae_softmax_pool_grad,
                 conv3x3_filter_grad=ops.mvae_conv3x3_filter_grad,
                 use_conv3x3_filter_grad=machine.onednn_runs_avx2(),
                 march=march)


@contextlib.contextmanager
def training_kernels(kernels):
  """Within: the model's layers trace `kernels` (a `Kernels`, or None for TF's ops)."""
  token = _ACTIVE.set(kernels)
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def active():
  """The `Kernels` of the innermost `training_kernels` scope, or None."""
  return _ACTIVE.get()
