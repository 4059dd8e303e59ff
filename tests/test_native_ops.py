"""The compiled kernels: TF's ops (EluGrad bit for bit), built once, clear failures.

The upsampling kernels' equivalence with TF's resize is in tests/test_upsampling.py."""

import dataclasses
import os
import platform
import re
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import machine, native_ops

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None,
                                    reason="no C++ compiler `c++` on PATH")


def _bits(tensor):
  """A bfloat16 tensor's 16-bit words."""
  return tf.bitcast(tensor, tf.uint16).numpy()


def _special_values():
  """Every class of bfloat16 an ELU's output and its upstream gradient can hold."""
  tiny = np.float32(2.0 ** -130)  # Subnormal in bf16 (its exponent is float32's).
  return np.array([0.0, -0.0, 1.0, -1.0, -0.99, -1e-3, -tiny, tiny, 3e38, -3e38, 1e-30,
                   np.inf, -np.inf, np.nan, 0.5, -0.5, 7.0, -7.0], np.float32)


@needs_compiler
def test_the_compiled_elu_gradient_is_tfs_bit_for_bit():
  kernel = native_ops.load().elu_grad
  rng = np.random.RandomState(0)
  special = _special_values()
  # Every pair of special values (g, y), then a tensor large enough to be split over threads.
  g_pairs, y_pairs = np.meshgrid(special, special)
  cases = [(g_pairs.reshape(3, 6, 18), y_pairs.reshape(3, 6, 18)),
           (rng.standard_normal([5, 31, 17, 7]) * 4,
            np.maximum(rng.standard_normal([5, 31, 17, 7]) * 2, -1.0))]
  for g_values, y_values in cases:
    g = tf.cast(g_values.astype(np.float32), tf.bfloat16)
    y = tf.cast(y_values.astype(np.float32), tf.bfloat16)
    ours, tfs = kernel(g, y), tf.raw_ops.EluGrad(gradients=g, outputs=y)
    assert ours.dtype == tf.bfloat16 and ours.shape == g.shape
    nan = np.isnan(tf.cast(tfs, tf.float32).numpy())
    np.testing.assert_array_equal(np.isnan(tf.cast(ours, tf.float32).numpy()), nan)
    np.testing.assert_array_equal(_bits(ours)[~nan], _bits(tfs)[~nan])
  # The rounding is exercised: some y + 1 and (y + 1) * g are not bf16 numbers.
  assert not np.array_equal(_bits(ours), _bits(g))


@needs_compiler
def test_the_compiled_elu_gradient_refuses_tensors_of_two_shapes():
  kernel = native_ops.load().elu_grad
  with pytest.raises(tf.errors.InvalidArgumentError):
    kernel(tf.zeros([2, 3], tf.bfloat16), tf.zeros([3, 2], tf.bfloat16))
  with pytest.raises((TypeError, tf.errors.InvalidArgumentError)):
    kernel(tf.zeros([2, 3]), tf.zeros([2, 3]))  # float32: TF's own kernel serves it.


def _fake_compiler(tmp_path, fails=False):
  """A `c++` stand-in: logs each compile to `compiles` and writes its -o file (or fails)."""
  log = tmp_path / "compiles"
  script = tmp_path / "fake-c++"
  body = ('echo "error: this compiler was told to fail" >&2; exit 1' if fails else
          'out=""; prev=""; for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done\n'
          'echo built > "$out"')
  script.write_text('#!/bin/sh\n[ "$1" = "--version" ] && { echo "fake 1.0"; exit 0; }\n'
                    f'echo "$@" >> "{log}"\n{body}\n')
  script.chmod(script.stat().st_mode | stat.S_IEXEC)
  return str(script), log


@needs_compiler
def test_the_compiled_upsampling_refuses_shapes_it_cannot_take():
  kernels = native_ops.load()
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=re.escape("expected features [batch, height, width, channels]; "
                                     "received shape [2,3,4]")):
    kernels.upsample(tf.zeros([2, 3, 4]))
  with pytest.raises(tf.errors.InvalidArgumentError,  # An odd height is no 2x upsampling.
                     match=re.escape("expected gradients [batch, 2 * height, 2 * width, "
                                     "channels]; received shape [1,5,4,2]")):
    kernels.upsample_grad(tf.zeros([1, 5, 4, 2]))


def _kernels_copy(tmp_path):
  kernels = tmp_path / "kernels"
  shutil.copytree(native_ops.KERNELS_DIR, kernels)
  return kernels


def test_the_kernels_are_built_once_and_again_when_a_source_or_header_changes(tmp_path):
  compiler, log = _fake_compiler(tmp_path)
  cache, kernels = str(tmp_path / "cache"), _kernels_copy(tmp_path)
  first = native_ops.build(str(kernels), cache, compiler)
  assert native_ops.build(str(kernels), cache, compiler) == first
  assert len(log.read_text().splitlines()) == 1
  command = log.read_text().split()
  assert "-march=native" in command and "-ffp-contract=off" in command
  assert {os.path.basename(arg) for arg in command if arg.endswith(".cc")} == {
      "conv_filter_grad.cc", "elu_grad.cc", "softmax_pool.cc", "upsample.cc"}
  assert os.path.basename(first).startswith("mvae_kernels-") and first.endswith(".so")
  builds = {first}
  for name in ("upsample.cc", "bfloat16_bits.h"):
    (kernels / name).write_text((kernels / name).read_text() + "\n// changed\n")
    builds.add(native_ops.build(str(kernels), cache, compiler))
  assert len(builds) == 3 and len(log.read_text().splitlines()) == 3
  assert sorted(os.listdir(cache)) == sorted(os.path.basename(p) for p in builds)


