"""Segmentation and entity-exchange metrics (for the experiments of paper section 4).

* Adjusted Rand index (Hubert & Arabie, 1985) between two partitions of the pixels, and the
  foreground ARI (FG-ARI) that object-centric work reports (MONet, IODINE, Slot Attention):
  the ARI over the pixels that the ground truth assigns to some object, background ignored.
* Masks from a model: pixel p of image x goes to the object n whose solo decode
  sigmoid(f(z_n)) explains it best, by the Bernoulli log-likelihood summed over channels,
  log p(x_p | f(z_n)). An object that the model encodes alone thus owns the pixels it draws.
* IoU of two binary masks.
"""

import numpy as np


def _contingency(true_labels, pred_labels):
  """[num_true, num_pred] counts of pixels by (true label, predicted label)."""
  _, true_ids = np.unique(true_labels, return_inverse=True)
  _, pred_ids = np.unique(pred_labels, return_inverse=True)
  table = np.zeros((true_ids.max() + 1, pred_ids.max() + 1), np.int64)
  np.add.at(table, (true_ids, pred_ids), 1)
  return table


def adjusted_rand_index(true_labels, pred_labels):
  """ARI of two labellings of the same points (any integer labels).

  Args:
    true_labels, pred_labels: int arrays of the same shape [P].

  Returns:
    A float in [-1, 1]; 1 for identical partitions, whatever the label names. When both
    labellings put every point in one cluster (or every point alone) the ARI is 1.
  """
  true_labels = np.asarray(true_labels).reshape(-1)
  pred_labels = np.asarray(pred_labels).reshape(-1)
  if true_labels.shape != pred_labels.shape:
    raise ValueError(f"Expected labellings of the same size. Received: {true_labels.shape} "
                     f"and {pred_labels.shape}")
  n = len(true_labels)
  if n < 2:
    return 1.0
  table = _contingency(true_labels, pred_labels)
  pairs = lambda x: x * (x - 1) / 2.0
  index = pairs(table).sum()
  true_pairs = pairs(table.sum(axis=1)).sum()
  pred_pairs = pairs(table.sum(axis=0)).sum()
  expected = true_pairs * pred_pairs / pairs(n)
  maximum = 0.5 * (true_pairs + pred_pairs)
  if maximum == expected:
    return 1.0
  return float((index - expected) / (maximum - expected))


def foreground_ari(true_masks, pred_labels):
  """FG-ARI of one image: the ARI over the pixels the ground truth calls foreground.

  Args:
    true_masks: [S + 1, H, W] ground-truth masks, background first (each pixel's label is
      its argmax; pixels shared by overlapping sprites go to the first of them).
    pred_labels: int [H, W], the model's object per pixel.

  Returns:
    The FG-ARI, or NaN for an image without foreground.
  """
  true_masks = np.asarray(true_masks)
  true_labels = np.argmax(true_masks, axis=0)  # [H, W]
  foreground = true_labels > 0
  if not foreground.any():
    return float("nan")
  return adjusted_rand_index(true_labels[foreground], np.asarray(pred_labels)[foreground])


def solo_decode_labels(images, solo_probs, eps=1e-6):
  """Per pixel, the object whose solo decode gives the pixel the highest likelihood.

  Args:
    images: [B, H, W, 3] in [0, 1].
    solo_probs: [B, N, H, W, 3], sigmoid(f(z_n)) for each object n decoded alone.

  Returns:
    int [B, H, W] in [0, N).
  """
  x = np.asarray(images)[:, None]  # [B, 1, H, W, 3]
  p = np.clip(np.asarray(solo_probs), eps, 1 - eps)  # [B, N, H, W, 3]
  log_lik = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=-1)  # [B, N, H, W]
  return np.argmax(log_lik, axis=1)


def iou(mask_a, mask_b):
  """Intersection over union of two boolean masks (1 when both are empty)."""
  mask_a, mask_b = np.asarray(mask_a, bool), np.asarray(mask_b, bool)
  union = np.logical_or(mask_a, mask_b).sum()
  if union == 0:
    return 1.0
  return float(np.logical_and(mask_a, mask_b).sum() / union)
