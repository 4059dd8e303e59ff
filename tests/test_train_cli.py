"""train.py as a user runs it: flag errors, train then resume, SIGTERM checkpoints."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from mvae_tf import distribution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# No GPU is visible to the child, so it runs the same way (CPU replicas as
# --num_cpu_devices says) on machines with any number of GPUs.
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def _run(*flags, timeout=300):
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *flags],
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                        env=CPU_ONLY)


@pytest.mark.parametrize("flags, message", [
    (["--num_sprites=0"], r"--num_sprites.*>= 1.*Received: num_sprites=0"),
    (["--num_sprites=3", "--num_objects=17", "--num_pooling=4"],
     r"--num_objects must be at most the number of candidates, 4x4=16"),
    (["--num_objects=257"], r"16x16=256 for --num_pooling=2; received 257"),
    (["--num_objects=65", "--num_pooling=3"], r"8x8=64 for --num_pooling=3; received 65"),
    (["--num_sprites=255"], r"--num_objects must be at most .* 16x16=256 .*received 257"),
    (["--aggregation=mean"],
     r"--aggregation=mean: value should be one of <max\|sum\|softmax\|gated_sum>"),
    (["--model=vae", "--num_objects=3"], r"--num_objects must be 1 for --model=vae"),
    (["--num_cpu_devices=2", "--batch_size=5"],
     r"--batch_size must be divisible by the number of replicas \(2\); received 5"),
    (["--learning_rate=0"], r"--learning_rate must be a number > 0"),
    (["--kl_weight=-0.5"], r"--kl_weight must be a finite number > 0; received -0.5"),
    (["--head_kernel=2"], r"--head_kernel must be an odd integer >= 1; received 2"),
    (["--presence_prob=2"], r"--presence_prob.*between 0 and 1"),
    (["--model=vae", "--aggregation=sum"], r"--aggregation does not apply to --model=vae"),
    (["--model=vae", "--aggregation=max"], r"--aggregation does not apply to --model=vae"),
    (["--precision=float16"], r"--precision=float16: value should be one of"),
    (["--dataset=multi_dsprites"], r"--variant must be one of binarized"),
    (["--data_path=scenes.tfrecords"], r"--data_path and --variant apply only to "
                                        r"--dataset=multi_dsprites"),
    (["--model=vae", "--unselected_kl_weight=1"],
     r"--unselected_kl_weight does not apply to --model=vae"),
    (["--unselected_kl_weight=0", "--unselected_kl_steps=5"],
     r"--unselected_kl_steps=5 ends a cost that is not charged"),
    (["--unselected_kl_final_steps=1"],
     r"--unselected_kl_final_steps=1 leaves no step of --train_steps=1 with the unselected"),
    (["--model=vae", "--unselected_kl_final_steps=10"],
     r"--unselected_kl_final_steps does not apply to --model=vae"),
    (["--unselected_kl_free_nats=-2"],
     r"--unselected_kl_free_nats must be a finite number >= 0; received -2"),
    (["--model=vae", "--object_sparsity=1"], r"--object_sparsity does not apply to --model=vae"),
    (["--object_sparsity=-1"], r"--object_sparsity must be a finite number >= 0; received -1"),
    (["--strategy=multi_worker"], r"TF_CONFIG is not set\. Every worker needs one"),
    (["--strategy=multi_worker", "--num_cpu_devices=2"],
     r"--num_cpu_devices applies to --strategy=mirrored only"),
    (["--strategy=multi_worker", "--init_from=pretrained/mvae_3sprites"],
     r"--init_from applies to --strategy=mirrored only"),
    (["--init_from=no/such/export"], r"--init_from=no/such/export: no such directory"),
    (["--init_from=pretrained/mvae_3sprites"],
     r"not a SavedModel \(no saved_model.pb\); it holds the versions 59000, 67000: give one"),
    (["--suppression_kl_ratio=1.5"], r"--suppression_kl_ratio must be a number in \(0, 1\]; "
                                     r"received 1\.5"),
    (["--suppression_radius=0", "--suppression_kl_ratio=0.5"],
     r"--suppression_kl_ratio=0\.5 needs suppression"),
    (["--checkpoint_every_steps=0"], r"--checkpoint_every_steps must be >= 1; received 0"),
    (["--dataset=multi_dsprites", "--variant=binarized", "--num_sprites=4",
      "--data_path=x"], r"--num_sprites=4 does not match --variant=binarized"),
])
def test_bad_flags_fail_with_one_clear_line(tmp_path, flags, message):
  model_dir = tmp_path / "run"
  result = _run(*flags, f"--model_dir={model_dir}", "--train_steps=1")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  error_lines = [l for l in result.stderr.splitlines() if "error" in l.lower()]
  assert error_lines, result.stderr
  assert re.search(message, result.stderr), result.stderr
  assert not model_dir.exists()  # Nothing was written.


def test_train_then_resume(tmp_path):
  model_dir = str(tmp_path / "run")
  common = ["--num_sprites=3", "--batch_size=4", f"--model_dir={model_dir}",
            "--log_every_secs=0.01", "--image_every_steps=4"]
  first = _run(*common, "--train_steps=6")
  assert first.returncode == 0, first.stderr
  assert "step 6/6" in first.stdout and "img/s" in first.stdout and "ETA" in first.stdout
  # The log names the machine, so that a run's speed can be read against it later.
  assert re.search(r"^machine: .+, \d+ logical cores, flags .+; TF .+, oneDNN on", first.stdout,
                   re.M), first.stdout[:2000]
  names = os.listdir(model_dir)
  assert {"config.json", "checkpoint", "ckpt-6.index"} <= set(names)
  assert any(n.startswith("events.out.tfevents") for n in names)
  # Resumed on the CPU split in two: each replica's ops on its share of the cores.
  second = _run(*common, "--train_steps=9", "--num_cpu_devices=2")
  assert second.returncode == 0, second.stderr
  assert "at step 6" in second.stdout and "step 9/9" in second.stdout
  intra, inter = distribution.cpu_threads(2)
  assert (f"on 2 replica(s) (CPU split: {intra} thread(s) per op, {inter} ops at once) from "
          "step 6 to 9") in second.stdout, second.stdout[:2000]
  assert "ckpt-9.index" in os.listdir(model_dir)
  third = _run(*common, "--train_steps=9")
  assert third.returncode == 0 and "nothing to do" in third.stdout
  clash = _run(*common, "--train_steps=12", "--latent_dim=4")
  assert clash.returncode != 0 and "latent_dim: 12 -> 4" in clash.stderr
  assert "Traceback" not in clash.stderr


def test_sigterm_saves_a_checkpoint(tmp_path):
  import queue
  import threading
  model_dir = str(tmp_path / "run")
  process = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "train.py"), "--num_sprites=2", "--batch_size=4",
       "--train_steps=100000", f"--model_dir={model_dir}", "--log_every_secs=0.01"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=CPU_ONLY)
  try:
    # A thread reads stdout, so that a child that prints nothing cannot stall the test
    # past its deadline.
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in process.stdout] + [lines.put(None)],
                     daemon=True).start()
    deadline = time.time() + 240
    output = []
    while time.time() < deadline:
      try:
        line = lines.get(timeout=max(0.0, deadline - time.time()))
      except queue.Empty:
        break
      if line is None:
        break
      output.append(line)
      if line.startswith("step "):
        break
    assert any(l.startswith("step ") for l in output), "".join(output)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    stderr = process.stderr.read()
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  rest = []
  while True:
    try:
      line = lines.get(timeout=10)
    except queue.Empty:
      break
    if line is None:
      break
    rest.append(line)
  stdout = "".join(output + rest)
  assert process.returncode == 0, stderr
  assert "Received SIGTERM: saved a checkpoint at step" in stdout
  step = int(stdout.split("saved a checkpoint at step ")[1].split()[0])
  assert step >= 1
  assert os.path.exists(os.path.join(model_dir, f"ckpt-{step}.index"))


def test_a_malformed_config_json_is_one_clear_error_naming_it(tmp_path):
  # The CLI prints the library's error (its cases are in test_training.py) in one line.
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  (model_dir / "config.json").write_text('{"model": {"latent_dim": "x"}, "train": {}}')
  result = _run(f"--model_dir={model_dir}", "--train_steps=1")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("train.py: error")]
  assert len(errors) == 1, result.stderr
  assert re.search(r"malformed run configuration .*run/config.json: --latent_dim must be an "
                   r"integer", errors[0]), errors[0]
  assert os.listdir(model_dir) == ["config.json"]


def test_a_model_dir_that_cannot_be_created_is_one_clear_error(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  result = _run(f"--model_dir={a_file / 'run'}", "--train_steps=1")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert re.search(r"train.py: error: --model_dir '.*file/run' is not writable: Not a "
                   r"directory", result.stderr), result.stderr


def test_a_diverging_run_stops_with_one_line_and_exit_code_1(tmp_path):
  model_dir = tmp_path / "run"
  result = _run("--num_sprites=2", "--batch_size=4", "--train_steps=30",
                "--learning_rate=1e30", "--final_learning_rate=1e30",
                f"--model_dir={model_dir}")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("train.py: error")]
  assert len(errors) == 1, result.stderr
  assert re.search(r"NaN or infinite at step \d+; stopped without saving it.*lower "
                   r"--learning_rate \(this run's is 1e\+30\)", errors[0])
  assert not [n for n in os.listdir(model_dir) if n.startswith("ckpt-")]
