"""Distributed training of the MVAE: the step and the loop.

The step (`Trainer.train_step`) is a pure per-replica function run under a
`tf.distribute` strategy (`distribution`): each replica computes the summed negative ELBO
of its share of the global batch divided by the *global* batch size, so that the
all-reduced gradients are exactly those of the mean loss over the global batch, whatever
the number of replicas. The reparameterisation noise eps travels with the batch
(`training_data`), so a step is a deterministic function of (weights, batch): one replica
and two replicas compute the same step.

The loop (`train`) checks the model directory and records the run's configuration
(`run_dir`), resumes from and saves checkpoints (`checkpoints`), writes TensorBoard
summaries and a progress line, and stops cleanly on SIGTERM, SIGINT or a preemption notice.
"""

import dataclasses
import hashlib
import shutil
import signal
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from mvae_tf import checkpoints
from mvae_tf import config as config_lib
from mvae_tf import distribution
from mvae_tf import losses
from mvae_tf import machine
from mvae_tf import model as model_lib
from mvae_tf import native_ops
from mvae_tf import run_dir
from mvae_tf import schedule
from mvae_tf import training_data
from mvae_tf import warm_start

NUM_SUMMARY_IMAGES = 8


def weights_fingerprint(model):
  """A short hex digest of the model's weights, equal on workers that hold the same weights."""
  digest = hashlib.sha256()
  for variable in model.variables:
    digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
  return digest.hexdigest()[:16]


class TrainingDiverged(RuntimeError):
  """The loss or a gradient became NaN or infinite; nothing after the last finite step was saved."""


