"""The negative ELBO, per image, in nats (paper section 2, appendix A "Training").

For an image x with N selected objects,

  -ELBO(x) = E_q[-log p(x | z_1..N)] + sum_n KL[q(z_n | x) || p(z_n)]
           =            nll           +                kl

where p(x | z) is a Bernoulli over every pixel and channel with logits f(z), so the
distortion `nll` is the sigmoid cross-entropy summed over the 64*64*3 values (estimated with
one reparameterised sample), and the rate `kl` is the analytic KL summed over the N selected
objects. Pixel values are intensities in [0, 1], used as Bernoulli means, as is usual for
dSprites-like data.

Beyond the paper, `unselected_kl` is the KL of the candidate cells that TopKByKL left out.
The ELBO does not contain it (those posteriors are never sampled or decoded), so nothing
stops an unselected cell from carrying a large KL; training may penalise it
(`TrainConfig.unselected_kl_weight`) so that the KL map is near zero off the objects.

Also beyond the paper, `object_sparsity` is a concave cost on each selected object's KL,

  sum_n log(1 + KL_n),

which training may add to the objective (`TrainConfig.object_sparsity`). The ELBO's rate
is additive: it charges the same for a sprite's information held by one object or spread
over two. This cost is subadditive, log(1 + a) + log(1 + b) = log(1 + a + b + ab) >=
log(1 + a + b), so spreading costs log(1 + ab / (1 + a + b)) more than keeping it whole,
and its slope 1 / (1 + KL_n) presses hardest on the objects that hold little: fragments
and surplus objects, not whole sprites.
"""

import tensorflow as tf


@tf.custom_gradient
def _sigmoid_cross_entropy(logits, images):
  """-[x log s(l) + (1 - x) log(1 - s(l))] = softplus(l) - x l, elementwise, s the sigmoid.

  Its gradient in the logits is s(l) - x, and none flows to the images (the data).
  `tf.nn.sigmoid_cross_entropy_with_logits` computes the same value as
  max(l, 0) - x l + log(1 + exp(-|l|)), for stability, and TF differentiates that formula
  op by op, a dozen passes over [B, 64, 64, 3]; `tf.nn.softplus` is stable by itself, and
  the gradient written out takes three (sigmoid, difference, product).
  """
  def grad(upstream):
    return upstream * (tf.sigmoid(logits) - images), None

  return tf.nn.softplus(logits) - images * logits, grad


def bernoulli_nll(images, logits):
  """-log p(x | z) summed over pixels and channels: [B, 64, 64, 3] x 2 -> [B]."""
  return tf.reduce_sum(_sigmoid_cross_entropy(logits, images), axis=[1, 2, 3])


def negative_elbo(images, logits, kl):
  """The loss terms of each image.

  Args:
    images: float32 [B, 64, 64, 3] in [0, 1].
    logits: float32 [B, 64, 64, 3], the decoder's Bernoulli logits.
    kl: float32 [B, N], the selected objects' KL against the prior.

  Returns:
    A dict of float32 [B] tensors: `nll`, `kl`, `loss` = nll + kl (the negative ELBO)
    and `elbo` = -loss.
  """
  nll = bernoulli_nll(images, logits)
  rate = tf.reduce_sum(kl, axis=-1)
  loss = nll + rate
  return {"nll": nll, "kl": rate, "loss": loss, "elbo": -loss}


def unselected_kl(kl_map, kl, free_nats=0.0):
  """The summed KL of the candidates not selected, each beyond `free_nats`: [B, H, W],
  [B, N] -> [B].

  sum over the cells c left out of max(0, KL_c - free_nats); with free_nats = 0, their
  summed KL. Every selected object's KL is one cell of `kl_map`, so this is the map's sum
  minus theirs (and the selected cells' gradients cancel exactly). A tolerance tau > 0
  leaves each cell's first tau nats free, so the cost presses only on cells informative
  enough to be counted (the KL map's counting threshold is about 15 nats, docs/counting_study.md,
  round 21) and not on the diffuse fraction of a nat that every other cell carries.
  """
  if free_nats:
    kl_map = tf.nn.relu(kl_map - free_nats)  # [B, H, W]
    kl = tf.nn.relu(kl - free_nats)  # [B, N]
  return tf.reduce_sum(kl_map, axis=[1, 2]) - tf.reduce_sum(kl, axis=-1)


def object_sparsity(kl):
  """sum_n log(1 + KL_n) over the selected objects: [B, N] -> [B]."""
  return tf.reduce_sum(tf.math.log1p(kl), axis=-1)
