"""KL maps of many generated scenes, for counting and evaluation (paper section 4.3)."""

import numpy as np
import tensorflow as tf

from mvae_tf import data


def scene_kl_maps(encode_fn, num_sprites, num_scenes, seed, presence_prob=0.5,
                  batch_size=256):
  """Encodes `num_scenes` fresh scenes drawn with `seed`.

  Args:
    encode_fn: images [B, 64, 64, 3] -> dict with `kl_map` [B, H, W] (a model's `encode`
      or an exported `encode` signature).
    num_sprites, presence_prob: the scene distribution.
    num_scenes: how many scenes; a multiple of `batch_size` is fastest.
    seed: the scenes' seed; the same seed gives the same scenes.

  Returns:
    (kl_maps float32 [num_scenes, H, W], counts int32 [num_scenes]).
  """
  num_batches = -(-num_scenes // batch_size)
  dataset = data.make_dataset(num_sprites, batch_size, seed, presence_prob,
                              num_batches=num_batches)
  kl_maps, counts = [], []
  for batch in dataset:
    kl_maps.append(np.asarray(encode_fn(batch["image"])["kl_map"]))
    counts.append(batch["count"].numpy())
  return np.concatenate(kl_maps)[:num_scenes], np.concatenate(counts)[:num_scenes]