class Trainer:
  """The model, its optimizer and the distributed train step, all built in the strategy.

  Args:
    model_config: a `ModelConfig`.
    train_config: a `TrainConfig`.
    strategy: a `tf.distribute.Strategy`; `train_config.batch_size` must divide evenly.
    check_finite: whether each step also reports `nonfinite`, the number of replicas whose
      loss or gradient norm is NaN or infinite (one reduction over the gradients; its cost
      is in the benchmark).
    native_kernels: whether a step on CPUs runs the kernels `native_ops` compiles for
      this machine (the same functions as TF's ops, faster) for the bf16 ELU gradient, the
      bilinear upsampling and the softmax pooling. When they cannot be built, the step uses
      TF's ops and `native_kernel_error` says why. GPU steps use TF's ops whatever this is.
  """

  def __init__(self, model_config, train_config, strategy, check_finite=True,
               native_kernels=True):
    distribution.check_replicas(train_config, strategy)
    train_config = config_lib.resolve_train_config(model_config, train_config)
    self.model_config = model_config
    self.train_config = train_config
    self.strategy = strategy
    self.check_finite = check_finite
    with strategy.scope():
      keras.utils.set_random_seed(train_config.seed)
      self.model = model_lib.build_model(model_config, train_config.precision)
      self.learning_rate = schedule.LogLinearDecay(
          train_config.learning_rate, train_config.final_learning_rate,
          train_config.learning_rate_steps)
      self.optimizer = keras.optimizers.Adam(self.learning_rate)
      # A Keras 3 optimizer must create its slots inside the scope, or the first
      # distributed step fails.
      self.optimizer.build(self.model.trainable_variables)
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
    self.kernels, self.native_kernel_error = None, None  # `native_ops.Kernels` or None.
    if native_kernels and not tf.config.list_logical_devices("GPU"):
      try:
        self.kernels = native_ops.load()
      except native_ops.BuildError as e:
        self.native_kernel_error = str(e)
    self._step = tf.function(self._distributed_step)
    self._gradients = None  # global_gradients' tf.function, made on first use.

  @property
  def step(self):
    return int(self.optimizer.iterations.numpy())

  def _replica_gradients(self, batch):
    """One replica's gradients of its share of the global mean objective, and its *summed*
    loss terms."""
    # Traced in each replica's thread: the scope must open here (`native_ops`).
    with tf.GradientTape() as tape, native_ops.training_kernels(self.kernels):
      outputs = self.model(batch["image"], noise=batch["noise"])
      terms = losses.negative_elbo(batch["image"], outputs["logits"], outputs["kl"])
      warmup = self._warmup()
      objective = terms["nll"] + warmup * self.train_config.kl_weight * terms["kl"]
      if self.train_config.object_sparsity:
        objective += warmup * self.train_config.object_sparsity * losses.object_sparsity(
            outputs["kl"])
      if self.train_config.unselected_kl_weight:
        objective += self._unselected_kl_weight() * losses.unselected_kl(
            outputs["kl_map"], outputs["kl"], self.train_config.unselected_kl_free_nats)
      # Sum over this replica's examples / global batch: the all-reduce then sums the
      # replicas' gradients into the gradient of the global mean.
      loss = tf.nn.compute_average_loss(objective,
                                        global_batch_size=self.train_config.batch_size)
    gradients = tape.gradient(loss, self.model.trainable_variables)
    return gradients, {name: tf.reduce_sum(terms[name]) for name in ("nll", "kl", "loss")}

  def _replica_step(self, batch):
    """One replica's share of a step. Returns the replica's *summed* loss terms."""
    gradients, sums = self._replica_gradients(batch)
    variables = self.model.trainable_variables
    if self.check_finite:
      # The global norm is finite exactly when every gradient entry is. The update is
      # applied either way (a branch around it could leave replicas in different
      # all-reduces); the loop stops before a non-finite step is ever saved.
      finite = tf.math.is_finite(sums["loss"]) & tf.math.is_finite(
          tf.linalg.global_norm(gradients))
      sums["nonfinite"] = 1.0 - tf.cast(finite, tf.float32)
    self.optimizer.apply_gradients(zip(gradients, variables))
    return sums

  def _unselected_kl_weight(self):
    """The unselected cells' KL weight at the step being taken: `unselected_kl_weight`
    at steps 1..`unselected_kl_last_step` (every step when that is 0), then 0, the paper's
    objective (docs/counting_study.md, round 19): the last `unselected_kl_final_steps` of
    training, or the steps after `unselected_kl_steps`."""
    weight = self.train_config.unselected_kl_weight
    end = self.train_config.unselected_kl_last_step
    if not end:
      return weight
    # Step being taken = iterations + 1 <= end.
    return tf.where(self.optimizer.iterations < end, weight, 0.0)

  def _warmup(self):
    """The KL warm-up's factor at the step being taken: min(1, step / kl_warmup_steps)
    for steps 1, 2, ..., and 1 without warm-up. It weights the KL term (times beta,
    `kl_weight`) and the object sparsity cost."""
    warmup = self.train_config.kl_warmup_steps
    if not warmup:
      return 1.0
    step = tf.cast(self.optimizer.iterations + 1, tf.float32)
    return tf.minimum(1.0, step / warmup)

  def _distributed_step(self, dist_batch):
    per_replica = self.strategy.run(self._replica_step, args=(dist_batch,))
    nonfinite = per_replica.pop("nonfinite", None)
    sums = {name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in per_replica.items()}
    means = {name: value / self.train_config.batch_size for name, value in sums.items()}
    if nonfinite is not None:
      means["nonfinite"] = self.strategy.reduce(tf.distribute.ReduceOp.SUM, nonfinite,
                                                axis=None)
    return means

  def global_gradients(self, dist_batch):
    """The gradient of the global batch's mean objective at the current weights and step,
    as the train step would apply it, without applying it (a list over
    `model.trainable_variables`)."""
    if self._gradients is None:
      def gradients(batch):
        per_replica, _ = self.strategy.run(self._replica_gradients, args=(batch,))
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None)
                for g in per_replica]
      self._gradients = tf.function(gradients)
    return self._gradients(dist_batch)

  def start_from(self, step, second_moments):
    """Makes the optimizer continue at `step` with Adam's first moments zero and its second
    moments `second_moments` (a list over `model.trainable_variables`), for a run that
    starts from trained weights (`warm_start`). Each variable's moments are found through
    the optimizer's own index (Keras 3's Adam keeps them in `_momentums` and
    `_velocities`, in the order of `_get_variable_index`)."""
    self.optimizer.iterations.assign(step)
    for variable, value in zip(self.model.trainable_variables, second_moments):
      index = self.optimizer._get_variable_index(variable)  # pylint: disable=protected-access
      self.optimizer._momentums[index].assign(tf.zeros_like(value))  # pylint: disable=protected-access
      self.optimizer._velocities[index].assign(value)  # pylint: disable=protected-access

  def distribute(self, dataset):
    """Distributes a dataset of global batches (one worker; tests and the benchmark)."""
    return self.strategy.experimental_distribute_dataset(dataset)

  def broadcast_from_chief(self):
    """Sets the model and optimizer variables of every worker to the chief's.

    In a multi-worker run only the chief restores the checkpoint (the others may not even
    see the model directory); this makes every worker continue from the chief's weights,
    Adam moments and step. Replica 0 is the chief's first device: each variable becomes
    the all-reduced sum of replica 0's value and zeros from every other replica.
    """
    variables = list(self.model.variables) + list(self.optimizer.variables)

    def replica_values():
      context = tf.distribute.get_replica_context()
      first = tf.equal(context.replica_id_in_sync_group, 0)
      return [context.all_reduce(tf.distribute.ReduceOp.SUM,
                                 tf.where(first, tf.convert_to_tensor(v), tf.zeros_like(v)))
              for v in variables]

    values = tf.function(lambda: self.strategy.run(replica_values))()
    for variable, value in zip(variables, values):
      # Every replica holds the same value; assigning one local copy in cross-replica
      # context updates all of this worker's copies.
      variable.assign(self.strategy.experimental_local_results(value)[0])

  def train_step(self, dist_batch):
    """One optimizer step on a distributed global batch.

    Returns the batch's mean nll, kl and loss, and with `check_finite` also `nonfinite`,
    the number of replicas whose loss or gradients were not finite.
    """
    return self._step(dist_batch)


