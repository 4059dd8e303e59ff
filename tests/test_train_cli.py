"""train.py as a user runs it: flag errors, train then resume, SIGTERM checkpoints."""

import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags, timeout=300):
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *flags],
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("flags, message", [
    (["--num_sprites=0"], r"--num_sprites.*>= 1.*Received: num_sprites=0"),
    (["--num_sprites=3", "--num_objects=17"],
     r"--num_objects must be at most the number of candidates, 4x4=16"),
    (["--num_pooling=3", "--num_objects=65"], r"8x8=64 for --num_pooling=3; received 65"),
    (["--num_sprites=15"], r"--num_objects must be at most .* 4x4=16 .*received 17"),
    (["--aggregation=mean"], r"--aggregation=mean: value should be one of <max\|sum>"),
    (["--model=vae", "--num_objects=3"], r"--num_objects must be 1 for --model=vae"),
    (["--num_cpu_devices=2", "--batch_size=5"],
     r"--batch_size must be divisible by the number of replicas \(2\); received 5"),
    (["--learning_rate=0"], r"--learning_rate must be a number > 0"),
    (["--presence_prob=2"], r"--presence_prob.*between 0 and 1"),
])
def test_bad_flags_fail_with_one_clear_line(tmp_path, flags, message):
  model_dir = tmp_path / "run"
  result = _run(*flags, f"--model_dir={model_dir}", "--train_steps=1")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  error_lines = [l for l in result.stderr.splitlines() if "error" in l.lower()]
  assert error_lines, result.stderr
  import re
  assert re.search(message, result.stderr), result.stderr
  assert not model_dir.exists()  # Nothing was written.


def test_train_then_resume(tmp_path):
  model_dir = str(tmp_path / "run")
  common = ["--num_sprites=3", "--batch_size=4", f"--model_dir={model_dir}",
            "--log_every_secs=0.01", "--image_every_steps=4"]
  first = _run(*common, "--train_steps=6")
  assert first.returncode == 0, first.stderr
  assert "step 6/6" in first.stdout and "img/s" in first.stdout and "ETA" in first.stdout
  names = os.listdir(model_dir)
  assert {"config.json", "checkpoint", "ckpt-6.index"} <= set(names)
  assert any(n.startswith("events.out.tfevents") for n in names)
  second = _run(*common, "--train_steps=9")
  assert second.returncode == 0, second.stderr
  assert "at step 6" in second.stdout and "step 9/9" in second.stdout
  assert "ckpt-9.index" in os.listdir(model_dir)
  third = _run(*common, "--train_steps=9")
  assert third.returncode == 0 and "nothing to do" in third.stdout
  clash = _run(*common, "--train_steps=12", "--latent_dim=4")
  assert clash.returncode != 0 and "latent_dim: 12 -> 4" in clash.stderr
  assert "Traceback" not in clash.stderr


def test_sigterm_saves_a_checkpoint(tmp_path):
  model_dir = str(tmp_path / "run")
  process = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "train.py"), "--num_sprites=2", "--batch_size=4",
       "--train_steps=100000", f"--model_dir={model_dir}", "--log_every_secs=0.01"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
  deadline = time.time() + 240
  for line in process.stdout:
    if line.startswith("step ") or time.time() > deadline:
      break
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr
  assert "Received SIGTERM: saved a checkpoint at step" in stdout
  step = int(stdout.split("saved a checkpoint at step ")[1].split()[0])
  assert step >= 1
  assert os.path.exists(os.path.join(model_dir, f"ckpt-{step}.index"))
