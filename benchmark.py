r"""How fast mvae_tf trains and serves on this machine, against the machine's own limit.

  python benchmark.py [--json=b.json] [--quick]

Measures, in one process (one child process for the split CPU) and after warm-up, each
figure the median of several repeats:
  * the machine: CPU model and flags, cores, TF version, oneDNN on or off, GPUs;
  * a large square matmul, fp32 (and bfloat16 where the hardware has bf16 units): the
    machine's practical FLOP rate;
  * the full training step (forward, backward, Adam) at 3 and 8 sprites (N = sprites + 2),
    batch 64, on one cached batch so that the step alone is timed, in fp32 and, where offered,
    mixed_bfloat16 (and its ratio to fp32): images/s, GFLOP/s from the analytic count
    (mvae_tf/flops.py) and that rate as a fraction of the fp32 matmul timed in turns with
    it; without GPUs, also the same step with the CPU split into --cpu_replicas replicas
    (train.py --num_cpu_devices), timed in a child process (TF fixes its threads when it
    starts); and, at the first sprite count, the fp32 step without its NaN/Inf check. At each
    sprite count all of these are timed in turns, repeat by repeat, so that every ratio
    compares figures of the same minutes (this VM's speed moved by up to 30% within a
    session);
  * the input pipeline's images/s and its ratio to the fastest training figure (it must stay
    >= 10 so that data never holds training back);
  * serving: `encode` and `decode` through a freshly exported SavedModel loaded with
    tf.saved_model.load (latency at batch 1, throughput at batch 256), beside the live Keras
    model's;
  * the process's peak resident memory.

Prints a table; --json also writes every figure (written to a temporary name, then renamed).
--quick runs tiny sizes (for the test suite): its figures mean nothing.
"""

import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN kernels on every CPU (README).

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging as absl_logging

from mvae_tf import native_ops  # pylint: disable=g-import-not-at-top  (no TensorFlow)

flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
flags.DEFINE_bool("quick", False, "Tiny sizes and few repeats, to check that it runs.")
flags.DEFINE_list("sprites", ["3", "8"], "Sprite counts to time training at.")
flags.DEFINE_integer("cpu_replicas", 2, "Also time the training step with the CPU split into "
                     "this many replicas (train.py --num_cpu_devices), in a child process; 0 "
                     "or 1: don't. Skipped where GPUs are visible.")
flags.DEFINE_list("precisions", None, "Training precisions to time (float32, "
                  "mixed_bfloat16); default: float32, and mixed_bfloat16 where the hardware "
                  "has bf16 units.")
flags.DEFINE_string("kernel_march", native_ops.NATIVE, "The instruction set of the kernels "
                    "compiled for the CPU (the compiler's -march): native, all of this CPU's; or a "
                    "narrower one, such as x86-64-v3 (AVX2, no AVX-512) with "
                    "ONEDNN_MAX_CPU_ISA=AVX2 in the environment, to time the step as an "
                    "AVX2-only CPU would run it.")
FLAGS = flags.FLAGS

# Precision names in the JSON keys, as the issue that asked for them spells them.
_PRECISION_KEYS = {"float32": "fp32", "mixed_bfloat16": "mixed_bfloat16"}


class Sizes:
  """What a full or a --quick run measures."""

  def __init__(self, quick):
    self.batch = 4 if quick else 64
    self.matmul = 256 if quick else 2048
    self.repeats = 2 if quick else 7
    self.steps = 2 if quick else 10  # training steps per repeat
    self.warmup = 1 if quick else 5
    self.latency_calls = 5 if quick else 200
    self.serving_batch = 8 if quick else 256


def throughput(fn, work):
  """`work / seconds` of one call of `fn`."""
  start = time.perf_counter()
  fn()
  return work / (time.perf_counter() - start)


def _median_rate(fn, work, repeats, warmup):
  """Median of `work / seconds` over `repeats` timed calls of `fn`, after `warmup` calls."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  for _ in range(warmup):
    fn()
  return float(np.median([throughput(fn, work) for _ in range(repeats)]))


def matmul_call(dtype, size):
  """A function running one [size, size] x [size, size] matmul in `dtype`, and its GFLOP."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.cast(tf.random.stateless_normal([size, size], seed=[1, 2]), dtype)
  matmul = tf.function(lambda x: tf.matmul(x, x))
  return (lambda: matmul(a).numpy()), 2 * size**3 / 1e9