def _kl_map_images(kl_map):
  """KL maps [B, H, W] as 64x64 greyscale images, each scaled to its own maximum."""
  normalised = kl_map / (tf.reduce_max(kl_map, axis=[1, 2], keepdims=True) + 1e-6)
  images = tf.image.resize(normalised[..., None], [64, 64], method="nearest")  # [B,64,64,1]
  return tf.tile(images, [1, 1, 1, 3])  # [B, 64, 64, 3]


class _StopFlag:
  """Turns `signals` (SIGTERM and SIGINT) into a request to checkpoint and stop after this step."""

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signal_name = None
    self._signals = signals
    self._previous = {}

  def __enter__(self):
    for sig in self._signals:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _means(metrics):
  """Mean nll, kl and loss over a list of per-step metric dicts."""
  return {k: float(np.mean([m[k] for m in metrics])) for k in ("nll", "kl", "loss")}


def _format_duration(seconds):
  seconds = int(seconds)
  days, seconds = divmod(seconds, 86400)
  hours, seconds = divmod(seconds, 3600)
  minutes, seconds = divmod(seconds, 60)
  if days:
    return f"{days}d{hours:02d}h"
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{seconds:02d}s"


class ClusterError(RuntimeError):
  """A multi-worker step failed: a worker died, stopped answering, or a collective timed out."""


def _cluster_error_summary(error):
  """The lines of a failed collective's error that say which worker failed, and how."""
  lines = [line.strip() for line in str(error).splitlines()]
  for i, line in enumerate(lines):
    if "unhealthy" in line or "heartbeat" in line.lower():
      tasks = [l for l in lines[i + 1:i + 9] if l.startswith("/job:")]
      return " ".join([line.split("Error reported from ")[-1]] + tasks)
  for line in lines:
    if "timed out" in line.lower() or "deadline" in line.lower():
      return line
  return config_lib.error_summary(error)


class _Preempted(Exception):
  """Raised by the preemption handler once the whole cluster has saved its checkpoint."""


def _raise_preempted():
  raise _Preempted()


@dataclasses.dataclass(frozen=True)
class LoopOptions:
  """How often the loop reports and saves.

  Attributes:
    checkpoint_every_secs: seconds between checkpoints (one is also written at the end and on
      SIGTERM or SIGINT).
    checkpoint_every_steps: 0, or steps between checkpoints instead of seconds. A
      multi-worker run needs it: every worker must save at the same step, and their clocks
      differ.
    log_every_secs: seconds between progress lines.
    summary_every_steps: steps between TensorBoard scalar summaries.
    image_every_steps: steps between TensorBoard image summaries.
    max_checkpoints: how many checkpoints to keep.
  """
  checkpoint_every_secs: float = 300.0
  checkpoint_every_steps: int = 0
  log_every_secs: float = 15.0
  summary_every_steps: int = 100
  image_every_steps: int = 2000
  max_checkpoints: int = 3


