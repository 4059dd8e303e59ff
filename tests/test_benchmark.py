"""benchmark.py runs and writes every figure (tiny sizes: no speed is asserted here)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from mvae_tf import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(value):
  return isinstance(value, (int, float)) and value > 0


def test_quick_benchmark_writes_every_key(tmp_path):
  path = tmp_path / "b.json"
  env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
  env["CUDA_VISIBLE_DEVICES"] = ""  # The CPU's figures, the split CPU's among them.
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmark.py"), "--quick", "--sprites=3,8",
       f"--json={path}"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(path.read_text())
  facts = figures["machine"]
  for key in ("cpu_model", "cpu_family_model", "logical_cores", "avx2", "avx512f",
              "avx512_bf16", "amx_bf16", "tensorflow", "onednn", "gpus"):
    assert key in facts, key
  assert facts["onednn"] is True  # benchmark.py turns it on by default.
  assert _positive(figures["matmul_gflops"]["fp32"])
  bf16 = facts["avx512_bf16"] or facts["amx_bf16"] or bool(facts["gpus"])
  assert ("bfloat16" in figures["matmul_gflops"]) == bf16
  for sprites in ("3", "8"):
    assert _positive(figures["flops_per_image"][sprites])
    precisions = {"fp32", "mixed_bfloat16"} if bf16 else {"fp32"}
    assert set(figures["train"][sprites]) == precisions
    for precision in precisions:
      train = figures["train"][sprites][precision]
      for key in ("images_per_sec", "gflops", "matmul_gflops", "fraction_of_matmul"):
        assert _positive(train[key]), (sprites, precision, key)
      # GFLOP/s is the analytic count times the measured rate, and its fraction is of the
      # fp32 matmul timed in turns with it (the same for both precisions of a sprite count).
      assert abs(train["gflops"] - train["images_per_sec"]
                 * figures["flops_per_image"][sprites] / 1e9) < 1e-6 * train["gflops"]
      assert train["fraction_of_matmul"] == pytest.approx(
          train["gflops"] / train["matmul_gflops"])
      assert train["matmul_gflops"] == figures["train"][sprites]["fp32"]["matmul_gflops"]
      # Without GPUs the same step on the CPU split in two, timed in a child process
      # alternately with the one-replica step.
      split = train["cpu_replicas"]
      assert split["replicas"] == 2 and _positive(split["images_per_sec"])
      assert abs(split["speedup"] - split["images_per_sec"] / train["images_per_sec"]) < 1e-9
    if bf16:  # The bf16 step over the fp32 step of the same run (issue 8's goal: 2x).
      by_precision = figures["train"][sprites]
      assert by_precision["mixed_bfloat16"]["speedup_over_fp32"] == pytest.approx(
          by_precision["mixed_bfloat16"]["images_per_sec"]
          / by_precision["fp32"]["images_per_sec"])
      assert "speedup_over_fp32" not in by_precision["fp32"]
  # The step without its NaN/Inf check, timed in turns with the first sprite count's.
  checked = figures["train"]["3"]["fp32"]
  assert _positive(checked["unchecked_images_per_sec"])
  assert checked["nonfinite_check_cost"] == pytest.approx(
      checked["unchecked_images_per_sec"] / checked["images_per_sec"] - 1)
  assert "unchecked_images_per_sec" not in figures["train"]["8"]["fp32"]
  assert _positive(figures["data"]["images_per_sec"])
  assert _positive(figures["data"]["ratio_to_training"])
  for name in ("encode", "decode"):
    for key in ("p50_ms", "p99_ms", "batch256_images_per_sec"):
      assert _positive(figures["serving"][name][key]), (name, key)
      assert _positive(figures["serving"][name]["live_" + key]), (name, key)
    assert figures["serving"][name]["p99_ms"] >= figures["serving"][name]["p50_ms"]
  assert _positive(figures["peak_rss_mb"])
  assert "training step" in result.stdout and "of matmul" in result.stdout
  assert "x fp32" in result.stdout
  assert bool(re.search(r"mixed_bfloat16( +[\d.]+){5} +[\d.]+x\n", result.stdout)) == bf16
  if shutil.which("c++"):
    filter_gradients = ", the convolutions' filter gradients among them (oneDNN runs AVX2 here)"
    assert figures["native_kernels"] == "compiled for this CPU" + (
        filter_gradients if machine.onednn_runs_avx2() else "")
    assert "kernels compiled for this CPU" in result.stdout
  assert "on 2 CPU replicas (train.py --num_cpu_devices=2)" in result.stdout


@pytest.mark.parametrize("tool, flag, message", [
    ("benchmark.py", "--sprites=0", "--sprites must be integers >= 1; received ['0']"),
    ("benchmark.py", "--precisions=mixed_bfloat16",
     "--precisions must include float32 and name only float32, mixed_bfloat16; received "
     "['mixed_bfloat16']"),
    ("benchmark.py", "--cpu_replicas=-1", "--cpu_replicas must be >= 0; received -1"),
    ("benchmark.py", "--json=/no/such/dir/b.json",
     "--json '/no/such/dir/b.json': its directory does not exist"),
    ("benchmarks/grid_step.py", "--rounds=0", "--sprites and --rounds must be >= 1"),
    ("benchmarks/xla_step.py", "--rounds=0", "--sprites and --rounds must be >= 1"),
    ("benchmarks/native_step.py", "--sprites=0", "--sprites and --rounds must be >= 1"),
    ("benchmarks/conv_ops.py", "--repeats=0",
     "--sprites, --repeats and --iterations must be >= 1"),
    ("benchmarks/cpu_replicas_step.py", "--rounds=0", "--sprites and --rounds must be >= 1"),
    ("benchmarks/cpu_replicas_step.py", "--replicas=1,0",
     "--replicas must be distinct counts >= 1; received '1,0'"),
    ("benchmarks/cpu_replicas_step.py", "--replicas=2,2",
     "--replicas must be distinct counts >= 1; received '2,2'"),
    ("benchmarks/cpu_replicas_step.py", "--replicas=two",
     "--replicas must be comma-separated integers; received 'two'"),
])
def test_the_benchmarks_refuse_bad_flags_before_any_work(tool, flag, message):
  result = subprocess.run([sys.executable, os.path.join(ROOT, tool), flag],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  name = os.path.basename(tool)
  assert result.stderr.strip().splitlines()[-1] == f"{name}: error: {message}"
  assert "img/s" not in result.stdout


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler `c++` on PATH")
@pytest.mark.parametrize("tool", ["benchmark.py", "benchmarks/native_step.py",
                                  "benchmarks/cpu_replicas_step.py"])
def test_an_instruction_set_the_kernels_cannot_be_built_for_is_refused(tool):
  result = subprocess.run([sys.executable, os.path.join(ROOT, tool),
                           "--kernel_march=no-such-cpu"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"{os.path.basename(tool)}: error: --kernel_march 'no-such-cpu': "
                         "c++ failed on the kernels in "), last
  assert "no-such-cpu" in last.split("(exit 1): ")[1]  # The compiler's own words.
  assert "img/s" not in result.stdout