def test_another_instruction_set_is_another_build(tmp_path):
  compiler, log = _fake_compiler(tmp_path)
  cache = str(tmp_path / "cache")
  native = native_ops.build(native_ops.KERNELS_DIR, cache, compiler)
  avx2 = native_ops.build(native_ops.KERNELS_DIR, cache, compiler, march="x86-64-v3")
  assert avx2 != native
  commands = [line.split() for line in log.read_text().splitlines()]
  assert "-march=native" in commands[0] and "-march=x86-64-v3" in commands[1]
  assert not any(arg.startswith("-march") for arg in commands[1] if arg != "-march=x86-64-v3")


# The tests that run the compiled kernels against TF's ops.
_KERNEL_TESTS = ["tests/test_native_ops.py", "tests/test_upsampling.py", "tests/test_decoder.py",
                 "tests/test_conv.py",
                 "tests/test_activations.py", "-k",
                 "(compiled or bit_for_bit or kernel) and not avx2"]  # Not this test again.


@needs_compiler
@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64-v3 is an x86 level")
def test_kernels_built_for_avx2_alone_pass_the_kernel_tests():
  # What an AVX2-only CPU compiles (-march=native there; docs/throughput.md's AVX2 emulation): the
  # kernel tests again, in a process whose first `load` builds for x86-64-v3, so that the
  # tests' own `load()` calls return those kernels.
  code = ("import sys\n"
          "from mvae_tf import native_ops\n"
          "assert native_ops.load(march='x86-64-v3').march == 'x86-64-v3'\n"
          "import pytest\n"
          "sys.exit(pytest.main(sys.argv[1:]))")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, "-c", code, "-q", "-p", "no:cacheprovider",
                           *_KERNEL_TESTS], capture_output=True, text=True, cwd=root,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  passed = re.search(r"(\d+) passed", result.stdout)
  assert passed and int(passed.group(1)) >= 15, result.stdout[-2000:]


def test_a_failed_build_says_what_the_compiler_said_and_leaves_nothing(tmp_path):
  compiler, _ = _fake_compiler(tmp_path, fails=True)
  cache = tmp_path / "cache"
  with pytest.raises(native_ops.BuildError,
                     match=r"failed on the kernels in .*kernels \(exit 1\): error: this "
                           r"compiler was told to fail"):
    native_ops.build(native_ops.KERNELS_DIR, str(cache), compiler)
  assert os.listdir(cache) == []  # No partial library to be taken for a built one.


@pytest.mark.parametrize("compiler, kernels_dir, message", [
    ("no-such-c++", native_ops.KERNELS_DIR, "no C++ compiler 'no-such-c++' on PATH"),
    ("sh", "/no/such/kernels", "no kernel sources (*.cc) in /no/such/kernels"),
])
def test_a_build_without_a_compiler_or_sources_names_what_is_missing(tmp_path, compiler,
                                                                     kernels_dir, message):
  with pytest.raises(native_ops.BuildError, match=re.escape(message)):
    native_ops.build(kernels_dir, str(tmp_path / "cache"), compiler)


def test_the_cache_follows_xdg_cache_home(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert native_ops.default_cache_dir() == str(tmp_path / "mvae_tf" / "kernels")
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert native_ops.default_cache_dir() == os.path.join(
      os.path.expanduser("~"), ".cache", "mvae_tf", "kernels")


def test_the_cpu_identity_tells_cpus_apart_by_model_and_flags(tmp_path):
  """It keys the cache: -march=native code built for one CPU must not load on another."""
  def identity(model, flags):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
                       f"model\t\t: {model}\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\n"
                       "processor\t: 1\nflags\t\t: other\n")
    return machine.cpu_identity(str(cpuinfo))

  base = identity(17, "fpu avx2 avx512f")
  assert base == "AMD EPYC|AuthenticAMD|25|17||avx2 avx512f fpu"
  assert identity(17, "avx512f fpu avx2") == base  # The flags' order does not matter.
  assert identity(17, "fpu avx2") != base and identity(1, "fpu avx2 avx512f") != base


def test_the_kernels_say_what_the_step_runs_of_them():
  # train.py's start line and the benchmark's table read it.
  kernels = native_ops.Kernels(**{field.name: None for field in
                                  dataclasses.fields(native_ops.Kernels)})
  native = dataclasses.replace(kernels, use_conv3x3_filter_grad=False, march="native")
  assert native.description == "compiled for this CPU"
  assert dataclasses.replace(native, use_conv3x3_filter_grad=True).description == (
      "compiled for this CPU, the convolutions' filter gradients among them (oneDNN runs "
      "AVX2 here)")
  assert dataclasses.replace(native, march="x86-64-v3").description == (
      "compiled for -march=x86-64-v3")