def train(model_config, train_config, model_dir, strategy=None, options=LoopOptions(),
          log=print, dataset_transform=None, restore_from=None, init_from=None,
          native_kernels=True):
  """Trains until `train_config.train_steps`, resuming from `model_dir`'s latest checkpoint.

  Returns the step reached. A finished run returns at once; SIGTERM or SIGINT saves a
  checkpoint and returns early. A step whose loss or gradients are not finite raises
  `TrainingDiverged` before anything more is saved, so the checkpoints on disk are all of
  finite steps.

  Under a `MultiWorkerMirroredStrategy` (`distribution.make_multi_worker_strategy`) every
  worker runs this function. The chief alone checks, restores and writes `model_dir`
  (config.json, checkpoints, TensorBoard); the others receive the chief's weights
  (`Trainer.broadcast_from_chief`), take part in every save through a scratch directory,
  and need not see `model_dir` at all. Checkpoints are taken every
  `options.checkpoint_every_steps`. SIGTERM to any worker (a preempted machine) makes the
  whole cluster save one checkpoint at the same step and return, through
  `tf.distribute.experimental.PreemptionCheckpointHandler`. A worker that dies or stops
  answering makes the others raise `ClusterError` (TF's coordination service and the
  strategy's collective timeout bound the wait).

  `restore_from`, a checkpoint name in `model_dir` such as "ckpt-1200", resumes from it
  instead of the latest (for when the latest cannot be read).

  `init_from`, an export's version directory (`export.py`), starts a model directory that
  has no checkpoint from the exported weights and step (`warm_start`); once the run has a
  checkpoint it resumes from that instead. One worker only.

  `dataset_transform`, if given, maps each input pipeline's `tf.data.Dataset` before it is
  distributed (tests use it to inject faults).

  `native_kernels`: `Trainer`'s; a kernel that cannot be built is reported in one line.

  Raises:
    config.ConfigError: before any work, for a model directory of another configuration,
      one that cannot be written, or a checkpoint that cannot be restored.
    TrainingDiverged: at a non-finite step, which is not saved.
    checkpoints.CheckpointWriteError: when a checkpoint cannot be written (after saving a
      rescue copy).
    ClusterError: in a multi-worker run, when a step fails because of another worker.
  """
  train_config = config_lib.resolve_train_config(model_config, train_config)
  strategy = strategy or distribution.make_strategy()
  distribution.check_replicas(train_config, strategy)
  multi_worker = distribution.is_multi_worker(strategy)
  if multi_worker and options.checkpoint_every_steps < 1:
    raise config_lib.ConfigError(
        "a multi-worker run checkpoints every --checkpoint_every_steps steps (its workers "
        f"must save at the same step); received {options.checkpoint_every_steps}")
  training_data.check_data(train_config)
  chief = strategy.extended.should_checkpoint
  exported = None
  if init_from:
    if multi_worker:
      raise config_lib.ConfigError(config_lib.INIT_FROM_MULTI_WORKER)
    if tf.train.latest_checkpoint(model_dir) is None:
      exported = warm_start.read_export(init_from)
      warm_start.check_matches(exported, model_config)
      if exported.step >= train_config.train_steps:
        raise config_lib.ConfigError(
            f"--init_from={init_from} is at step {exported.step}, not below --train_steps="
            f"{train_config.train_steps}: give a larger --train_steps")
    else:
      log(f"--init_from={init_from} is not used: {model_dir} has a checkpoint to resume.")
  if chief:
    run_dir.check_model_dir(model_dir, model_config, train_config)
  warning = machine.bfloat16_warning(train_config.precision,
                                     machine.gpu_compute_capabilities())
  if warning:
    log(warning)
  last = train_config.unselected_kl_last_step
  if last:
    log(f"The unselected cells' KL is charged at steps 1-{last}; steps {last + 1}-"
        f"{train_config.train_steps} take the paper's objective without it.")
  saver = None
  try:
    trainer = Trainer(model_config, train_config, strategy, native_kernels=native_kernels)
    if trainer.native_kernel_error:
      log(f"The kernels compiled for this CPU are not used, so each step runs TF's slower "
          f"ops: {trainer.native_kernel_error}")
    saver = checkpoints.CheckpointWriter(trainer.checkpoint, model_dir, model_config,
                                         train_config, options.max_checkpoints, chief)
    return _train_loop(trainer, saver, options, log, dataset_transform, restore_from,
                       multi_worker, exported)
  except tf.errors.OpError as e:
    if not multi_worker:
      raise
    latest = saver.latest if saver else None
    raise ClusterError(
        f"the cluster stopped: a worker died, stopped answering, or failed "
        f"({type(e).__name__}: {_cluster_error_summary(e)}). The chief's latest checkpoint "
        f"is {latest or 'in --model_dir'}; restart every worker with the same command to "
        "resume from it") from None


