r"""Where the training step spends its time: a `tf.profiler` trace read by op type.

  pip install xprof                 # reads the trace; not a dependency of mvae_tf
  python benchmarks/profile_step.py [--sprites 3] [--precision float32] [--steps 10]

Builds the default model and the full training step (forward, backward, Adam) exactly as
`benchmark.py` times it (batch 64, N = sprites + 2, one cached batch), warms it up, traces
`--steps` steps with `tf.profiler.experimental`, and prints the host op time of each op
type (xprof's `framework_op_stats`, self time, summed over the trace) and its share of the
op time (idle threads left out), largest first, with the 2-3 costliest ops of each type.
`--logdir` keeps the trace for TensorBoard's profile plugin. Shares are what this tool is for: absolute times include
the profiler's overhead. It is a measuring tool only; the test suite does not run it.
"""

import argparse
import collections
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def trace_step(logdir, sprites, precision, batch, steps):
  """Traces `steps` training steps into `logdir`; returns the .xplane.pb files written."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from mvae_tf import config, distribution, training, training_data
  # pylint: enable=g-import-not-at-top
  model_config = config.ModelConfig(num_objects=sprites + 2)
  train_config = config.TrainConfig(num_sprites=sprites, batch_size=batch, precision=precision)
  trainer = training.Trainer(model_config, train_config, distribution.make_strategy())
  dataset = training_data.training_dataset(model_config, train_config).take(1).cache().repeat()
  batch_data = next(iter(trainer.distribute(dataset)))
  for _ in range(5):  # Warm-up: tracing, oneDNN's primitive caches.
    float(trainer.train_step(batch_data)["loss"])
  tf.profiler.experimental.start(logdir)
  for _ in range(steps):
    metrics = trainer.train_step(batch_data)
  float(metrics["loss"])
  tf.profiler.experimental.stop()
  return [os.path.join(root, name) for root, _, names in os.walk(logdir)
          for name in names if name.endswith(".xplane.pb")]


def op_table(xplanes):
  """Rows of xprof's framework_op_stats as dicts (one per op), host ops only."""
  from xprof.convert import raw_to_tool_data  # pylint: disable=g-import-not-at-top
  data, _ = raw_to_tool_data.xspace_to_tool_data(xplanes, "framework_op_stats", {})
  tables = json.loads(data)
  table = tables[0] if isinstance(tables, list) else tables
  ids = [column["id"] for column in table["cols"]]
  rows = [dict(zip(ids, (cell["v"] if cell else None for cell in row["c"])))
          for row in table["rows"]]
  return [row for row in rows if row.get("host_or_device") in (None, "Host")]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sprites", type=int, default=3)
  parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--top", type=int, default=25, help="op types to print")
  parser.add_argument("--logdir", default=None, help="keep the trace here")
  args = parser.parse_args()
  if args.sprites < 1 or args.batch < 1 or args.steps < 1:
    parser.error("--sprites, --batch and --steps must be positive")
  logdir = args.logdir or tempfile.mkdtemp(prefix="mvae_profile_")
  rows = op_table(trace_step(logdir, args.sprites, args.precision, args.batch, args.steps))
  by_type = collections.defaultdict(float)
  ops_of_type = collections.defaultdict(list)
  idle = sum(float(row["total_self_time"]) for row in rows if row["type"] == "IDLE")
  for row in rows:
    if row["type"] == "IDLE":  # Threads waiting, not an op.
      continue
    time = float(row["total_self_time"])
    by_type[row["type"]] += time
    ops_of_type[row["type"]].append((time, row["operation"]))
  total = sum(by_type.values())
  print(f"{args.sprites} sprites, {args.precision}, batch {args.batch}, {args.steps} steps: "
        f"{total / 1e3 / args.steps:.1f} ms of host op time per step (profiled), "
        f"{idle / 1e3 / args.steps:.1f} ms idle")
  print(f"{'share':>6} {'ms/step':>8}  op type: costliest ops")
  for op_type, time in sorted(by_type.items(), key=lambda item: -item[1])[:args.top]:
    worst = sorted(ops_of_type[op_type], reverse=True)[:3]
    names = ", ".join(f"{name.split('/', 1)[-1][-48:]} {t / total:.1%}" for t, name in worst)
    print(f"{time / total:6.1%} {time / 1e3 / args.steps:8.2f}  {op_type}: {names}")


if __name__ == "__main__":
  main()
