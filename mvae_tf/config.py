"""Configuration dataclasses, validated when they are made.

`ModelConfig` fixes the architecture (everything a checkpoint depends on); `TrainConfig` the
data stream and optimisation. Both are frozen and serialise to the JSON file `config.json`
that `train.py` writes into its model directory, so that later programs (export, evaluation)
rebuild the same model without repeating flags.
"""

import dataclasses
import json
import math
import os
import secrets

MODELS = ("mvae", "vae")
AGGREGATIONS = ("max", "sum", "softmax", "gated_sum")
# The MVAE's default pooling over objects: softmax won study round 3b
# (docs/counting_study.md); the paper's is "max" (`--aggregation=max`). The VAE has nothing
# to pool.
MVAE_AGGREGATION = "softmax"
# The MVAE's default object sparsity lambda (`TrainConfig.object_sparsity`): 0, the paper's
# objective. 5 won study rounds 5 and 6 on the 4x4 grid and was the default until round 14
# (docs/counting_study.md), where, on today's 8x8 grid with suppression and the
# unselected cost, 0 counted better on four seeds of four on held-out scenes, with a higher
# FG-ARI and exchange. The shipped MVAEs but the paper's were trained with 5. The VAE's
# lambda is 0.
MVAE_OBJECT_SPARSITY = 0.0
# The MVAE's default candidate grid, selection and cost on unselected cells. An 8x8 grid
# (`num_pooling` 3), suppression of the 8 neighbours of each selected cell
# (`suppression_radius` 1) and the KL of the cells not selected added once to the objective
# (`unselected_kl_weight` 1) won study rounds 9 and 10 (docs/counting_study.md) on
# counting on three seeds of four and on FG-ARI on all four. A 16x16 grid (`num_pooling`
# 2) with the cells within 2 of each selected one suppressed, the same 20-pixel block at a
# finer step, won study round 17: counting 6.5 to 7.1 points better on four seeds of four
# on held-out scenes at 6,000 steps, at an ELBO 2.3 nats worse on average; at 55,000 steps
# (one seed each, the run behind `pretrained/mvae_3sprites` against `mvae_3sprites_grid8`)
# the two grids count alike and this one's ELBO is 9.4 to 10.6 nats better; at 8 sprites,
# trained as long (`pretrained/mvae_8sprites/54000` against `mvae_8sprites_grid8`, about
# two hours each), it counts
# 1.5 to 2.1 points better and its ELBO is 27 to 30 nats better. The paper's are 4 (its grid is
# not given; 4x4 was this project's first), 0 and 0. The VAE selects no cells: its encoder
# keeps the 4x4 grid of every VAE baseline shipped, and it has no suppression or unselected
# cells.
MVAE_NUM_POOLING = 2
VAE_NUM_POOLING = 4
MVAE_SUPPRESSION_RADIUS = 2
MVAE_UNSELECTED_KL_WEIGHT = 1.0
# The MVAE's default end phase: in a run of at least 50,000 steps, the last 8,000 train
# without the unselected cells' cost, on the paper's objective (`unselected_kl_final_steps`).
# Study round 19 (docs/counting_study.md) dropped the cost for 8,000 steps after 59,000
# with it (two seeds, scored on held-out scenes): the ELBO rose about 2 nats, level with
# the VAE's, FG-ARI and exchange rose, and counting by the paper's protocol fell about 2
# points (`pretrained/mvae_3sprites/67000`: every 3-sprite goal of issue 9 met); round 20 found
# the same trade at 8 sprites after 54,000 steps. The cost is what makes the objects in
# the first place (rounds 9 and 10; without it from step 0 they fragment, and freeing the
# cells below 8 nats from step 0 fragments them too, round 22), so shorter runs, such as
# the study's 6,000 steps, keep it to the end.
MVAE_UNSELECTED_KL_FINAL_STEPS = 8000
MVAE_END_PHASE_MIN_TRAIN_STEPS = 50_000
DATASETS = ("dsprites", "multi_dsprites")
# Keras dtype policies the model can compute in; variables are float32 in both.
PRECISIONS = ("float32", "mixed_bfloat16")
VAE_LATENT_DIM = 60
# D of each MVAE object: 12-dimensional diagonal Gaussians (appendix A, "Encoder").
MVAE_LATENT_DIM = 12
# The encoder's head convolution's kernel size on the grid (appendix A gives none).
HEAD_KERNEL = 3
CONFIG_FILE = "config.json"
IMAGE_SIZE = 64
# A warm start (`train.py --init_from`) is one worker's: its Adam moments are estimated on
# one machine before the cluster exists.
INIT_FROM_MULTI_WORKER = ("--init_from applies to --strategy=mirrored only: start the run "
                          "on one worker, then resume it on the cluster from its checkpoint")