def matmul_gflops(dtype, size, repeats):
  """GFLOP/s of a [size, size] x [size, size] matmul in `dtype`."""
  call, gflop = matmul_call(dtype, size)
  return _median_rate(call, gflop, repeats, warmup=2)


def training_steps(num_sprites, precision, sizes, check_finite=True, jit_compile=False,
                   strategy=None, native_kernels=True, kernels=None, **model_settings):
  """A function that runs `sizes.steps` full training steps on one cached batch.

  `jit_compile` compiles each replica's forward and backward pass with XLA (Adam's update
  and the all-reduce stay outside); `benchmarks/xla_step.py` uses it to measure XLA.
  `strategy` defaults to `distribution.make_strategy()` (one replica on a CPU).
  `native_kernels` is `training.Trainer`'s (`benchmarks/native_step.py` compares);
  `kernels`, a `native_ops.Kernels`, replaces the ones it loads (`native_step.py
  --baseline=onednn_filter_grads` turns one of them off).
  `model_settings` are `config.ModelConfig` fields other than the defaults (such as
  `num_pooling`; `benchmarks/grid_step.py` times grids with them).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from mvae_tf import config, distribution, training, training_data
  # pylint: enable=g-import-not-at-top
  model_config = config.ModelConfig(num_objects=num_sprites + 2, **model_settings)
  train_config = config.TrainConfig(num_sprites=num_sprites, batch_size=sizes.batch,
                                    precision=precision)
  trainer = training.Trainer(model_config, train_config,
                             strategy or distribution.make_strategy(),
                             check_finite=check_finite, native_kernels=native_kernels)
  if trainer.native_kernel_error:
    print(f"native kernels: {trainer.native_kernel_error}", file=sys.stderr)
  if kernels is not None and trainer.kernels is not None:
    trainer.kernels = kernels  # Read when the step is first traced, below.
  if jit_compile:
    trainer._replica_gradients = tf.function(  # pylint: disable=protected-access
        trainer._replica_gradients, jit_compile=True)  # pylint: disable=protected-access
  dataset = training_data.training_dataset(model_config, train_config).take(1).cache().repeat()
  batch = next(iter(trainer.distribute(dataset)))

  def steps():
    for _ in range(sizes.steps):
      metrics = trainer.train_step(batch)
    float(metrics["loss"])  # Waits for the last step.

  return steps


def training_rate(num_sprites, precision, sizes, **settings):
  """Images/s of the full training step on one cached batch (`training_steps`' settings)."""
  steps = training_steps(num_sprites, precision, sizes, **settings)
  return _median_rate(steps, sizes.steps * sizes.batch, sizes.repeats, sizes.warmup)


_ANSWER = "replica_worker: "  # Starts each answer of `replica_worker`.


def load_kernels(march):
  """Loads the compiled kernels for `march` first, so that every `training.Trainer` of
  this process runs them (`native_ops.load`); returns the `BuildError`, or None."""
  try:
    native_ops.load(march=march)
  except native_ops.BuildError as e:
    return e
  return None


def kernel_march_error(march):
  """The error for a `march` asked for by name (not "native") whose kernels cannot be
  built, or None; the tools refuse such a flag before any work."""
  if march == native_ops.NATIVE:  # A failed build falls back to TF's ops, saying so.
    return None
  error = load_kernels(march)
  return f"--kernel_march {march!r}: {error}" if error else None


def replica_worker(replicas, quick, kernel_march=native_ops.NATIVE):
  """Times the training step on `replicas` CPU replicas, on request, in this fresh process.

  `make_strategy` splits the CPU and its threads (`distribution.cpu_threads`), which TF fixes
  when it starts, so this runs in a process of its own (`ReplicaWorker`). It reads lines
  from stdin: "build SPRITES PRECISION SETTINGS" builds that step (as `training_steps`, with
  the JSON object SETTINGS as its model settings) and warms it up, answering "ready"; it
  keeps the steps built for the same SPRITES, in one precision each. "time" answers the
  images/s of `sizes.steps` steps of the step last built, "time PRECISION" of that
  precision's. Answers start with `_ANSWER`, so that anything else a library prints to
  stdout cannot be taken for one.
  """
  import json  # pylint: disable=g-import-not-at-top
  from mvae_tf import distribution  # pylint: disable=g-import-not-at-top
  strategy = distribution.make_strategy(num_cpu_devices=replicas)
  load_kernels(kernel_march)  # A failure is the Trainer's to report.
  sizes, steps, sprites, last = Sizes(quick), {}, None, None
  answer = lambda text: print(f"{_ANSWER}{text}", flush=True)
  answer("started")
  for line in sys.stdin:
    command, *args = line.split(maxsplit=3)
    if command == "build":
      if args[0] != sprites:
        sprites, steps = args[0], {}
      last = args[1]
      steps[last] = training_steps(int(args[0]), args[1], sizes, strategy=strategy,
                                   **json.loads(args[2]))
      for _ in range(sizes.warmup):
        steps[last]()
      answer("ready")
    else:
      answer(throughput(steps[args[0] if args else last], sizes.steps * sizes.batch))


class ReplicaWorker:
  """A child process running `replica_worker`, so that its timings alternate with others'."""

  def __init__(self, replicas, quick, kernel_march=native_ops.NATIVE):
    self.replicas = replicas
    code = (f"import benchmark; benchmark.replica_worker({replicas}, {quick}, "
            f"{kernel_march!r})")
    self._process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    self._expect("started", self._answer())

  def _answer(self):
    """The worker's next answer ("" if it ended), other output passed through."""
    for line in self._process.stdout:
      if line.startswith(_ANSWER):
        return line[len(_ANSWER):]
      print(line, end="")
    return ""

  def _ask(self, request):
    self._process.stdin.write(request + "\n")
    self._process.stdin.flush()
    return self._answer()

  def _failed(self, answer):
    return RuntimeError(f"the process timing {self.replicas} CPU replica(s) failed (its "
                        f"error is above); it answered {answer!r}")

  def _expect(self, expected, answer):
    if answer.strip() != expected:
      raise self._failed(answer)

  def build(self, num_sprites, precision, **model_settings):
    """Builds and warms up the step of `num_sprites` in `precision` (`training_steps`); the
    worker keeps it beside the other precisions' of the same `num_sprites`."""
    import json  # pylint: disable=g-import-not-at-top
    self._expect("ready", self._ask(
        f"build {num_sprites} {precision} {json.dumps(model_settings)}"))

  def rate(self, precision=None):
    """Images/s of one timed repeat of the step built in `precision` for the sprite count
    last built (None: the step last built)."""
    answer = self._ask("time" if precision is None else f"time {precision}")
    try:
      return float(answer)
    except ValueError:
      raise self._failed(answer) from None

  def close(self):
    self._process.stdin.close()
    self._process.wait()


def compare_steps(description, variants, argv=None):
  """Times the training step of several variants alternately, for `benchmarks/*_step.py`.

  Parses `--sprites` (3), `--precision` (float32) and `--rounds` (2) from `argv`, prints
  the machine, then runs `training_rate` for each variant in turn, `--rounds` times, so
  that all of them see the same machine.

  Args:
    description: the tool's one-line description, for `--help`.
    variants: {name: keyword arguments of `training_rate`}, in the order to time them.
    argv: the arguments (None: sys.argv[1:]).
  """
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--sprites", type=int, default=3)
  parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args(argv)
  if args.sprites < 1 or args.rounds < 1:
    parser.error("--sprites and --rounds must be >= 1")
  from mvae_tf import machine  # pylint: disable=g-import-not-at-top
  print({**machine.cpu_facts(), **machine.tensorflow_facts()}, flush=True)
  sizes = Sizes(quick=False)
  for _ in range(args.rounds):
    for name, settings in variants.items():
      rate = training_rate(args.sprites, args.precision, sizes, **settings)
      print(f"{args.sprites} sprites, {args.precision}, {name}: {rate:.1f} img/s", flush=True)


def data_rate(num_sprites, sizes):
  """Images/s of the tf.data pipeline alone (rendering, batching, noise)."""
  from mvae_tf import config, training_data  # pylint: disable=g-import-not-at-top
  model_config = config.ModelConfig(num_objects=num_sprites + 2)
  train_config = config.TrainConfig(num_sprites=num_sprites, batch_size=sizes.batch)
  iterator = iter(training_data.training_dataset(model_config, train_config))
  batches = 10 * sizes.steps

  def take():
    for _ in range(batches):
      next(iterator)["image"].numpy()

  return _median_rate(take, batches * sizes.batch, sizes.repeats, warmup=1)


def _latency_and_throughput(fn, single, batched, sizes):
  """p50 and p99 milliseconds of `fn(single)`, and images/s of `fn(batched)`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  for _ in range(3):
    fn(single)
  times = []
  for _ in range(sizes.latency_calls):
    start = time.perf_counter()
    fn(single)
    times.append(1e3 * (time.perf_counter() - start))
  rate = _median_rate(lambda: fn(batched), sizes.serving_batch, sizes.repeats, warmup=1)
  return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
          "batch256_images_per_sec": rate}


def serving_figures(sizes):
  """encode/decode through a fresh SavedModel export, and the live Keras model beside it."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mvae_tf import config, export, model as model_lib  # pylint: disable=g-import-not-at-top
  model_config = config.ModelConfig(num_objects=5)
  model = model_lib.build_model(model_config)
  rng = np.random.RandomState(0)
  images = {n: tf.constant(rng.rand(n, 64, 64, 3).astype(np.float32))
            for n in (1, sizes.serving_batch)}
  latents = {n: tf.constant(rng.randn(n, 5, model_config.latent_dim).astype(np.float32))
             for n in (1, sizes.serving_batch)}
  live = {"encode": tf.function(model.encode), "decode": tf.function(model.decode)}
  figures = {}
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "1")
    export.write_saved_model(model, 0, path)
    loaded = tf.saved_model.load(path).signatures
    served = {"encode": lambda x: loaded["encode"](images=x)["kl_map"].numpy(),
              "decode": lambda z: loaded["decode"](latents=z)["logits"].numpy()}
    for name, inputs in (("encode", images), ("decode", latents)):
      figures[name] = _latency_and_throughput(served[name], inputs[1],
                                              inputs[sizes.serving_batch], sizes)
      live_fn = live[name]
      live_figures = _latency_and_throughput(
          lambda x, fn=live_fn: tf.nest.map_structure(lambda t: t.numpy(), fn(x)),
          inputs[1], inputs[sizes.serving_batch], sizes)
      figures[name].update({f"live_{k}": v for k, v in live_figures.items()})
  figures["batch"] = sizes.serving_batch
  return figures


