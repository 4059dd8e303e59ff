"""Multi-worker training: TF_CONFIG checks, each worker's share of the batch, and two real
worker processes on 127.0.0.1 run by the documented command (README, "Training on several
machines"): they finish with identical weights, a SIGTERM to one saves a checkpoint of the
cluster that resumes, and a worker that dies ends the other with one clear error."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import checkpoints
from mvae_tf import cluster
from mvae_tf import config as config_lib
from mvae_tf import data
from mvae_tf import training
from mvae_tf import training_data
from strategies import strategy as _strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every subprocess wait is bounded; a hang fails the test instead of stalling CI.
LAUNCH_TIMEOUT = 240


def _tf_config(addresses, index, job="worker"):
  return json.dumps({"cluster": {"worker": addresses}, "task": {"type": job, "index": index}})


@pytest.mark.parametrize("value, message", [
    (None, r"TF_CONFIG is not set"),
    ("{cluster", r"is not JSON"),
    ('{"task": {"type": "worker", "index": 0}}', r'has no "cluster" object'),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     r"has jobs \['ps'\]; synchronous training takes only"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     r"'localhost' in cluster.worker, which is not \"host:port\""),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
     r"lists \['a:1'\] more than once"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}}', r'has no "task" object'),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
     r"task.index=2; cluster.worker has 2 address\(es\), so it must be 0 to 1"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     r"task.type='chief', which is not a job of the cluster \(worker\)"),
])
def test_a_bad_tf_config_is_one_error_naming_the_fault(value, message):
  environ = {} if value is None else {"TF_CONFIG": value}
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    cluster.read_cluster(environ)
  assert "TF_CONFIG='{" in str(error.value)  # It shows a working example.


def test_the_chief_is_worker_0_or_the_chief_job():
  two = cluster.read_cluster({"TF_CONFIG": _tf_config(["a:1", "b:2"], 1)})
  assert (two.num_workers, two.task_type, two.task_index, two.is_chief) == (2, "worker", 1,
                                                                            False)
  assert cluster.read_cluster({"TF_CONFIG": _tf_config(["a:1", "b:2"], 0)}).is_chief
  with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:2"]},
                "task": {"type": "worker", "index": 0}}
  worker0 = cluster.read_cluster({"TF_CONFIG": json.dumps(with_chief)})
  assert worker0.num_workers == 3 and not worker0.is_chief
  with_chief["task"] = {"type": "chief", "index": 0}
  assert cluster.read_cluster({"TF_CONFIG": json.dumps(with_chief)}).is_chief


def test_rows_of_a_batch_are_those_rows_of_the_whole_batch():
  whole = next(iter(data.make_dataset(3, 6, seed=5)))
  part = next(iter(data.make_dataset(3, 6, seed=5, rows=(2, 3))))
  for name in whole:
    np.testing.assert_array_equal(part[name], whole[name][2:5], err_msg=name)
  with pytest.raises(ValueError, match=r"rows \(4, 3\) reach past the batch of 6"):
    data.make_dataset(3, 6, seed=5, rows=(4, 3))


def test_each_replica_trains_on_its_rows_of_the_global_batch():
  model_config = config_lib.ModelConfig(num_objects=3)
  train_config = config_lib.TrainConfig(num_sprites=2, batch_size=6, seed=3)
  strategy = _strategy("/cpu:0", "/cpu:1")
  distributed = iter(training_data.distributed_training_data(strategy, model_config,
                                                        train_config, first_step=4))
  whole = iter(training_data.training_dataset(model_config, train_config, first_step=4))
  for _ in range(2):
    per_replica, expected = next(distributed), next(whole)
    for name in ("image", "noise"):
      replicas = strategy.experimental_local_results(per_replica[name])
      assert [r.shape[0] for r in replicas] == [3, 3]
      np.testing.assert_array_equal(tf.concat(replicas, axis=0), expected[name],
                                    err_msg=name)


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


class _Cluster:
  """Two `train.py --strategy=multi_worker` processes on 127.0.0.1, logging to files."""

  def __init__(self, tmp_path, name, *flags):
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    self.logs = [tmp_path / f"{name}_worker{i}.log" for i in range(2)]
    self.processes = []
    for index, log in enumerate(self.logs):
      env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",
             "TF_CONFIG": _tf_config(addresses, index)}
      with open(log, "w") as out:
        self.processes.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train.py"), "--strategy=multi_worker",
             "--collective_timeout_secs=60", *flags],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env))

  def text(self, index):
    return self.logs[index].read_text()

  def wait_for_step(self, step):
    deadline = time.time() + LAUNCH_TIMEOUT
    while time.time() < deadline:
      if all(re.search(rf"^step {step}/", self.text(i), re.M) for i in range(2)):
        return
      if any(p.poll() is not None for p in self.processes):
        break
      time.sleep(0.2)
    self.kill()
    pytest.fail(f"the workers did not reach step {step}:\n" + self.text(0)[-3000:])

  def wait(self):
    try:
      return [p.wait(timeout=LAUNCH_TIMEOUT) for p in self.processes]
    finally:
      self.kill()

  def kill(self):
    for p in self.processes:
      if p.poll() is None:
        p.kill()
        p.wait()


def _fingerprint(text):
  return re.search(r"\(weights ([0-9a-f]{16})\)", text).group(1)


TINY = ["--num_sprites=2", "--batch_size=4", "--log_every_secs=0.01"]


def test_two_workers_finish_with_identical_weights_in_the_chiefs_checkpoint(tmp_path):
  model_dir = tmp_path / "run"
  workers = _Cluster(tmp_path, "first", *TINY, f"--model_dir={model_dir}", "--train_steps=5")
  assert workers.wait() == [0, 0], workers.text(0)[-3000:] + workers.text(1)[-3000:]
  chief, other = workers.text(0), workers.text(1)
  assert "on 2 replica(s)" in chief and "Received the chief's weights at step 0." in other
  for text in (chief, other):
    assert "Finished: saved a checkpoint at step 5" in text
  assert _fingerprint(chief) == _fingerprint(other)
  # Only the chief wrote the model directory; its checkpoint holds those weights.
  assert {"config.json", "ckpt-5.index"} <= set(os.listdir(model_dir))
  model, _, _, step = checkpoints.restore_model(str(model_dir))
  assert step == 5 and training.weights_fingerprint(model) == _fingerprint(chief)


def test_sigterm_to_a_worker_checkpoints_the_cluster_and_a_dead_worker_ends_the_other(
    tmp_path):
  model_dir = tmp_path / "run"
  flags = [*TINY, f"--model_dir={model_dir}", "--train_steps=100000"]
  workers = _Cluster(tmp_path, "preempted", *flags)
  workers.wait_for_step(3)
  workers.processes[1].send_signal(signal.SIGTERM)  # The non-chief machine is preempted.
  assert workers.wait() == [0, 0], workers.text(0)[-3000:]
  saved = []
  for i in range(2):
    match = re.search(r"Received SIGTERM on a worker of the cluster: saved a checkpoint at "
                      r"step (\d+)", workers.text(i))
    assert match, workers.text(i)[-3000:]
    saved.append(int(match.group(1)))
  assert saved[0] == saved[1] >= 3
  assert _fingerprint(workers.text(0)) == _fingerprint(workers.text(1))
  assert f"ckpt-{saved[0]}.index" in os.listdir(model_dir)

  # A restarted cluster resumes from the chief's checkpoint...
  again = _Cluster(tmp_path, "resumed", *flags)
  again.wait_for_step(saved[0] + 2)
  assert f"Resumed from {model_dir}/ckpt-{saved[0]} at step {saved[0]}." in again.text(0)
  assert f"Received the chief's weights at step {saved[0]}." in again.text(1)
  # ...and when a worker dies, the chief stops with one clear error, not a hang.
  again.processes[1].kill()
  assert again.processes[0].wait(timeout=LAUNCH_TIMEOUT) == 1
  again.kill()
  chief = again.text(0)
  assert "The cluster failed during step" in chief, chief[-3000:]
  assert "train.py: error: the cluster stopped: a worker died" in chief
  assert "restart every worker with the same command" in chief
  assert "Traceback" not in chief