def check_int(name, value, minimum):
  if not is_int(value) or value < minimum:
    raise ValueError(
        f"Invalid value received for argument `{name}`. Expected an integer >= {minimum}. "
        f"Received: {name}={value!r}")


def is_ratio(value):
  """A number (not a bool) in (0, 1]."""
  return (not isinstance(value, bool) and isinstance(value, (int, float))
          and 0.0 < value <= 1.0)


def check_ratio(name, value):
  """Raises ValueError unless `value` is a number in (0, 1]."""
  if not is_ratio(value):
    raise ValueError(
        f"Invalid value received for argument `{name}`. Expected a number in (0, 1]. "
        f"Received: {name}={value!r}")


def validate_data_args(num_sprites, batch_size, seed, presence_prob):
  """Raises ValueError naming the first bad argument of `make_dataset`."""
  check_int("num_sprites", num_sprites, 1)
  check_int("batch_size", batch_size, 1)
  check_int("seed", seed, 0)
  if (isinstance(presence_prob, bool) or not isinstance(presence_prob, (int, float))
      or not 0.0 <= presence_prob <= 1.0):
    raise ValueError(
        "Invalid value received for argument `presence_prob`. Expected a float between 0 "
        f"and 1. Received: presence_prob={presence_prob!r}")


def error_summary(error, limit=300):
  """The first line (and sentence, for TF's long restore errors) of an error, for a
  one-line message."""
  text = str(error).strip() or type(error).__name__
  text = text.splitlines()[0].split(". Showing")[0]
  return text if len(text) <= limit else text[:limit] + "..."


class ConfigError(ValueError):
  """A configuration that cannot work; the message names the setting and what it accepts."""


def _require(condition, message):
  if not condition:
    raise ConfigError(message)