def _warm_start(trainer, exported, log, dataset_transform):
  """Starts `trainer` from an export's weights and step, with Adam's second moments the
  mean squared gradient over `warm_start.MOMENT_BATCHES` batches of the stream at that
  step (see `warm_start`)."""
  warm_start.assign_weights(trainer.model, exported)
  # The gradients' KL warm-up factor is the exported step's.
  trainer.optimizer.iterations.assign(exported.step)
  batches = iter(training_data.distributed_training_data(trainer.strategy, trainer.model_config,
                                           trainer.train_config, exported.step,
                                           dataset_transform))
  moments = warm_start.mean_squared_gradients(
      trainer.global_gradients(next(batches)) for _ in range(warm_start.MOMENT_BATCHES))
  trainer.start_from(exported.step, moments)
  log(f"Started from the export {exported.path} at step {exported.step} (Adam's second "
      f"moments from {warm_start.MOMENT_BATCHES} batches).")


def _train_loop(trainer, saver, options, log, dataset_transform, restore_from,
                multi_worker, exported=None):
  """The body of `train`, once the trainer and its checkpoint writer exist."""
  strategy, model_dir = trainer.strategy, saver.model_dir
  model_config, train_config = trainer.model_config, trainer.train_config
  if saver.chief:
    restored = checkpoints.restore_latest(trainer.checkpoint, saver.manager, model_dir,
                                          restore_from)
    if restored:
      log(f"Resumed from {restored} at step {trainer.step}.")
    elif exported is not None:
      _warm_start(trainer, exported, log, dataset_transform)
    run_dir.record_config(model_dir, model_config, train_config)
    if exported is not None and not restored:
      warm_start.record(model_dir, exported, warm_start.MOMENT_BATCHES)
  if multi_worker:
    trainer.broadcast_from_chief()
    if not saver.chief:
      log(f"Received the chief's weights at step {trainer.step}.")
  start_step = trainer.step
  total = train_config.train_steps
  if start_step >= total:
    log(f"Already trained to step {start_step} >= --train_steps={total}; nothing to do.")
    return start_step

  iterator = iter(training_data.distributed_training_data(
      strategy, model_config, train_config, start_step, dataset_transform))
  summary_images = training_data.summary_images(train_config, NUM_SUMMARY_IMAGES)

  @tf.function(autograph=False)
  def reconstruct(images):
    outputs = trainer.model(images)
    return tf.sigmoid(outputs["logits"]), _kl_map_images(outputs["kl_map"])

  # TensorBoard is the chief's; the other workers write nothing.
  writer = (tf.summary.create_file_writer(model_dir) if saver.chief
            else tf.summary.create_noop_writer())
  step_fn = trainer.train_step
  preemption_dir = None
  if multi_worker:
    # The handler turns SIGTERM on any worker into one checkpoint of the whole cluster at
    # the same step: it only coordinates, our writer saves (save_fn), and exit_fn hands
    # control back to this loop. Its own (empty) checkpoint manager restores nothing.
    preemption_dir = tempfile.mkdtemp(prefix="mvae-preemption-")
    handler = tf.distribute.experimental.PreemptionCheckpointHandler(
        strategy.cluster_resolver,
        tf.train.CheckpointManager(tf.train.Checkpoint(), preemption_dir, max_to_keep=1),
        termination_config=tf.distribute.experimental.TerminationConfig(
            exit_fn=_raise_preempted, save_fn=lambda: saver.save(trainer.step)))
    step_fn = lambda batch: handler.run(trainer.train_step, batch)
  log(machine.describe({**machine.cpu_facts(), **machine.tensorflow_facts()}))
  log(f"Training {model_config.model} on {strategy.num_replicas_in_sync} replica(s)"
      f"{distribution.cpu_threads_note(strategy)} from step {start_step} to {total}: global batch "
      f"{train_config.batch_size}, {train_config.precision}"
      f"{', kernels ' + trainer.kernels.description if trainer.kernels else ''}.")
  step = start_step
  since_summary, since_log = [], []  # Each step's metrics since the last summary / log.
  last_log = last_ckpt = time.time()
  images_since_log = 0
  stopped_by = None
  # A multi-worker run leaves SIGTERM to the preemption handler, and lets SIGINT end this
  # worker at once (the others then stop with ClusterError).
  signals = () if multi_worker else (signal.SIGTERM, signal.SIGINT)
  try:
    with _StopFlag(signals) as stop, writer.as_default():
      while step < total and stop.signal_name is None:
        metrics = step_fn(next(iterator))
        step += 1
        if float(metrics["nonfinite"]):
          saved = saver.latest
          raise TrainingDiverged(
              f"the loss or a gradient became NaN or infinite at step {step}; stopped "
              f"without saving it, so the latest checkpoint is "
              f"{saved or 'none (no step was saved)'}. Rerun with a lower --learning_rate "
              f"(this run's is {train_config.learning_rate:g}) and a new --model_dir, or "
              "resume this one as it is")
        images_since_log += train_config.batch_size
        since_summary.append(metrics)
        since_log.append(metrics)
        if step % options.summary_every_steps == 0 or step == total:
          means = _means(since_summary)
          since_summary = []
          for name, value in means.items():
            tf.summary.scalar(f"train/{name}", value, step=step)
          tf.summary.scalar("train/elbo", -means["loss"], step=step)
          tf.summary.scalar("train/learning_rate", trainer.learning_rate(step), step=step)
        if saver.chief and (step % options.image_every_steps == 0 or step == total):
          reconstructions, kl_maps = reconstruct(summary_images)
          tf.summary.image("inputs", summary_images, step=step,
                           max_outputs=NUM_SUMMARY_IMAGES)
          tf.summary.image("reconstructions", reconstructions, step=step,
                           max_outputs=NUM_SUMMARY_IMAGES)
          tf.summary.image("kl_maps", kl_maps, step=step, max_outputs=NUM_SUMMARY_IMAGES)
        now = time.time()
        if now - last_log >= options.log_every_secs or step == total:
          rate = images_since_log / (now - last_log)
          means = _means(since_log)
          eta = (total - step) * train_config.batch_size / max(rate, 1e-9)
          tf.summary.scalar("train/images_per_second", rate, step=step)
          log(f"step {step}/{total} | {rate:.1f} img/s | ETA {_format_duration(eta)} | "
              f"loss {means['loss']:.2f} (nll {means['nll']:.2f}, kl {means['kl']:.2f}) | "
              f"lr {float(trainer.learning_rate(step)):.2e}")
          since_log, images_since_log, last_log = [], 0, now
          writer.flush()
        if options.checkpoint_every_steps:
          due = step % options.checkpoint_every_steps == 0 and step < total
        else:
          due = now - last_ckpt >= options.checkpoint_every_secs
        if due:
          saver.save(step)
          last_ckpt = now
      saver.save(step)
      writer.flush()
    stopped_by = stop.signal_name
  except _Preempted:
    stopped_by = "SIGTERM on a worker of the cluster"
  except tf.errors.OpError:
    if multi_worker:
      log(f"The cluster failed during step {step + 1}.")
    raise
  finally:
    if preemption_dir:
      shutil.rmtree(preemption_dir, ignore_errors=True)
  fingerprint = weights_fingerprint(trainer.model)
  if stopped_by:
    log(f"Received {stopped_by}: saved a checkpoint at step {step} and stopped "
        f"(weights {fingerprint}).")
  else:
    log(f"Finished: saved a checkpoint at step {step} (weights {fingerprint}).")
  sys.stdout.flush()
  return step
