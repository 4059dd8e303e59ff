"""The paper's experiments as numbers (sections 4.1-4.3, appendix C).

Everything here works on a `Codec`: two functions, `encode(images)` -> dict(loc, scale, kl,
kl_map, ...) and `decode(latents)` -> logits, which a live model (`Codec.from_model`) and a
loaded SavedModel (`Codec.from_saved_model`) both provide. Scenes come from
`data.make_dataset` with stated seeds, so every number can be reproduced.
"""

import collections
import dataclasses

import numpy as np
import tensorflow as tf

from mvae_tf import config
from mvae_tf import counting
from mvae_tf import data
from mvae_tf import export
from mvae_tf import losses
from mvae_tf import metrics

EXCHANGE_IOU = 0.5  # An exchange succeeds when the swapped object lands with IoU >= this.
MASK_LEVEL = 0.2  # A solo decode's mask: pixels where any channel exceeds this.
ACTIVE_DIM_KL = 0.1  # A latent dimension with a mean KL above this many nats is in use.


@dataclasses.dataclass
class Codec:
  """encode: images [B, 64, 64, 3] -> dict of arrays; decode: latents [B, M, D] -> logits."""
  encode: object
  decode: object
  num_objects: int
  latent_dim: int

  @classmethod
  def from_model(cls, model):
    num_objects, dim = model.config.num_objects, model.config.latent_dim
    encode = tf.function(model.encode,
                         input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32)])
    decode = tf.function(model.decode,
                         input_signature=[tf.TensorSpec([None, None, dim], tf.float32)])
    return cls(lambda x: {k: v.numpy() for k, v in encode(tf.constant(x)).items()},
               lambda z: decode(tf.constant(z, tf.float32)).numpy(), num_objects, dim)

  @classmethod
  def from_saved_model(cls, path):
    """The codec of an export's version directory; its `metadata` (`export.read_metadata`)
    is kept as the attribute of that name."""
    loaded = tf.saved_model.load(path)
    encode, decode = loaded.signatures["encode"], loaded.signatures["decode"]
    meta = export.read_metadata(loaded)
    codec = cls(lambda x: {k: v.numpy() for k, v in encode(images=tf.constant(x)).items()},
                lambda z: decode(latents=tf.constant(z, tf.float32))["logits"].numpy(),
                int(meta["num_objects"]), int(meta["latent_dim"]))
    codec.loaded = loaded  # Keeps the functions' variables alive.
    codec.metadata = meta
    return codec

  def solo_decodes(self, latents):
    """Each object decoded alone: [B, N, D] -> probabilities [B, N, 64, 64, 3]."""
    b, n, d = latents.shape
    logits = self.decode(latents.reshape(b * n, 1, d))  # [B*N, 64, 64, 3]
    return sigmoid(logits).reshape(b, n, *logits.shape[1:])


def sigmoid(x):
  """The logistic function on numpy arrays, as exp(-log(1 + exp(-x))): no overflow for any x."""
  return np.exp(-np.logaddexp(0.0, -np.asarray(x, np.float32)))


def bernoulli_nll(images, logits):
  """`losses.bernoulli_nll` on numpy arrays: [B, 64, 64, 3] x 2 -> [B]."""
  return losses.bernoulli_nll(tf.constant(images, tf.float32),
                              tf.constant(logits, tf.float32)).numpy()


# Scenes are batch i = 0, 1, ... of `data.make_dataset(num_sprites, batch_size, seed,
# presence_prob)`: these four numbers define them, and every result records them.
SCENE_BATCH = 128
KL_MAP_BATCH = 256