def native_kernels_note(facts, march=native_ops.NATIVE):
  """Whether the training steps timed here run the kernels compiled for the CPU, for which
  instruction set (`march`, loaded here first), and if not why (`training.Trainer`'s
  `native_kernels`, on by default)."""
  if facts["gpus"]:
    return "not used: GPUs run TF's ops"
  error = load_kernels(march)
  if error:
    return f"not used: {error}"
  return native_ops.load().description


def print_machine_and_kernels(march):
  """Prints the machine and the kernels this process's training steps run (loading them
  for `march` first); returns the error, for a `march` named and not built, or None.
  The measuring tools of `benchmarks/` start with it."""
  from mvae_tf import machine  # pylint: disable=g-import-not-at-top
  facts = {**machine.cpu_facts(), **machine.tensorflow_facts()}
  print(machine.describe(facts), flush=True)
  error = kernel_march_error(march)
  if error:
    return error
  print(f"kernels: {native_kernels_note(facts, march)}", flush=True)
  return None


def run(sizes, sprite_counts, log):
  """Every figure, as the nested dict that --json writes."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mvae_tf import config, flops, machine  # pylint: disable=g-import-not-at-top
  facts = {**machine.cpu_facts(), **machine.tensorflow_facts()}
  bf16_hardware = bool(facts["gpus"]) or machine.cpu_has_bfloat16_units()
  precisions = FLAGS.precisions or ["float32"] + (["mixed_bfloat16"] if bf16_hardware else [])
  log(f"machine: {facts}")
  results = {"machine": facts, "batch_size": sizes.batch, "quick": FLAGS.quick,
             "native_kernels": native_kernels_note(facts, FLAGS.kernel_march)}

  matmul, matmul_gflop = matmul_call(tf.float32, sizes.matmul)
  results["matmul_gflops"] = {"fp32": _median_rate(matmul, matmul_gflop, sizes.repeats,
                                                   warmup=2)}
  if "mixed_bfloat16" in precisions:
    results["matmul_gflops"]["bfloat16"] = matmul_gflops(tf.bfloat16, sizes.matmul,
                                                         sizes.repeats)
  log(f"matmul {sizes.matmul}^2: {results['matmul_gflops']}")

  results["flops_per_image"], results["train"] = {}, {}
  split = None
  if FLAGS.cpu_replicas > 1 and not facts["gpus"] and sizes.batch % FLAGS.cpu_replicas == 0:
    split = ReplicaWorker(FLAGS.cpu_replicas, FLAGS.quick, FLAGS.kernel_march)
  images = sizes.steps * sizes.batch
  for num_sprites in sprite_counts:
    per_image = flops.training_flops_per_image(config.ModelConfig(num_objects=num_sprites + 2))
    results["flops_per_image"][str(num_sprites)] = per_image
    # Every ratio below is of figures timed in turns, repeat by repeat, so that each sees
    # the same machine: this VM's speed moved by up to 30% within minutes. In turn: each
    # precision's step; the fp32 matmul, the denominator of `fraction_of_matmul`; at the
    # first sprite count, the fp32 step without the NaN/Inf check; and each precision's
    # step on the split CPU, in the child process.
    timed = {(precision, "step"): (training_steps(num_sprites, precision, sizes), images)
             for precision in precisions}
    timed[("float32", "matmul")] = (matmul, matmul_gflop)
    if num_sprites == sprite_counts[0]:
      timed[("float32", "unchecked")] = (
          training_steps(num_sprites, "float32", sizes, check_finite=False), images)
    for _ in range(sizes.warmup):
      for function, _ in timed.values():
        function()
    split_precisions = precisions if split else []
    for precision in split_precisions:
      split.build(num_sprites, precision)
    rates = {name: [] for name in [*timed, *((p, "split") for p in split_precisions)]}
    for _ in range(sizes.repeats):
      for name, (function, work) in timed.items():
        rates[name].append(throughput(function, work))
      for precision in split_precisions:
        rates[(precision, "split")].append(split.rate(precision))
    medians = {name: float(np.median(values)) for name, values in rates.items()}
    by_precision = results["train"][str(num_sprites)] = {}
    for precision in precisions:
      rate = medians[(precision, "step")]
      gflops = rate * per_image / 1e9
      figures = by_precision[_PRECISION_KEYS[precision]] = {
          "images_per_sec": rate, "gflops": gflops,
          "matmul_gflops": medians[("float32", "matmul")],
          "fraction_of_matmul": gflops / medians[("float32", "matmul")]}
      log(f"train {num_sprites} sprites {precision}: {rate:.1f} img/s")
      if (precision, "split") in medians:
        split_rate = medians[(precision, "split")]
        figures["cpu_replicas"] = {"replicas": split.replicas, "images_per_sec": split_rate,
                                   "speedup": split_rate / rate}
        log(f"train {num_sprites} sprites {precision} on {split.replicas} CPU replicas, "
            f"in turns with the above: {split_rate:.1f} img/s")
    if ("float32", "unchecked") in medians:  # What the per-step NaN/Inf check costs.
      unchecked = medians[("float32", "unchecked")]
      by_precision["fp32"]["unchecked_images_per_sec"] = unchecked
      by_precision["fp32"]["nonfinite_check_cost"] = (
          unchecked / by_precision["fp32"]["images_per_sec"] - 1)
      log(f"train {num_sprites} sprites fp32 without the non-finite check: "
          f"{unchecked:.1f} img/s")
    if {"fp32", "mixed_bfloat16"} <= set(by_precision):  # Issue 8's goal: bf16 at 2x fp32.
      by_precision["mixed_bfloat16"]["speedup_over_fp32"] = (
          by_precision["mixed_bfloat16"]["images_per_sec"]
          / by_precision["fp32"]["images_per_sec"])
  if split:
    split.close()

  fastest = max(max(figures["images_per_sec"],
                    figures.get("cpu_replicas", {}).get("images_per_sec", 0))
                for by_precision in results["train"].values()
                for figures in by_precision.values())
  data_sprites = max(sprite_counts)
  rate = data_rate(data_sprites, sizes)
  results["data"] = {"images_per_sec": rate, "ratio_to_training": rate / fastest,
                     "num_sprites": data_sprites}
  log(f"data pipeline: {rate:.1f} img/s")

  results["serving"] = serving_figures(sizes)
  results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return results


def format_table(results):
  """The figures as readable lines."""
  from mvae_tf import machine  # pylint: disable=g-import-not-at-top
  lines = [
      machine.describe(results["machine"]),
      "matmul, timed first: " + ", ".join(f"{k} {v:.1f} GFLOP/s"
                             for k, v in results["matmul_gflops"].items()),
      f"training step, batch {results['batch_size']} (one cached batch; step only; "
      f"kernels {results['native_kernels']}; the fp32 matmul's GFLOP/s timed in turns with "
      "each sprite count's steps):",
      f"  {'sprites':>7} {'precision':>15} {'img/s':>9} {'GFLOP/s':>9} {'matmul':>9} "
      f"{'of matmul':>9} {'GFLOP/img':>9} {'x fp32':>7}"]
  for sprites, by_precision in results["train"].items():
    for precision, figures in by_precision.items():
      over_fp32 = figures.get("speedup_over_fp32")
      lines.append(f"  {sprites:>7} {precision:>15} {figures['images_per_sec']:9.1f} "
                   f"{figures['gflops']:9.1f} {figures['matmul_gflops']:9.1f} "
                   f"{figures['fraction_of_matmul']:9.2f} "
                   f"{results['flops_per_image'][sprites] / 1e9:9.3f}"
                   + ("" if over_fp32 is None else f" {over_fp32:6.2f}x"))
  for sprites, by_precision in results["train"].items():
    for precision, figures in by_precision.items():
      if "cpu_replicas" in figures:
        split = figures["cpu_replicas"]
        lines.append(f"  {sprites:>7} {precision:>15} {split['images_per_sec']:9.1f} on "
                     f"{split['replicas']} CPU replicas (train.py --num_cpu_devices="
                     f"{split['replicas']}): {split['speedup']:.2f}x one")
  for sprites, by_precision in results["train"].items():
    if "nonfinite_check_cost" in by_precision["fp32"]:
      figures = by_precision["fp32"]
      lines.append(f"  the NaN/Inf check per step ({sprites} sprites, fp32): step "
                   f"{figures['unchecked_images_per_sec']:.1f} img/s without it, cost "
                   f"{100 * figures['nonfinite_check_cost']:+.1f}%")
  data = results["data"]
  lines.append(f"data pipeline ({data['num_sprites']} sprites): "
               f"{data['images_per_sec']:.1f} img/s = {data['ratio_to_training']:.1f}x the "
               "fastest training step")
  serving = results["serving"]
  lines.append(f"serving (N=5): {'':8} {'p50 ms':>8} {'p99 ms':>8} "
               f"{'img/s @' + str(serving['batch']):>12}")
  for name in ("encode", "decode"):
    figures = serving[name]
    for label, prefix in (("SavedModel", ""), ("live Keras", "live_")):
      lines.append(f"  {name:>6} {label:>12} {figures[prefix + 'p50_ms']:8.2f} "
                   f"{figures[prefix + 'p99_ms']:8.2f} "
                   f"{figures[prefix + 'batch256_images_per_sec']:12.1f}")
  lines.append(f"peak RSS: {results['peak_rss_mb']:.0f} MB")
  return "\n".join(lines)


def main(argv):
  absl_logging.set_verbosity(absl_logging.WARNING)  # Keras's export logs every step at INFO.
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    sprite_counts = [int(s) for s in FLAGS.sprites]
    if not sprite_counts or min(sprite_counts) < 1:
      raise ValueError
  except ValueError:
    print(f"benchmark.py: error: --sprites must be integers >= 1; received {FLAGS.sprites}",
          file=sys.stderr)
    sys.exit(2)
  from mvae_tf import config  # pylint: disable=g-import-not-at-top
  if FLAGS.precisions and (set(FLAGS.precisions) - set(config.PRECISIONS)
                           or "float32" not in FLAGS.precisions):
    print(f"benchmark.py: error: --precisions must include float32 and name only "
          f"{', '.join(config.PRECISIONS)}; received {FLAGS.precisions}", file=sys.stderr)
    sys.exit(2)
  if FLAGS.cpu_replicas < 0:
    print(f"benchmark.py: error: --cpu_replicas must be >= 0; received {FLAGS.cpu_replicas}",
          file=sys.stderr)
    sys.exit(2)
  if FLAGS.json and not os.path.isdir(os.path.dirname(os.path.abspath(FLAGS.json))):
    print(f"benchmark.py: error: --json {FLAGS.json!r}: its directory does not exist",
          file=sys.stderr)
    sys.exit(2)
  error = kernel_march_error(FLAGS.kernel_march)
  if error:
    print(f"benchmark.py: error: {error}", file=sys.stderr)
    sys.exit(2)
  results = run(Sizes(FLAGS.quick), sprite_counts, log=lambda line: print(line, flush=True))
  print(format_table(results))
  if FLAGS.json:
    config.write_json_atomic(FLAGS.json, results)
    print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
  app.run(main)