def is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value):
  """An int or float (not a bool) that is neither NaN nor infinite."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The architecture of an MVAE (paper section 2, appendix A) or of the baseline VAE.

  Attributes:
    model: "mvae", or "vae" for the standard VAE baseline of appendix A.
    num_objects: N, the number of candidate posteriors kept by KL (1 for the VAE).
    latent_dim: D, the size of each object's latent (the VAE's whole latent: 60).
    aggregation: the symmetric pooling over objects, "max" (the paper's), "sum", "softmax"
      or "gated_sum" (`decoder.aggregate`); None (the default) is the model's own:
      MVAE_AGGREGATION for the MVAE, "max" for the VAE, which decodes one latent and pools
      nothing.
    num_pooling: how many of the encoder's four conv layers are followed by 2x2 max-pooling;
      the candidate grid is (64 / 2**num_pooling) squared. None (the default) is the
      model's own: MVAE_NUM_POOLING (a 16x16 grid) for the MVAE, VAE_NUM_POOLING for the VAE.
    suppression_radius: 0 selects the top-N cells by KL (the paper); r >= 1 suppresses the
      cells within r of each selected one (`selection.TopKByKL`). None (the default) is
      MVAE_SUPPRESSION_RADIUS for the MVAE and 0 for the VAE. MVAE only.
    decoder_width: multiplies the channels of g's and h's convolutions (1: 16 for g, 32 and
      16 for h).
    learned_background: False (the paper), or True to pool a trained feature map with the
      objects (`decoder.Decoder`), so that an object matters only where it rises above it.
      MVAE only.
    position_in_cell: False (the paper), or True to make each object's first two latent
      dimensions its image position, predicted as an offset from its cell's centre and
      applied by the decoder as a translation of g's map (`decoder.Decoder`). MVAE only;
      needs latent_dim >= 3.
    head_kernel: the kernel size of the encoder's head convolution, which runs on the grid
      after the coordinates are added (appendix A gives no sizes). With 3 each cell's
      receptive field is 78 pixels across, more than the 64-pixel image, so any cell can
      encode any sprite; with 1 it is 46. An odd integer >= 1.
    suppression_kl_ratio: ρ in (0, 1]. With suppression, a neighbour of a selected cell is
      skipped only if its KL is at most ρ times that cell's (`selection.TopKByKL`); 1 (the
      default) skips every neighbour. Needs suppression_radius >= 1 when below 1. MVAE only.
  """
  model: str = "mvae"
  num_objects: int = 5
  latent_dim: int = MVAE_LATENT_DIM
  aggregation: str | None = None
  num_pooling: int | None = None
  suppression_radius: int | None = None
  decoder_width: int = 1
  learned_background: bool = False
  position_in_cell: bool = False
  head_kernel: int = HEAD_KERNEL
  suppression_kl_ratio: float = 1.0

  def __post_init__(self):
    _require(self.model in MODELS,
             f"--model must be one of {', '.join(MODELS)}; received {self.model!r}")
    is_vae = self.model == "vae"
    model_defaults = {
        "aggregation": "max" if is_vae else MVAE_AGGREGATION,
        "num_pooling": VAE_NUM_POOLING if is_vae else MVAE_NUM_POOLING,
        "suppression_radius": 0 if is_vae else MVAE_SUPPRESSION_RADIUS}
    for name, default in model_defaults.items():
      if getattr(self, name) is None:  # Frozen: set the resolved default the dataclass way.
        object.__setattr__(self, name, default)
    _require(self.aggregation in AGGREGATIONS,
             f"--aggregation must be one of {', '.join(AGGREGATIONS)}; "
             f"received {self.aggregation!r}")
    _require(is_int(self.num_pooling) and 1 <= self.num_pooling <= 4,
             f"--num_pooling must be an integer from 1 to 4; received {self.num_pooling!r}")
    _require(is_int(self.latent_dim) and self.latent_dim >= 1,
             f"--latent_dim must be an integer >= 1; received {self.latent_dim!r}")
    _require(is_int(self.num_objects) and self.num_objects >= 1,
             f"--num_objects must be an integer >= 1; received {self.num_objects!r}")
    _require(is_int(self.suppression_radius) and self.suppression_radius >= 0,
             "--suppression_radius must be an integer >= 0; received "
             f"{self.suppression_radius!r}")
    _require(is_int(self.decoder_width) and self.decoder_width >= 1,
             f"--decoder_width must be an integer >= 1; received {self.decoder_width!r}")
    _require(is_int(self.head_kernel) and self.head_kernel >= 1 and self.head_kernel % 2 == 1,
             f"--head_kernel must be an odd integer >= 1; received {self.head_kernel!r}")
    _require(isinstance(self.learned_background, bool),
             "--learned_background must be true or false; received "
             f"{self.learned_background!r}")
    _require(isinstance(self.position_in_cell, bool),
             f"--position_in_cell must be true or false; received {self.position_in_cell!r}")
    if self.model == "vae":
      _require(not self.position_in_cell,
               "--position_in_cell does not apply to --model=vae (it has no cells)")
      _require(not self.learned_background,
               "--learned_background does not apply to --model=vae (it decodes one latent, "
               "with nothing to pool)")
      _require(self.suppression_radius == 0,
               "--suppression_radius does not apply to --model=vae (it selects no cells); "
               f"received {self.suppression_radius}")
      _require(self.suppression_kl_ratio == 1.0,
               "--suppression_kl_ratio does not apply to --model=vae (it selects no cells); "
               f"received {self.suppression_kl_ratio}")
      _require(self.num_objects == 1,
               f"--num_objects must be 1 for --model=vae; received {self.num_objects}")
      _require(self.aggregation == "max",
               "--aggregation does not apply to --model=vae (it decodes one latent, with "
               f"nothing to pool); received {self.aggregation!r}")
    _require(is_ratio(self.suppression_kl_ratio),
             "--suppression_kl_ratio must be a number in (0, 1]; received "
             f"{self.suppression_kl_ratio!r}")
    _require(self.suppression_kl_ratio == 1.0 or self.suppression_radius >= 1,
             f"--suppression_kl_ratio={self.suppression_kl_ratio} needs suppression "
             "(--suppression_radius >= 1); received --suppression_radius=0")
    _require(not self.position_in_cell or self.latent_dim >= 3,
             "--position_in_cell needs --latent_dim >= 3 (two dimensions of position and at "
             f"least one of appearance); received {self.latent_dim}")
    _require(self.num_objects <= self.num_candidates,
             f"--num_objects must be at most the number of candidates, {self.grid_size}x"
             f"{self.grid_size}={self.num_candidates} for --num_pooling={self.num_pooling}; "
             f"received {self.num_objects}")

  @property
  def grid_size(self):
    """H = W of the candidate grid."""
    return IMAGE_SIZE // 2**self.num_pooling

  @property
  def num_candidates(self):
    return self.grid_size**2

  @property
  def kl_map_size(self):
    """H = W of the `kl_map` that `encode` returns: the grid, or 1 for the VAE."""
    return 1 if self.model == "vae" else self.grid_size


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Data stream and optimisation (appendix A, "Training").

  Attributes:
    num_sprites: sprite slots per scene.
    presence_prob: probability that each slot is filled.
    batch_size: the global batch, split evenly across replicas.
    train_steps: total optimiser steps; the learning rate anneals over them.
    learning_rate, final_learning_rate: the schedule's ends (log-linear in between).
    seed: seeds the data stream, the reparameterisation noise and the initial weights.
    dataset: "dsprites", our multi-object dSprites generated on the fly (appendix A), or
      "multi_dsprites", DeepMind's Multi-dSprites TFRecords at `data_path` of `variant`
      (then num_sprites is the variant's foreground entities and presence_prob unused).
    data_path, variant: the file and its variant, for dataset "multi_dsprites" only.
    kl_warmup_steps: W > 0 weights the KL term of the training loss by min(1, step / W):
      the encoder commits to cells before the rate penalty shapes them. 2000 by default,
      which won the study's first round (docs/counting_study.md); 0 is the paper's
      objective.
      Only the gradient changes; the reported loss is the full negative ELBO.
    kl_weight: beta, the KL term's weight in the training objective once warmed up:
      nll + beta * kl. 1 is the ELBO (the paper). With beta > 1 an object must buy more
      likelihood per nat of KL to be worth encoding (the beta-VAE of Higgins et al. 2017),
      so a second cell that only refines a sprite another object already draws can cost more
      than it gains. Only the gradient changes; the reported loss is the negative ELBO.
    precision: "float32", or "mixed_bfloat16" to compute the encoder and decoder in
      bfloat16 (variables, KL, selection and losses stay float32). It may change when a run
      resumes.
    schedule_steps: 0, or the step at which the learning rate reaches final_learning_rate
      when that is not train_steps: a study can stop at equal steps on the paper's
      3,000,000-step schedule (train_steps=6000, schedule_steps=3000000). It may change
      when a run resumes.
    unselected_kl_weight: 0 (the paper), or beta > 0 to add beta times the KL of the
      candidate cells TopKByKL did not select (`losses.unselected_kl`) to the training
      objective, pushing the KL map towards zero off the objects. None (the default) is
      MVAE_UNSELECTED_KL_WEIGHT for the MVAE and 0 for the VAE, filled in by
      `resolve_train_config`. MVAE only; the reported loss stays the negative ELBO.
    unselected_kl_steps: 0 (the default) leaves the end of the unselected cells' KL to
      `unselected_kl_final_steps`; S > 0 charges it only at steps 1..S, and the paper's
      objective after them, whatever train_steps is. Needs unselected_kl_weight > 0. It
      may change when a run resumes.
    unselected_kl_final_steps: K >= 0: the last K steps of train_steps are taken without
      the unselected cells' KL, the paper's objective (steps train_steps - K + 1 ..
      train_steps), after it was charged at steps 1..train_steps - K: the two-phase end of
      study round 19 (docs/counting_study.md), where dropping the cost for the last 8,000
      steps lifted the ELBO about 2 nats, level with the VAE's, and counting fell about 2
      points. Like the learning rate's schedule it follows train_steps, so a resumed run
      with more steps moves it. 0 charges the cost to the end. None (the default) is
      MVAE_UNSELECTED_KL_FINAL_STEPS for an MVAE run of at least
      MVAE_END_PHASE_MIN_TRAIN_STEPS that charges the cost and does not end it with
      `unselected_kl_steps`, else 0, filled in by `resolve_train_config`. It may change
      when a run resumes.
    unselected_kl_free_nats: tau >= 0: each unselected cell is charged only for its KL
      beyond tau nats, max(0, KL_c - tau) (`losses.unselected_kl`), so that the cost keeps
      cells under the counting threshold without pressing every cell to the prior; 0 (the
      default) charges all of it. Needs unselected_kl_weight > 0.
    object_sparsity: lambda >= 0: add lambda * sum_n log(1 + KL_n) over the selected objects
      (`losses.object_sparsity`) to the training objective, weighted by the KL warm-up as
      the KL is: a cost that makes one sprite's information cheaper in one object than
      spread over two. 0 is the paper's objective. None (the default) means the model's
      default, which `resolve_train_config` fills in: MVAE_OBJECT_SPARSITY for the MVAE,
      0 for the VAE. MVAE only; the reported loss stays the negative ELBO.
  """
  num_sprites: int = 8
  presence_prob: float = 0.5
  batch_size: int = 64
  train_steps: int = 3_000_000
  learning_rate: float = 1e-3
  final_learning_rate: float = 1e-5
  seed: int = 0
  dataset: str = "dsprites"
  data_path: str = ""
  variant: str = ""
  kl_warmup_steps: int = 2000
  kl_weight: float = 1.0
  precision: str = "float32"
  unselected_kl_weight: float | None = None
  unselected_kl_steps: int = 0
  unselected_kl_final_steps: int | None = None
  unselected_kl_free_nats: float = 0.0
  schedule_steps: int = 0
  object_sparsity: float | None = None

  @property
  def unselected_kl_last_step(self):
    """The last step at which the unselected cells' KL is charged, or 0 for every step:
    `unselected_kl_steps`, or train_steps - `unselected_kl_final_steps`."""
    if self.unselected_kl_steps:
      return self.unselected_kl_steps
    if self.unselected_kl_final_steps:
      return self.train_steps - self.unselected_kl_final_steps
    return 0

  @property
  def learning_rate_steps(self):
    """T of the log-linear schedule: schedule_steps, or train_steps when it is 0."""
    return self.schedule_steps or self.train_steps

  def __post_init__(self):
    _require(self.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)}; "
             f"received {self.precision!r}")
    try:
      validate_data_args(self.num_sprites, self.batch_size, self.seed,
                              self.presence_prob)
    except ValueError as e:
      raise ConfigError(str(e).replace("argument `", "--").replace("`.", ":")) from None
    _require(self.dataset in DATASETS, f"--dataset must be one of {', '.join(DATASETS)}; "
             f"received {self.dataset!r}")
    if self.dataset == "multi_dsprites":
      _require(self.data_path and self.variant,
               "--dataset=multi_dsprites needs --data_path=FILE.tfrecords and --variant")
    else:
      _require(not self.data_path and not self.variant,
               "--data_path and --variant apply only to --dataset=multi_dsprites")
    _require(is_int(self.kl_warmup_steps) and self.kl_warmup_steps >= 0,
             f"--kl_warmup_steps must be an integer >= 0; received {self.kl_warmup_steps!r}")
    _require(is_finite_number(self.kl_weight) and self.kl_weight > 0,
             f"--kl_weight must be a finite number > 0; received {self.kl_weight!r}")
    _require(self.unselected_kl_weight is None
             or (is_finite_number(self.unselected_kl_weight)
                 and self.unselected_kl_weight >= 0),
             "--unselected_kl_weight must be a number >= 0; received "
             f"{self.unselected_kl_weight!r}")
    _require(is_int(self.unselected_kl_steps) and self.unselected_kl_steps >= 0,
             "--unselected_kl_steps must be an integer >= 0; received "
             f"{self.unselected_kl_steps!r}")
    _require(self.unselected_kl_final_steps is None
             or (is_int(self.unselected_kl_final_steps)
                 and self.unselected_kl_final_steps >= 0),
             "--unselected_kl_final_steps must be an integer >= 0; received "
             f"{self.unselected_kl_final_steps!r}")
    _require(is_finite_number(self.unselected_kl_free_nats)
             and self.unselected_kl_free_nats >= 0,
             "--unselected_kl_free_nats must be a finite number >= 0; received "
             f"{self.unselected_kl_free_nats!r}")
    _require(self.object_sparsity is None
             or (is_finite_number(self.object_sparsity) and self.object_sparsity >= 0),
             "--object_sparsity must be a finite number >= 0; received "
             f"{self.object_sparsity!r}")
    _require(is_int(self.schedule_steps) and self.schedule_steps >= 0,
             f"--schedule_steps must be an integer >= 0; received {self.schedule_steps!r}")
    _require(is_int(self.train_steps) and self.train_steps >= 1,
             f"--train_steps must be an integer >= 1; received {self.train_steps!r}")
    for name in ("learning_rate", "final_learning_rate"):
      value = getattr(self, name)
      _require(isinstance(value, (int, float)) and value > 0,
               f"--{name} must be a number > 0; received {value!r}")


# Settings that may change when a run resumes: they do not change what was learnt so far.
RESUMABLE_KEYS = frozenset({"train.train_steps", "train.precision", "train.schedule_steps",
                            "train.unselected_kl_steps",
                            "train.unselected_kl_final_steps"})


def to_dict(model_config, train_config):
  return {"model": dataclasses.asdict(model_config), "train": dataclasses.asdict(train_config)}


# What runs recorded before a setting existed trained with, where that differs from today's
# default: a config.json without `kl_warmup_steps`, `object_sparsity` or
# `unselected_kl_weight` was trained with the paper's objective, and one without
# `num_pooling` or `suppression_radius` with a 4x4 grid and plain top-N selection; one
# without `unselected_kl_final_steps` charged the unselected cells' KL to the end (or to
# `unselected_kl_steps`).
_UNRECORDED_TRAIN_SETTINGS = {"kl_warmup_steps": 0, "object_sparsity": 0.0,
                              "unselected_kl_weight": 0.0, "unselected_kl_steps": 0,
                              "unselected_kl_final_steps": 0,
                              "unselected_kl_free_nats": 0.0}
_UNRECORDED_MODEL_SETTINGS = {"num_pooling": 4, "suppression_radius": 0}

# The MVAE's defaults of the training costs that `resolve_train_config` fills in; the VAE's
# are 0.
_MVAE_COST_DEFAULTS = {"object_sparsity": MVAE_OBJECT_SPARSITY,
                       "unselected_kl_weight": MVAE_UNSELECTED_KL_WEIGHT}

# Training costs on the selected objects, which the VAE (one latent, nothing selected) lacks.
MVAE_ONLY_COSTS = tuple(_MVAE_COST_DEFAULTS)
# Settings that shape the unselected cells' cost, which the VAE lacks too.
_UNSELECTED_KL_SHAPES = ("unselected_kl_steps", "unselected_kl_final_steps",
                         "unselected_kl_free_nats")


def resolve_train_config(model_config, train_config):
  """`train_config` with its model-dependent defaults filled in, checked against the model.

  An unset `object_sparsity` or `unselected_kl_weight` (None) becomes the MVAE's default
  (MVAE_OBJECT_SPARSITY, MVAE_UNSELECTED_KL_WEIGHT) for the MVAE and 0 for the VAE; a VAE
  given a nonzero MVAE-only cost raises ConfigError, as do `unselected_kl_steps`,
  `unselected_kl_final_steps` and `unselected_kl_free_nats` without the cost they shape.
  An unset `unselected_kl_final_steps` becomes the end phase MVAE_UNSELECTED_KL_FINAL_STEPS
  when the cost is charged, not ended by `unselected_kl_steps`, and train_steps is at least
  MVAE_END_PHASE_MIN_TRAIN_STEPS; otherwise 0. Resolving a resolved config returns it
  unchanged, so `training.train` and `training.Trainer` both call it.
  """
  for name, mvae_default in _MVAE_COST_DEFAULTS.items():
    if getattr(train_config, name) is None:
      default = mvae_default if model_config.model == "mvae" else 0.0
      train_config = dataclasses.replace(train_config, **{name: default})
  if model_config.model == "vae":
    for name in MVAE_ONLY_COSTS + _UNSELECTED_KL_SHAPES:
      _require(not getattr(train_config, name),
               f"--{name} does not apply to --model=vae (it selects no cells); "
               f"received {getattr(train_config, name)}")
  _require(not train_config.unselected_kl_steps or train_config.unselected_kl_weight,
           f"--unselected_kl_steps={train_config.unselected_kl_steps} ends a cost that is "
           "not charged: it needs --unselected_kl_weight > 0 (and --model=mvae)")
  _require(not train_config.unselected_kl_free_nats or train_config.unselected_kl_weight,
           f"--unselected_kl_free_nats={train_config.unselected_kl_free_nats:g} shapes a "
           "cost that is not charged: it needs --unselected_kl_weight > 0 (and --model=mvae)")
  return _resolve_end_phase(train_config)


def _resolve_end_phase(train_config):
  """`train_config` with `unselected_kl_final_steps` filled in (None: the MVAE's end
  phase for a long run that charges the cost, else 0) and checked."""
  final = train_config.unselected_kl_final_steps
  if final is None:
    default = (train_config.unselected_kl_weight and not train_config.unselected_kl_steps
               and train_config.train_steps >= MVAE_END_PHASE_MIN_TRAIN_STEPS)
    return dataclasses.replace(
        train_config, unselected_kl_final_steps=MVAE_UNSELECTED_KL_FINAL_STEPS if default else 0)
  if final:
    _require(train_config.unselected_kl_weight,
             f"--unselected_kl_final_steps={final} ends a cost that is not charged: it needs "
             "--unselected_kl_weight > 0 (and --model=mvae)")
    _require(not train_config.unselected_kl_steps,
             f"--unselected_kl_steps={train_config.unselected_kl_steps} and "
             f"--unselected_kl_final_steps={final} both end the unselected cells' KL; give one")
    _require(final < train_config.train_steps,
             f"--unselected_kl_final_steps={final} leaves no step of --train_steps="
             f"{train_config.train_steps} with the unselected cells' KL: give fewer, or "
             "--unselected_kl_weight=0 for the paper's objective throughout")
  return train_config


def from_dict(config):
  """Inverse of `to_dict`; raises ConfigError on a malformed dict."""
  try:
    train = {**_UNRECORDED_TRAIN_SETTINGS, **config["train"]}
    model_config = ModelConfig(**{**_UNRECORDED_MODEL_SETTINGS, **config["model"]})
    return model_config, resolve_train_config(model_config, TrainConfig(**train))
  except (KeyError, TypeError) as e:
    raise ConfigError(f"missing or unexpected setting {e}") from None


def _flatten(config):
  return {f"{section}.{key}": value
          for section, values in config.items() for key, value in values.items()}


def config_differences(saved, requested):
  """Names the settings (`section.key: saved -> requested`) that may not change on resume."""
  saved, requested = _flatten(saved), _flatten(requested)
  return [f"{key}: {saved.get(key)!r} -> {requested.get(key)!r}"
          for key in sorted(set(saved) | set(requested))
          if key not in RESUMABLE_KEYS and saved.get(key) != requested.get(key)]


def config_path(model_dir):
  return os.path.join(model_dir, CONFIG_FILE)


def read_run_config(model_dir):
  """Reads `config.json` from a model directory as (ModelConfig, TrainConfig)."""
  path = config_path(model_dir)
  if not os.path.isfile(path):
    raise ConfigError(f"no run configuration {path}: is {model_dir!r} a train.py model_dir?")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:  # ValueError: not JSON, or not text at all.
    raise ConfigError(f"unreadable run configuration {path}: {e}; restore it from a copy or "
                      "start a new --model_dir") from None
  try:
    return from_dict(saved)
  except ConfigError as e:
    raise ConfigError(f"malformed run configuration {path}: {e}") from None


def write_file_atomic(path, write, mode="w"):
  """Calls `write(f)` on a temporary file beside `path`, then renames it into place, so
  `path` holds the old file or the whole new one, never a part.

  The temporary is created as `open()` creates a new file (mode 0o666 less the umask), not
  with mkstemp's owner-only 0o600, so a shared directory's files stay readable; a random
  name and O_EXCL keep two writers apart. `mode` is "w" (text) or "wb".
  """
  directory = os.path.dirname(os.path.abspath(path))
  suffix = os.path.splitext(path)[1]
  tmp = os.path.join(directory, f".tmp-{secrets.token_hex(8)}{suffix}")
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path, obj):
  """Writes `obj` as JSON to `path` (`write_file_atomic`)."""

  def write(f):
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")

  write_file_atomic(path, write)
