"""Kernels compiled on the user's machine, for what TF's own build leaves slow.

TensorFlow's wheels run their non-oneDNN ops (Eigen's) in code built for any x86-64 CPU
with AVX. In mixed precision that code converts bfloat16 to float and back in narrow steps,
and the ELU's gradient, `EluGrad`, which oneDNN does not cover in TF, took longer in bf16
than in fp32: 14.6 against 6.0 ms of a 3-sprite step's op time on the AVX512_BF16 EPYC of
README's "Throughput", and 14% of the bf16 step on the AMX Xeon. `kernels/elu_grad.cc` is
the same function, bit for bit, compiled with `-march=native`; `activations.elu` takes it
as its gradient in the training step (`training.Trainer`).

Building. `build` compiles a kernel's source with the C++ compiler against the installed
TF's headers and library (`tf.sysconfig`), about 7 s, into a cache directory
(`default_cache_dir()`, `~/.cache/mvae_tf/kernels`, or `$XDG_CACHE_HOME/mvae_tf/kernels`).
The file's name is a digest of everything the binary depends on: the source, TF's version
and flags, the compiler's version and the CPU (its model and flags, since -march=native code
may not run on another CPU), so a changed source, TF or machine builds anew and a cache
shared between machines stays right. It writes to a temporary name and renames into place,
so processes building at once, or one stopped half-way, leave no broken file.

Loading. TF registers a library's ops for the whole process, and a second library of the
same op would register nothing, so `load_elu_grad` loads once per process and returns
the same op after (the one piece of state this module keeps, mirroring TF's registry).
"""

import hashlib
import os
import shutil
import subprocess
import tempfile

from mvae_tf import machine

KERNELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
ELU_GRAD_SOURCE = os.path.join(KERNELS_DIR, "elu_grad.cc")
# -ffp-contract=off: no fused multiply-adds, which would round differently from TF's kernel.
OPTIMISATION_FLAGS = ("-O3", "-march=native", "-ffp-contract=off")
BUILD_TIMEOUT_SECS = 300

_LOADED = {}  # Source path -> the loaded op library (see "Loading" above).


class BuildError(RuntimeError):
  """A kernel could not be compiled or loaded; the message says why."""


def default_cache_dir():
  """`$XDG_CACHE_HOME/mvae_tf/kernels`, or `~/.cache/mvae_tf/kernels`."""
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache, "mvae_tf", "kernels")


def _compiler_version(compiler):
  result = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                          timeout=60, check=False)
  return result.stdout.splitlines()[0] if result.returncode == 0 and result.stdout else ""


def build(source, cache_dir=None, compiler="c++"):
  """Compiles `source` into a TF op library in `cache_dir` (once); returns its path.

  Args:
    source: a C++ file of `kernels/`.
    cache_dir: where built libraries are kept (None: `default_cache_dir()`).
    compiler: the C++ compiler, a name on PATH or a path.

  Raises:
    BuildError: naming what is missing or what the compiler said.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = shutil.which(compiler)
  if path is None:
    raise BuildError(f"no C++ compiler {compiler!r} on PATH (Debian: apt-get install g++)")
  try:
    with open(source, "rb") as f:
      code = f.read()
  except OSError as e:
    raise BuildError(f"cannot read the kernel source {source}: {e}") from None
  compile_flags, link_flags = tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()
  cpu = machine.cpu_identity()
  digest = hashlib.sha256()
  for part in (code, tf.__version__, *compile_flags, *link_flags, *OPTIMISATION_FLAGS,
               path, _compiler_version(path), cpu):
    digest.update(part if isinstance(part, bytes) else part.encode())
  name = os.path.splitext(os.path.basename(source))[0]
  cache_dir = cache_dir or default_cache_dir()
  library = os.path.join(cache_dir, f"{name}-{digest.hexdigest()[:16]}.so")
  if os.path.exists(library):
    return library
  try:
    os.makedirs(cache_dir, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(suffix=".so.partial", dir=cache_dir)
    os.close(descriptor)
  except OSError as e:
    raise BuildError(f"cannot write to the kernel cache {cache_dir}: {e}") from None
  command = [path, "-shared", "-fPIC", *OPTIMISATION_FLAGS, "-w", *compile_flags, source,
             "-o", partial, *link_flags]
  try:
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_SECS, check=False)
    if result.returncode != 0:
      said = (result.stderr or result.stdout).strip().splitlines()[-5:]
      raise BuildError(f"{compiler} failed on {source} (exit {result.returncode}): "
                       + " | ".join(said))
    os.replace(partial, library)
  except subprocess.TimeoutExpired:
    raise BuildError(f"{compiler} took over {BUILD_TIMEOUT_SECS} s on {source}") from None
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return library


def load_elu_grad(cache_dir=None, compiler="c++"):
  """The compiled bf16 ELU gradient, `f(gradients, outputs) -> backprops`, built if needed.

  The same function as `tf.raw_ops.EluGrad` on bfloat16 tensors (outputs = elu(x)), bit
  for bit, on the CPU. Loaded once per process: later calls return the first op whatever
  their arguments.

  Raises:
    BuildError: when it cannot be built or loaded.
  """
  if ELU_GRAD_SOURCE not in _LOADED:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    library = build(ELU_GRAD_SOURCE, cache_dir, compiler)
    try:
      _LOADED[ELU_GRAD_SOURCE] = tf.load_op_library(library)
    except (tf.errors.OpError, OSError) as e:
      raise BuildError(f"cannot load {library}: {e}") from None
  op_library = _LOADED[ELU_GRAD_SOURCE]
  return lambda gradients, outputs: op_library.mvae_elu_grad(gradients, outputs)
