"""The cluster of a multi-worker run, read from `TF_CONFIG` as TensorFlow documents it.

`train.py --strategy=multi_worker` trains with `tf.distribute.MultiWorkerMirroredStrategy`,
which reads the cluster from the `TF_CONFIG` environment variable of every worker process:

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}'

Every worker gets the same "cluster" and its own "task". The chief (the "chief" job's task
when the cluster has one, else worker 0) reads and writes the model directory; see
`training.train`. This module only checks the variable, before TensorFlow starts, so that
a wrong one is one clear error instead of a worker that waits for peers that never come.
It imports no TensorFlow.
"""

import dataclasses
import json
import os

from mvae_tf.config import ConfigError
from mvae_tf.config import is_int

ENV_VAR = "TF_CONFIG"
JOBS = ("chief", "worker")
EXAMPLE = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
           '"task": {"type": "worker", "index": 0}}')


@dataclasses.dataclass(frozen=True)
class Cluster:
  """What `TF_CONFIG` says of the cluster and of this process.

  Attributes:
    jobs: job name -> tuple of "host:port" addresses ("chief" and/or "worker").
    task_type: this process's job.
    task_index: this process's index in its job.
  """
  jobs: dict
  task_type: str
  task_index: int

  @property
  def num_workers(self):
    return sum(len(addresses) for addresses in self.jobs.values())

  @property
  def is_chief(self):
    if "chief" in self.jobs:
      return self.task_type == "chief"
    return self.task_index == 0


def _fail(what):
  return ConfigError(f"--strategy=multi_worker: {ENV_VAR} {what}. Every worker needs one "
                     f"such as {ENV_VAR}='{EXAMPLE}' (README, \"Training on several "
                     "machines\")")


def _check_address(job, address):
  host, sep, port = str(address).rpartition(":")
  if not (isinstance(address, str) and sep and host and port.isdigit()
          and 0 < int(port) < 65536):
    raise _fail(f"has {address!r} in cluster.{job}, which is not \"host:port\"")


def read_cluster(environ=None):
  """Parses and checks `TF_CONFIG`; returns a `Cluster` or raises ConfigError naming the fault."""
  environ = os.environ if environ is None else environ
  text = environ.get(ENV_VAR, "")
  if not text.strip():
    raise _fail("is not set")
  try:
    spec = json.loads(text)
  except json.JSONDecodeError as e:
    raise _fail(f"is not JSON ({e.msg} at character {e.pos})") from None
  if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict):
    raise _fail("has no \"cluster\" object")
  cluster = spec["cluster"]
  unknown = sorted(set(cluster) - set(JOBS))
  if unknown:
    raise _fail(f"has jobs {unknown}; synchronous training takes only {list(JOBS)}")
  jobs = {}
  for job, addresses in cluster.items():
    if not isinstance(addresses, list) or not addresses:
      raise _fail(f"has cluster.{job} = {addresses!r}, not a non-empty list of addresses")
    for address in addresses:
      _check_address(job, address)
    jobs[job] = tuple(addresses)
  if len(jobs.get("chief", ())) > 1:
    raise _fail(f"lists {len(jobs['chief'])} chiefs; a cluster has at most one")
  all_addresses = [a for addresses in jobs.values() for a in addresses]
  repeated = sorted({a for a in all_addresses if all_addresses.count(a) > 1})
  if repeated:
    raise _fail(f"lists {repeated} more than once; every task needs its own port")
  task = spec.get("task")
  if not isinstance(task, dict):
    raise _fail("has no \"task\" object (this worker's type and index)")
  task_type, task_index = task.get("type"), task.get("index")
  if task_type not in jobs:
    raise _fail(f"has task.type={task_type!r}, which is not a job of the cluster "
                f"({', '.join(jobs)})")
  if not is_int(task_index) or not 0 <= task_index < len(jobs[task_type]):
    raise _fail(f"has task.index={task_index!r}; cluster.{task_type} has "
                f"{len(jobs[task_type])} address(es), so it must be 0 to "
                f"{len(jobs[task_type]) - 1}")
  return Cluster(jobs=jobs, task_type=task_type, task_index=task_index)
