"""The training stream: generated (or Multi-dSprites) batches with their noise, per replica.

The reparameterisation noise eps of z = mu + sigma * eps (paper section 2) travels with
the batch: it is drawn in the input pipeline from the run's seed and the batch's index, so
a step is a deterministic function of (weights, batch) and one replica, two replicas or two
workers take the same step (`training`).
"""

import tensorflow as tf

from mvae_tf import data
from mvae_tf import multi_dsprites


def add_noise(batch, batch_index, num_objects, latent_dim, seed, batch_size, rows=None):
  """Adds `noise`, the eps [B, N, D] of z = mu + sigma * eps, drawn from (seed, batch index).

  The noise of the global batch of `batch_size` is drawn; with `rows` = (start, size) the
  batch holds only those rows, and gets those rows of it, so a worker's share is the same
  as in a one-worker run.
  """
  key = tf.random.experimental.stateless_fold_in(
      tf.stack([tf.cast(seed, tf.int64), batch_index]), 1)
  noise = tf.random.stateless_normal([batch_size, num_objects, latent_dim], seed=key)
  if rows is not None:
    start, size = rows
    noise = noise[start:start + size]  # [size, N, D]
  batch["noise"] = noise
  return batch


def _take_rows(batch, rows):
  start, size = rows
  return {name: value[start:start + size] for name, value in batch.items()}  # [size, ...]


def training_dataset(model_config, train_config, first_step=0, rows=None):
  """The training stream from batch `first_step` on, each batch with its noise.

  `rows` = (start, size) keeps only those rows of each global batch (one input pipeline's
  share; generated scenes are rendered for those rows only).
  """
  if train_config.dataset == "multi_dsprites":
    # The file's scenes in order, cycled; only the images are trained on.
    dataset = multi_dsprites.make_dataset(
        train_config.data_path, train_config.variant, train_config.batch_size,
        first_batch=first_step, repeat=True).map(lambda batch: {"image": batch["image"]})
    if rows is not None:
      dataset = dataset.map(lambda batch: _take_rows(batch, rows))
  else:
    dataset = data.make_dataset(train_config.num_sprites, train_config.batch_size,
                                train_config.seed, train_config.presence_prob,
                                first_batch=first_step, rows=rows)
  indices = tf.data.Dataset.range(first_step, 2**62)
  return tf.data.Dataset.zip(dataset, indices).map(
      lambda batch, index: add_noise(batch, index, model_config.num_objects,
                                     model_config.latent_dim, train_config.seed,
                                     train_config.batch_size, rows),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def distributed_training_data(strategy, model_config, train_config, first_step=0,
                              transform=None):
  """The training stream, split so that every replica gets its rows of each global batch.

  There is one input pipeline per worker (`tf.distribute.InputContext`). Pipeline p of a
  strategy with R replicas, L = R / (number of pipelines) of them local, makes rows
  [p L b, (p + 1) L b) of every global batch, b = batch_size / R, and hands its L replicas
  b rows each in order, so replica r trains on rows [r b, (r + 1) b) whatever the number of
  workers: one worker and two take the same step. `transform`, if given, maps each
  pipeline's dataset first (tests inject faults with it).
  """
  global_batch = train_config.batch_size

  def pipeline(context):
    per_replica = context.get_per_replica_batch_size(global_batch)
    local = context.num_replicas_in_sync // context.num_input_pipelines
    rows = (context.input_pipeline_id * local * per_replica, local * per_replica)
    dataset = training_dataset(model_config, train_config, first_step, rows)
    if transform is not None:
      dataset = transform(dataset)

    def split(batch):
      # Each value [L * b, ...] -> [L, b, ...]; unbatching then yields the L replicas'
      # batches one after another, which the strategy deals to the local replicas in order.
      return {name: tf.reshape(value, tf.concat([[local, per_replica], tf.shape(value)[1:]],
                                                 axis=0))
              for name, value in batch.items()}

    return dataset.map(split).unbatch()

  return strategy.distribute_datasets_from_function(pipeline)


def check_data(train_config):
  """Raises config.ConfigError unless a Multi-dSprites run's --data_path holds its variant
  (generated data needs no check beyond `TrainConfig`'s)."""
  if train_config.dataset == "multi_dsprites":
    multi_dsprites.check_file(train_config.data_path, train_config.variant)


def summary_images(train_config, count):
  """The scenes whose reconstructions TensorBoard shows: [<= count, 64, 64, 3].

  Generated scenes of seed + 1 (the training batches are seed's), or the first `count`
  scenes of a Multi-dSprites file (fewer if it holds fewer).
  """
  if train_config.dataset == "multi_dsprites":
    return tf.concat([b["image"] for b in multi_dsprites.make_dataset(
        train_config.data_path, train_config.variant, 1, num_batches=count)], axis=0)
  return next(iter(data.make_dataset(
      train_config.num_sprites, count, train_config.seed + 1,
      train_config.presence_prob)))["image"]