# Bins of the breakdowns by kind of scene (`counting_errors`, `elbo_by_scene`): thirds of
# the sprite scales (data.py draws them uniformly from [0.5, 1)), and distances in pixels
# between the nearest two centres: within half a 4x4 cell, within one cell, farther
# (64 * sqrt(2) < 91).
SCALE_EDGES = (data.MIN_SCALE, 2 / 3, 5 / 6, data.MAX_SCALE)
DISTANCE_EDGES = (0.0, 8.0, 16.0, 91.0)
# Pixels covered by two or more sprites (`overlap_pixels`): none, fewer than 50, 50 or more.
OVERLAP_EDGES = (0.0, 1.0, 50.0, 64.0 * 64.0)


def _scene_facts(seed, batch_size, presence_prob):
  return {"seed": seed, "batch_size": batch_size, "presence_prob": presence_prob}


def scenes(num_sprites, num_scenes, seed, batch_size=SCENE_BATCH, presence_prob=0.5):
  """Fresh scenes as numpy batches (dicts), `num_scenes` in all.

  Raises ValueError for a bad argument at the call, not at the first batch.
  """
  config.check_int("num_scenes", num_scenes, 1)
  num_batches = -(-num_scenes // batch_size)
  dataset = data.make_dataset(num_sprites, batch_size, seed, presence_prob,
                              num_batches=num_batches)
  return _numpy_batches(dataset, num_scenes, batch_size)


def _numpy_batches(dataset, num_scenes, batch_size):
  for i, batch in enumerate(dataset):
    keep = min(batch_size, num_scenes - i * batch_size)
    yield {k: v.numpy()[:keep] for k, v in batch.items()}


def overlap_pixels(masks):
  """How many pixels of each scene two or more sprites cover, where the data add their
  colours (appendix A): int [B].

  Args:
    masks: [B, S + 1, 64, 64], background first (`data.render_scenes`): a pixel that c >= 1
      sprites cover gives each of them 1 / c, so it is covered twice or more exactly where
      it is not background and no sprite holds all of it.
  """
  masks = np.asarray(masks)
  shared = (masks[:, 0] == 0) & (masks[:, 1:].max(axis=1) < 1)  # [B, 64, 64]
  return shared.sum(axis=(1, 2))


def _scene_kinds(batch):
  """What places each scene of a batch in the breakdowns' bins, [B] each: `counts`, the
  true numbers of sprites; `nearest_distance`, pixels between the two closest centres
  (`counting.nearest_centre_distance`); `largest_scale`, the largest present sprite's scale
  (0 for none); `overlap_px`, pixels covered by two or more sprites (`overlap_pixels`)."""
  return {"counts": batch["count"],
          "nearest_distance": counting.nearest_centre_distance(batch["position"],
                                                               batch["present"]),
          "largest_scale": np.max(batch["scale"] * (batch["present"] != 0), axis=1),
          "overlap_px": overlap_pixels(batch["masks"])}


def counting_evidence(codec, num_sprites, num_scenes, seed, presence_prob=0.5):
  """What counting reads from fresh scenes.

  Returns:
    A dict of numpy arrays:
      kl_maps: [num_scenes, H, W], every candidate's KL (the paper's read-out).
      selected_kl: [num_scenes, N], the KL of the N selected objects.
      painted: int [num_scenes, N], how many pixels each selected object's solo decode
        paints (`_object_mask`: any channel above MASK_LEVEL), for the decoder read-out.
      centre_cells: int [num_scenes], the distinct cells of the H x W grid that hold a
        sprite's centre (`counting.centre_cell_counts`).
      nearest_distance: [num_scenes], pixels between the two closest sprite centres (inf
        below two sprites; `counting.nearest_centre_distance`).
      largest_scale: [num_scenes], the largest present sprite's scale (0 for none).
      overlap_px: int [num_scenes], pixels covered by two or more sprites.
      counts: int [num_scenes], the true numbers of sprites.
  """
  parts = collections.defaultdict(list)  # The keys above, each a list of [B, ...] arrays.
  for batch in scenes(num_sprites, num_scenes, seed, batch_size=KL_MAP_BATCH,
                      presence_prob=presence_prob):
    encoded = codec.encode(batch["image"])
    kl_map = np.asarray(encoded["kl_map"])  # [B, H, W]
    parts["kl_maps"].append(kl_map)
    parts["selected_kl"].append(np.asarray(encoded["kl"]))
    solo = _object_mask(codec.solo_decodes(encoded["loc"]))  # [B, N, 64, 64]
    parts["painted"].append(solo.sum(axis=(2, 3)))  # [B, N]
    parts["centre_cells"].append(counting.centre_cell_counts(
        batch["position"], batch["present"], kl_map.shape[1]))  # [B]
    for key, value in _scene_kinds(batch).items():
      parts[key].append(value)  # [B]
  return {k: np.concatenate(v) for k, v in parts.items()}


def _scene_terms(codec, images, rng):
  """Each scene's NLL and KL in nats, one posterior sample each: [B, 64, 64, 3] -> [B], [B]."""
  encoded = codec.encode(images)
  z = encoded["loc"] + encoded["scale"] * rng.standard_normal(encoded["loc"].shape)  # [B, N, D]
  return bernoulli_nll(images, codec.decode(z)), encoded["kl"].sum(axis=1)


def _mean_terms(nll, kl):
  return {"nll": float(nll.mean()), "kl": float(kl.mean()), "elbo": float(-(nll + kl).mean())}


def elbo_terms(codec, batches, seed):
  """Mean NLL, KL and ELBO in nats per image over `batches`, one posterior sample each."""
  rng = np.random.RandomState(seed)
  terms = [_scene_terms(codec, batch["image"], rng) for batch in batches]
  return _mean_terms(*(np.concatenate(t) for t in zip(*terms)))


def _terms_by_bin(nll, kl, values, edges):
  """Mean terms of the scenes in each bin of `values` (`counting.bin_masks`); None when empty."""
  bins = []
  for low, high, inside in counting.bin_masks(values, edges):  # `inside`: [M]
    n = int(inside.sum())
    terms = _mean_terms(nll[inside], kl[inside]) if n else dict.fromkeys(("nll", "kl", "elbo"))
    bins.append({"from": low, "to": high, "scenes": n, **terms})
  return bins


def elbo_by_scene(nll, kl, counts, nearest_distance, largest_scale, overlap_px, num_sprites):
  """Where the ELBO is spent: its mean terms over groups of scenes.

  Args:
    nll, kl: [M], each scene's terms in nats.
    counts: int [M], sprites per scene; nearest_distance, largest_scale, overlap_px: [M],
      as in `counting_evidence`.
    num_sprites: the largest count.

  Returns:
    by_count: one bin per count 0..num_sprites (`from` = the count).
    one_sprite_by_scale: scenes of one sprite, binned by its scale (SCALE_EDGES).
    several_sprites_by_nearest_distance_px: scenes of two or more, by the distance between
      the nearest two centres (DISTANCE_EDGES), the bins of `counting_errors`.
    several_sprites_by_overlap_px: scenes of two or more, by the pixels that two or more
      sprites cover (OVERLAP_EDGES), where the data's colours add up.
  """
  one, several = counts == 1, counts >= 2  # [M] each
  return {
      "by_count": _terms_by_bin(nll, kl, counts, np.arange(num_sprites + 2)),
      "one_sprite_by_scale": _terms_by_bin(nll[one], kl[one], largest_scale[one],
                                           SCALE_EDGES),
      "several_sprites_by_nearest_distance_px": _terms_by_bin(
          nll[several], kl[several], nearest_distance[several], DISTANCE_EDGES),
      "several_sprites_by_overlap_px": _terms_by_bin(
          nll[several], kl[several], overlap_px[several], OVERLAP_EDGES)}


def elbo_gap_by_scene(by_scene, baseline_by_scene):
  """by_scene's ELBO minus baseline_by_scene's, group by group, on the same scenes.

  Both come from `elbo_by_scene` of one set of scenes (the same seed, scenes and
  num_sprites); each bin keeps `from`, `to` and `scenes` and holds `elbo`, the difference
  (None for an empty bin).
  """
  if by_scene.keys() != baseline_by_scene.keys():
    raise ValueError("Expected ELBO breakdowns of the same groups. Received: "
                     f"{sorted(by_scene)} and {sorted(baseline_by_scene)}")
  gap = {}
  for group, bins in by_scene.items():
    base = baseline_by_scene[group]
    if [(b["from"], b["scenes"]) for b in bins] != [(b["from"], b["scenes"]) for b in base]:
      raise ValueError(f"Expected the same scenes in each bin of {group!r}. Received: "
                       f"{[b['scenes'] for b in bins]} and {[b['scenes'] for b in base]}")
    gap[group] = [{"from": b["from"], "to": b["to"], "scenes": b["scenes"],
                   "elbo": None if b["elbo"] is None else b["elbo"] - a["elbo"]}
                  for b, a in zip(bins, base)]
  return gap


def test_elbo(codec, num_sprites, num_scenes, seed, presence_prob=0.5):
  """Negative ELBO terms in nats per image, one posterior sample each (as in training), and
  their breakdown over kinds of scene (`elbo_by_scene`)."""
  rng = np.random.RandomState(seed)
  parts = collections.defaultdict(list)  # nll, kl and `_scene_kinds`'s keys, [B] each.
  for batch in scenes(num_sprites, num_scenes, seed, presence_prob=presence_prob):
    nll, kl = _scene_terms(codec, batch["image"], rng)  # [B] each
    parts["nll"].append(nll)
    parts["kl"].append(kl)
    for key, value in _scene_kinds(batch).items():
      parts[key].append(value)  # [B]
  parts = {k: np.concatenate(v) for k, v in parts.items()}
  return {"scenes": num_scenes, **_scene_facts(seed, SCENE_BATCH, presence_prob),
          **_mean_terms(parts["nll"], parts["kl"]),
          "by_scene": elbo_by_scene(num_sprites=num_sprites, **parts)}


def _searched_count(search, search_counts, test, test_counts, num_sprites):
  """Searches a threshold on `search` ([M, ...] values; count = how many exceed it) and
  scores it on `test`."""
  threshold, search_accuracy = counting.search_threshold(search, search_counts)
  predicted = counting.predicted_counts(test, threshold)
  return threshold, search_accuracy, {
      "accuracy": float(np.mean(predicted == test_counts)),
      "confusion_true_by_predicted": counting.confusion_matrix(
          test_counts, predicted, num_sprites).tolist()}


def counting_errors(test, predicted):
  """Where the paper's read-out errs on the test scenes (see `counting`'s docstring).

  Args:
    test: `counting_evidence` of the test scenes.
    predicted: int [M], their predicted counts.
  """
  counts = test["counts"]
  one, several = counts == 1, counts >= 2  # [M] each
  return {
      "one_sprite_by_scale": counting.error_rates_by_bin(
          counts[one], predicted[one], test["largest_scale"][one], SCALE_EDGES),
      "several_sprites_by_nearest_distance_px": counting.error_rates_by_bin(
          counts[several], predicted[several], test["nearest_distance"][several],
          DISTANCE_EDGES),
      "several_sprites_by_overlap_px": counting.error_rates_by_bin(
          counts[several], predicted[several], test["overlap_px"][several], OVERLAP_EDGES)}


def object_counting(codec, num_sprites, search_scenes, test_scenes, search_seed, test_seed,
                    presence_prob=0.5, progress=None):
  """Paper 4.3: threshold searched on `search_scenes`, accuracy on `test_scenes`.

  The headline is the paper's protocol: count the candidate cells whose KL exceeds a
  threshold. Two more read-outs, each with its own threshold searched on the same search
  scenes: `selected_kl_readout` counts only the N selected objects whose KL exceeds it (the
  same as the paper's while at most N cells exceed it; with suppression, it reads the
  suppressed map), and `decoder_readout` the selected objects whose solo decode paints
  more than a number of pixels (surplus objects should decode to nothing, paper 4.1). And a
  reference that reads no model, `centre_cell_reference`: the test accuracy of counting
  the distinct grid cells that hold a sprite's centre (`counting.centre_cell_counts`), the
  most a read-out of one cell per sprite could reach on this grid. `errors` breaks the
  headline's test errors down by the one sprite's scale, by the distance between the
  nearest two sprites and by how many pixels sprites share (`counting_errors`).

  `progress`, if given, is called with the name of each stage as it starts.
  """
  progress = progress or (lambda stage: None)
  progress(f"encoding the {search_scenes} search scenes (seed {search_seed})")
  search = counting_evidence(codec, num_sprites, search_scenes, search_seed, presence_prob)
  progress(f"encoding the {test_scenes} test scenes (seed {test_seed})")
  test = counting_evidence(codec, num_sprites, test_scenes, test_seed, presence_prob)
  progress("searching the thresholds")

  def searched(key):
    """A threshold on `key`'s values ([M, N] are read as one row of N cells) searched on
    the search scenes and scored on the test scenes."""
    search_values, test_values = search[key], test[key]
    if search_values.ndim == 2:
      search_values, test_values = search_values[:, None, :], test_values[:, None, :]
    return _searched_count(search_values, search["counts"], test_values, test["counts"],
                           num_sprites)

  threshold, search_accuracy, test_result = searched("kl_maps")
  kl_threshold, kl_search_accuracy, kl_test = searched("selected_kl")
  pixels, pixel_search_accuracy, pixel_test = searched("painted")
  search_facts = {"scenes": search_scenes,
                  **_scene_facts(search_seed, KL_MAP_BATCH, presence_prob)}
  test_facts = {"scenes": test_scenes, **_scene_facts(test_seed, KL_MAP_BATCH, presence_prob)}
  grid = test["kl_maps"].shape[1]
  return {
      "threshold": threshold,
      "search": {**search_facts, "accuracy": search_accuracy},
      "test": {**test_facts, **test_result},
      "paper": {"search_accuracy": 0.744, "test_accuracy": 0.726},
      "errors": counting_errors(test, counting.predicted_counts(test["kl_maps"], threshold)),
      "centre_cell_reference": {
          "grid": grid,
          "rule": f"count the distinct cells of the {grid}x{grid} grid that hold a "
                  "sprite's centre: the accuracy of a perfect one-cell-per-sprite encoder",
          "test": {"accuracy": float(np.mean(test["centre_cells"] == test["counts"]))}},
      "selected_kl_readout": {
          "rule": "count the N selected objects whose KL exceeds threshold",
          "threshold": kl_threshold,
          "search": {"accuracy": kl_search_accuracy},
          "test": kl_test},
      "decoder_readout": {
          "rule": "count the selected objects whose solo decode paints more than "
                  "pixel_threshold pixels (any channel above "
                  f"{MASK_LEVEL}); pixel_threshold searched on the search scenes",
          "pixel_threshold": pixels,
          "search": {"accuracy": pixel_search_accuracy},
          "test": pixel_test},
  }


SEGMENTATION_RULE = ("each pixel goes to the object whose solo decode gives it the highest "
                     "Bernoulli likelihood; FG-ARI over ground-truth foreground pixels")
REFERENCE_FG_ARI = {"slot_attention": 0.913, "monet": 0.904, "iodine": 0.767}


def fg_ari_scores(codec, batches):
  """FG-ARI of each scene's solo-decode masks (see `metrics`) against its true masks.

  `batches` yields dicts of numpy `image` [B, 64, 64, 3] and `masks` [B, E, 64, 64]
  (background first); NaN for a scene without foreground.
  """
  scores = []
  for batch in batches:
    encoded = codec.encode(batch["image"])
    labels = metrics.solo_decode_labels(batch["image"], codec.solo_decodes(encoded["loc"]))
    scores += [metrics.foreground_ari(m, l) for m, l in zip(batch["masks"], labels)]
  return np.array(scores)


def _mean_fg_ari(scores):
  scored = scores[~np.isnan(scores)]
  return {"scored_scenes": int(len(scored)),
          "fg_ari": float(scored.mean()) if len(scored) else float("nan"),
          "rule": SEGMENTATION_RULE, "reference_fg_ari_multi_dsprites": REFERENCE_FG_ARI}


def segmentation(codec, num_sprites, num_scenes, seed, presence_prob=0.5):
  """FG-ARI of the solo-decode masks against the generator's masks."""
  scores = fg_ari_scores(codec, scenes(num_sprites, num_scenes, seed,
                                       presence_prob=presence_prob))
  return {"scenes": num_scenes, **_scene_facts(seed, SCENE_BATCH, presence_prob),
          **_mean_fg_ari(scores)}


def multi_dsprites_evaluation(codec, path, variant, num_scenes, seed):
  """Test ELBO and FG-ARI on the first `num_scenes` scenes of a Multi-dSprites file.

  The FG-ARI is comparable with what MONet, IODINE and Slot Attention report on this data
  (`REFERENCE_FG_ARI`, on the colored_on_grayscale variant).
  """
  from mvae_tf import multi_dsprites  # pylint: disable=g-import-not-at-top
  batch_size = min(SCENE_BATCH, num_scenes)
  batches = [{k: v.numpy() for k, v in batch.items() if k in ("image", "masks", "count")}
             for batch in multi_dsprites.make_dataset(path, variant, batch_size,
                                                      num_batches=num_scenes // batch_size)]
  if not batches:
    raise ValueError(f"{path!r} holds fewer than {batch_size} scenes")
  return {"data_path": path, "variant": variant,
          "scenes": sum(len(b["image"]) for b in batches), "seed": seed,
          "test_elbo": elbo_terms(codec, batches, seed),
          "segmentation": _mean_fg_ari(fg_ari_scores(codec, batches))}


def _object_mask(probs):
  """A decoded object's mask: [..., 64, 64, 3] -> bool [..., 64, 64]."""
  return probs.max(axis=-1) > MASK_LEVEL


def entity_exchange(codec, num_sprites, num_pairs, seed, presence_prob=0.5):
  """Paper 4.1 measured: swap the top-KL object of scene a into scene b.

  The swapped object's mask in the new scene is where decode(b with a's object) differs
  from decode(b without its own top object). It should cover the sprite of a that the object
  encodes: the ground-truth sprite of a with the highest IoU with the object's solo decode.
  A swap succeeds when the two have IoU >= EXCHANGE_IOU. Pairs where either scene is empty
  are skipped.
  """
  config.check_int("num_pairs", num_pairs, 1)
  successes, ious = [], []
  batches = scenes(num_sprites, 2 * num_pairs, seed, presence_prob=presence_prob)
  for batch in batches:
    half = len(batch["image"]) // 2
    a = {k: v[:half] for k, v in batch.items()}
    b = {k: v[half:2 * half] for k, v in batch.items()}
    z_a, z_b = codec.encode(a["image"])["loc"], codec.encode(b["image"])["loc"]
    swapped = np.concatenate([z_a[:, :1], z_b[:, 1:]], axis=1)  # [P, N, D]
    with_object = sigmoid(codec.decode(swapped))
    without = sigmoid(codec.decode(z_b[:, 1:])) if z_b.shape[1] > 1 else 0 * with_object
    landed = np.abs(with_object - without).max(axis=-1) > MASK_LEVEL  # [P, 64, 64]
    solo = _object_mask(codec.solo_decodes(z_a[:, :1])[:, 0])  # [P, 64, 64]
    for i in range(half):
      if a["count"][i] == 0 or b["count"][i] == 0:
        continue
      sprite_masks = a["masks"][i, 1:] > 0  # [S, 64, 64]
      source = sprite_masks[np.argmax([metrics.iou(solo[i], m) for m in sprite_masks])]
      score = metrics.iou(landed[i], source)
      ious.append(score)
      successes.append(score >= EXCHANGE_IOU)
  return {"pairs": num_pairs, "scored_pairs": len(successes),
          **_scene_facts(seed, SCENE_BATCH, presence_prob),
          "iou_threshold": EXCHANGE_IOU,
          "success_rate": float(np.mean(successes)) if successes else float("nan"),
          "mean_iou": float(np.mean(ious)) if ious else float("nan")}


def sequential_decoding(codec, num_sprites, num_scenes, seed, presence_prob=0.5):
  """Paper 4.1 measured: NLL of decoding the first k objects in KL order, k = 1..N.

  Once all sprites are in, surplus (Null) objects should change nothing: the curve flattens.
  """
  nll = np.zeros([codec.num_objects])
  changes = np.zeros([codec.num_objects])
  for batch in scenes(num_sprites, num_scenes, seed, presence_prob=presence_prob):
    loc = codec.encode(batch["image"])["loc"]
    previous = None
    for k in range(1, codec.num_objects + 1):
      logits = codec.decode(loc[:, :k])
      nll[k - 1] += bernoulli_nll(batch["image"], logits).sum()
      probs = sigmoid(logits)
      if previous is not None:
        changes[k - 1] += np.abs(probs - previous).mean(axis=(1, 2, 3)).sum()
      previous = probs
  return {"scenes": num_scenes, **_scene_facts(seed, SCENE_BATCH, presence_prob),
          "nll_by_objects": (nll / num_scenes).tolist(),
          "mean_abs_change_by_added_object": (changes / num_scenes).tolist()}


def gaussian_kl_per_dim(loc, scale):
  """KL(N(loc, scale^2) || N(0, 1)) of each dimension, elementwise in numpy:
  1/2 (loc^2 + scale^2 - 1) - log scale (the prior of paper section 2)."""
  loc, scale = np.asarray(loc, np.float64), np.asarray(scale, np.float64)
  return 0.5 * (loc**2 + scale**2 - 1.0) - np.log(scale)


def lone_sprite_decoding(codec, num_scenes, seed):
  """Issue 9's check of paper 4.1 on scenes of exactly one sprite.

  If the top object by KL is the whole sprite and the others are Null, decoding it alone
  gives the image that decoding all N objects gives, and the two NLLs are equal; a sprite
  split over two objects, or a top object that paints more than its sprite, makes the first
  larger. Returns the mean NLL (nats per image) of each and their difference, and how the
  top object spends its KL: the mean KL of each latent dimension, largest first, and how
  many dimensions carry more than ACTIVE_DIM_KL nats (the others have collapsed to the prior).
  """
  top, everything = 0.0, 0.0
  kl_by_dim = np.zeros([codec.latent_dim])
  for batch in scenes(1, num_scenes, seed, presence_prob=1.0):
    encoded = codec.encode(batch["image"])
    loc = encoded["loc"]  # [B, N, D], objects in decreasing KL.
    top += bernoulli_nll(batch["image"], codec.decode(loc[:, :1])).sum()
    everything += bernoulli_nll(batch["image"], codec.decode(loc)).sum()
    kl_by_dim += gaussian_kl_per_dim(loc[:, 0], encoded["scale"][:, 0]).sum(axis=0)  # [D]
  kl_by_dim = np.sort(kl_by_dim / num_scenes)[::-1]
  return {"scenes": num_scenes, "num_sprites": 1, **_scene_facts(seed, SCENE_BATCH, 1.0),
          "top_object_nll": float(top / num_scenes),
          "all_objects_nll": float(everything / num_scenes),
          "excess_nll": float((top - everything) / num_scenes),
          "top_object_kl_by_dim": kl_by_dim.tolist(),
          "top_object_active_dims": int(np.sum(kl_by_dim > ACTIVE_DIM_KL))}
