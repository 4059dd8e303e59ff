"""evaluate.py end to end on a tiny model: every figure and every key of metrics.json."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mvae_tf import config, training
from strategies import strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--elbo_scenes=32", "--search_scenes=64", "--test_scenes=64",
         "--segmentation_scenes=32", "--exchange_pairs=16", "--sequential_scenes=16"]


def _train(model_dir, model_config):
  options = training.LoopOptions(log_every_secs=1e9, summary_every_steps=1)
  train_config = config.TrainConfig(num_sprites=2, batch_size=4, train_steps=3, seed=1)
  training.train(model_config, train_config, model_dir, strategy("/cpu:0"), options,
                 log=lambda _: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  mvae_dir, vae_dir = (str(tmp_path_factory.mktemp(n)) for n in ("mvae", "vae"))
  _train(mvae_dir, config.ModelConfig("mvae", num_objects=3, latent_dim=4))
  _train(vae_dir, config.ModelConfig("vae", num_objects=1, latent_dim=6))
  return mvae_dir, vae_dir


@pytest.fixture(scope="module")
def exports(tmp_path_factory, runs):
  """The runs' exports: (mvae version directory, vae version directory)."""
  from mvae_tf import export
  base = tmp_path_factory.mktemp("serving")
  return tuple(export.export(run, str(base / name)) for run, name in zip(runs, ("m", "v")))


def test_evaluate_writes_every_figure_and_key(tmp_path, runs):
  mvae_dir, vae_dir = runs
  out = str(tmp_path / "out")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "evaluate.py"), f"--model_dir={mvae_dir}",
       f"--vae_model_dir={vae_dir}", f"--output_dir={out}", "--tensorboard", *SMALL],
      capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  # One progress line per stage, each with the elapsed seconds and an ETA (none before the
  # first stage has finished).
  progress = [l for l in result.stdout.splitlines() if l.startswith("[")]
  stages = ["test ELBO", "object counting", "segmentation", "entity exchange",
            "sequential decoding", "figures", "VAE baseline"]
  assert len(progress) == len(stages), result.stdout
  for line, stage in zip(progress, stages):
    assert re.fullmatch(r"\[\s*\d+s, ETA\s+(nan|\d+)s\] " + stage, line), line
  assert "ETA   nan" in progress[0] and "nan" not in progress[-1]
  figures = {"reconstructions_samples.png", "kl_maps.png", "entity_exchange.png",
             "sequential_decoding.png", "traversals.png", "vae_traversals.png",
             "training_curves.png"}
  assert figures <= set(os.listdir(out))
  assert os.listdir(os.path.join(out, "tensorboard"))
  with open(os.path.join(out, "metrics.json")) as f:
    metrics = json.load(f)
  for key in ("test_elbo", "object_counting", "segmentation", "entity_exchange",
              "sequential_decoding", "vae_baseline"):
    assert key in metrics, key
  assert metrics["object_counting"]["test"]["scenes"] == 64
  readout = metrics["object_counting"]["decoder_readout"]
  assert 0 <= readout["test"]["accuracy"] <= 1 and readout["pixel_threshold"] >= 0
  assert len(readout["test"]["confusion_true_by_predicted"]) == 3
  selected = metrics["object_counting"]["selected_kl_readout"]
  assert 0 <= selected["test"]["accuracy"] <= 1
  _assert_centre_cell_reference(metrics["object_counting"], num_sprites=2)
  _assert_error_breakdown(metrics["object_counting"])
  assert len(metrics["object_counting"]["test"]["confusion_true_by_predicted"]) == 3
  assert len(metrics["sequential_decoding"]["nll_by_objects"]) == 3
  assert 0 <= metrics["entity_exchange"]["success_rate"] <= 1
  assert -1 <= metrics["segmentation"]["fg_ari"] <= 1
  lone = metrics["lone_sprite_decoding"]
  assert (lone["num_sprites"], lone["presence_prob"], lone["scenes"]) == (1, 1.0, 16)
  assert np.isclose(lone["excess_nll"], lone["top_object_nll"] - lone["all_objects_nll"])
  assert len(lone["top_object_kl_by_dim"]) == 4  # latent_dim of the tiny run.
  assert 0 <= lone["top_object_active_dims"] <= 4
  for section in ("test_elbo", "segmentation", "sequential_decoding", "lone_sprite_decoding"):
    assert {"seed", "scenes"} <= set(metrics[section]), section
  _assert_elbo_breakdown(metrics["test_elbo"], num_sprites=2)
  assert {"seed", "pairs", "scored_pairs"} <= set(metrics["entity_exchange"])


def _run(program, *flags):
  return subprocess.run([sys.executable, os.path.join(ROOT, program), *flags],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)


def _evaluate(*flags):
  return _run("evaluate.py", *flags)


def _count_objects(*flags):
  return _run("count_objects.py", *flags)


def _assert_one_error(program, flags, message):
  """`program` with `flags` exits 2 with one line `<program>: error: ...` matching
  `message`, and no traceback."""
  result = _run(program, *flags)
  assert result.returncode == 2, (flags, result.stderr[-2000:])
  errors = [l for l in result.stderr.splitlines() if l.startswith(f"{program}: error:")]
  assert len(errors) == 1 and re.search(message, errors[0]), (flags, result.stderr[-2000:])
  assert "Traceback" not in result.stderr


def test_evaluate_flag_errors(tmp_path, runs, exports):
  mvae_dir, vae_dir = runs
  empty = tmp_path / "empty"
  empty.mkdir()
  (tmp_path / "a_file").write_text("not a directory")
  out = f"--output_dir={tmp_path}/o"
  for flags, message in [
      ([f"--output_dir={tmp_path}"], "exactly one of"),
      ([f"--model_dir={mvae_dir}"], "--output_dir is required"),
      ([f"--model_dir={empty}", out], "--model_dir '.*empty' is empty"),
      ([f"--model_dir={mvae_dir}", f"--vae_model_dir={empty}", out],
       "--vae_model_dir '.*empty' is empty"),
      ([f"--model_dir={mvae_dir}", f"--vae_model_dir={mvae_dir}", out],
       "holds a --model=mvae run, not a VAE"),
      ([f"--saved_model={empty}", out], "holds no saved_model.pb"),
      ([f"--model_dir={mvae_dir}", f"--vae_saved_model={empty}", out],
       "--vae_saved_model '.*empty' holds no saved_model.pb"),
      ([f"--model_dir={mvae_dir}", f"--vae_model_dir={vae_dir}",
        f"--vae_saved_model={exports[1]}", out], "at most one of --vae_model_dir and"),
      ([f"--model_dir={mvae_dir}", f"--vae_saved_model={exports[0]}", out],
       "holds a --model=mvae export, not a VAE"),
      ([f"--model_dir={mvae_dir}", "--presence_prob=1.5", out], "--presence_prob must be"),
      # Bad scene counts and seeds fail at once, not in the stage that uses them.
      *[([f"--model_dir={mvae_dir}", f"--{flag}=0", out], f"--{flag} must be >= 1; "
         "received 0") for flag in ("elbo_scenes", "search_scenes", "test_scenes",
                                    "segmentation_scenes", "exchange_pairs",
                                    "sequential_scenes")],
      ([f"--model_dir={mvae_dir}", "--seed=-1", out], "--seed must be >= 0; received -1"),
      ([f"--model_dir={mvae_dir}", f"--output_dir={tmp_path}/a_file"],
       "--output_dir '.*a_file' is a file, not a directory"),
  ]:
    _assert_one_error("evaluate.py", flags, message)
    assert not os.path.exists(f"{tmp_path}/o"), flags  # Failed before any work.


def test_evaluate_a_saved_model_reads_the_data_from_its_metadata(tmp_path, exports):
  path, vae_path = exports
  out = tmp_path / "out"
  result = _evaluate(f"--saved_model={path}", f"--vae_saved_model={vae_path}",
                     f"--output_dir={out}", *SMALL)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((out / "metrics.json").read_text())
  # The exported VAE is the baseline: scored on the same scenes, its traversals drawn over
  # all its dimensions; no training curve, which an export does not keep.
  baseline = metrics["vae_baseline"]
  assert (baseline["saved_model"], baseline["step"]) == (vae_path, 3)
  assert baseline["test_elbo"]["seed"] == metrics["test_elbo"]["seed"]
  assert np.isclose(baseline["mvae_minus_vae_elbo"],
                    metrics["test_elbo"]["elbo"] - baseline["test_elbo"]["elbo"])
  # The gap by kind of scene: the same bins, each the difference of the two breakdowns.
  gap = baseline["mvae_minus_vae_elbo_by_scene"]
  for group, bins in metrics["test_elbo"]["by_scene"].items():
    for ours, theirs, diff in zip(bins, baseline["test_elbo"]["by_scene"][group], gap[group]):
      assert ours["scenes"] == theirs["scenes"] == diff["scenes"]
      if ours["scenes"]:
        assert np.isclose(diff["elbo"], ours["elbo"] - theirs["elbo"])
  assert "vae_traversals.png" in metrics["figures"]
  assert "training_curves.png" not in os.listdir(out)
  assert (metrics["num_sprites"], metrics["presence_prob"]) == (2, 0.5)
  assert metrics["source"]["metadata"]["model"] == "mvae"
  assert metrics["source"]["step"] == 3
  assert len(metrics["object_counting"]["test"]["confusion_true_by_predicted"]) == 3
  for section in ("test_elbo", "segmentation", "entity_exchange", "sequential_decoding"):
    assert (metrics[section]["presence_prob"], metrics[section]["batch_size"]) == (0.5, 128)
  assert metrics["object_counting"]["test"]["batch_size"] == 256
  # The flags override the metadata: one sprite slot, always filled.
  override = tmp_path / "override"
  result = _evaluate(f"--saved_model={path}", f"--output_dir={override}",
                     "--num_sprites=1", "--presence_prob=1", *SMALL)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((override / "metrics.json").read_text())
  assert (metrics["num_sprites"], metrics["presence_prob"]) == (1, 1.0)
  confusion = np.array(metrics["object_counting"]["test"]["confusion_true_by_predicted"])
  assert confusion.shape[0] == 2 and confusion[0].sum() == 0  # Every scene has its sprite.


def test_count_objects_flag_errors(tmp_path, runs, exports):
  mvae_dir, vae_dir = runs
  empty = tmp_path / "empty"
  empty.mkdir()
  for flags, message in [
      ([], "exactly one of --model_dir and --saved_model"),
      ([f"--model_dir={mvae_dir}", f"--saved_model={exports[0]}"], "exactly one of"),
      ([f"--model_dir={empty}"], "--model_dir '.*empty' is empty"),
      ([f"--saved_model={empty}"], "--saved_model '.*empty' holds no saved_model.pb"),
      ([f"--model_dir={vae_dir}"], "--model_dir '.*' holds a --model=vae model: counting"),
      ([f"--saved_model={exports[1]}"], "--saved_model '.*' holds a --model=vae model"),
      ([f"--model_dir={mvae_dir}", "--search_scenes=0"],
       "--search_scenes must be >= 1; received 0"),
      ([f"--model_dir={mvae_dir}", "--test_scenes=-3"],
       "--test_scenes must be >= 1; received -3"),
      ([f"--model_dir={mvae_dir}", "--test_seed=-1"], "--test_seed must be >= 0"),
      ([f"--model_dir={mvae_dir}", "--num_sprites=0"], "--num_sprites must be >= 1"),
      ([f"--model_dir={mvae_dir}", "--presence_prob=2"], "--presence_prob must be between"),
      ([f"--model_dir={mvae_dir}", f"--output={tmp_path}"], "--output .*: give a file in"),
      ([f"--model_dir={mvae_dir}", f"--output={tmp_path}/missing/count.json"],
       "an existing directory"),
  ]:
    _assert_one_error("count_objects.py", flags, message)


def test_restoring_a_missing_empty_or_misconfigured_model_dir_is_one_clear_error(tmp_path):
  from mvae_tf import checkpoints
  empty = tmp_path / "empty"
  empty.mkdir()
  bad_config = tmp_path / "bad_config"
  bad_config.mkdir()
  (bad_config / "config.json").write_text('{"model": {"model": "mvae", "latent_dim": "x"')
  for model_dir, message in [(tmp_path / "missing", r"--model_dir '.*missing' is not a "
                                                     r"directory"),
                             (empty, r"--model_dir '.*empty' is empty"),
                             (bad_config, r"unreadable run configuration .*config.json")]:
    with pytest.raises((checkpoints.CheckpointError, config.ConfigError), match=message):
      checkpoints.restore_model(str(model_dir))


def test_count_objects_reports_the_protocol(tmp_path, runs):
  mvae_dir, _ = runs
  output = tmp_path / "count.json"
  result = _count_objects(f"--model_dir={mvae_dir}", "--search_scenes=64", "--test_scenes=96",
                          "--search_seed=5", "--test_seed=6", f"--output={output}")
  assert result.returncode == 0, result.stderr[-2000:]
  counted = json.loads(output.read_text())
  assert counted == json.loads(result.stdout)
  # Progress on stderr, one line per stage, each with the seconds elapsed.
  stages = [l for l in result.stderr.splitlines() if re.match(r"\[\s*\d+s\] ", l)]
  assert [re.sub(r"^\[\s*\d+s\] ", "", l) for l in stages] == [
      "encoding the 64 search scenes (seed 5)", "encoding the 96 test scenes (seed 6)",
      "searching the thresholds"]
  grid = config.ModelConfig("mvae", num_objects=3, latent_dim=4).kl_map_size
  assert (counted["model_dir"], counted["step"], counted["grid"]) == (mvae_dir, 3, grid)
  assert (counted["num_sprites"], counted["presence_prob"]) == (2, 0.5)
  assert (counted["search"]["scenes"], counted["test"]["scenes"]) == (64, 96)
  assert (counted["search"]["seed"], counted["test"]["seed"]) == (5, 6)
  matrix = np.array(counted["test"]["confusion_true_by_predicted"])
  assert matrix.sum() == 96 and matrix.shape[0] == 3  # Counts 0..2 of 2 sprite slots.
  assert np.trace(matrix) / 96 == pytest.approx(counted["test"]["accuracy"])
  _assert_centre_cell_reference(counted, num_sprites=2)
  _assert_error_breakdown(counted)


def test_count_objects_on_an_export_counts_as_on_its_run(tmp_path, runs, exports):
  """The export of a run's last step encodes the same KL maps, so counting on the same
  scenes gives the same confusion matrix; the flags override the data it records."""
  mvae_dir, _ = runs
  flags = ["--search_scenes=64", "--test_scenes=64", "--search_seed=5", "--test_seed=6"]
  by_run = json.loads(_count_objects(f"--model_dir={mvae_dir}", *flags).stdout)
  result = _count_objects(f"--saved_model={exports[0]}", *flags)
  assert result.returncode == 0, result.stderr[-2000:]
  by_export = json.loads(result.stdout)
  assert by_export["saved_model"] == exports[0] and "model_dir" not in by_export
  for key in ("step", "grid", "num_sprites", "presence_prob"):
    assert by_export[key] == by_run[key], key
  assert (by_export["test"]["confusion_true_by_predicted"]
          == by_run["test"]["confusion_true_by_predicted"])
  assert by_export["test"]["accuracy"] == pytest.approx(by_run["test"]["accuracy"])
  result = _count_objects(f"--saved_model={exports[0]}", "--num_sprites=1",
                          "--presence_prob=1", *flags)
  assert result.returncode == 0, result.stderr[-2000:]
  overridden = json.loads(result.stdout)
  assert (overridden["num_sprites"], overridden["presence_prob"]) == (1, 1.0)
  matrix = np.array(overridden["test"]["confusion_true_by_predicted"])
  assert matrix.shape[0] == 2 and matrix[0].sum() == 0  # Every scene has its one sprite.


def test_numpy_sigmoid_matches_tf_without_overflow():
  import warnings

  import tensorflow as tf

  from mvae_tf import evaluation
  logits = np.array([-1e4, -90.0, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4], np.float32)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # 1 / (1 + exp(-x)) warned of overflow at x = -1e4.
    probs = evaluation.sigmoid(logits)
  np.testing.assert_allclose(probs, tf.sigmoid(logits).numpy(), rtol=1e-6, atol=1e-30)
  assert probs.dtype == np.float32 and probs[2] > 0  # tiny likelihoods keep their order.


def test_lone_sprite_decoding_known_answer():
  """A codec whose every decode is 0 logits: each image costs 64 * 64 * 3 * log 2 nats
  whether one object or all are decoded, so the excess is 0; the top object is decoded on
  its own and all N together."""
  from mvae_tf import evaluation
  widths = []

  def decode(latents):
    widths.append(latents.shape[1])
    return np.zeros([latents.shape[0], 64, 64, 3], np.float32)

  # The top object's posterior: dimension 0 at the prior, 1 with loc 2 (KL 2 nats), 2 with
  # scale e^-1 (KL (e^-2 - 1) / 2 + 1 = 0.568 nats); the other objects' do not count.
  loc = np.zeros([4, 3], np.float32)
  loc[0, 1], loc[1:] = 2.0, 5.0
  scale = np.ones([4, 3], np.float32)
  scale[0, 2] = np.exp(-1.0)
  codec = evaluation.Codec(
      lambda x: {"loc": np.broadcast_to(loc, (len(x), 4, 3)),
                 "scale": np.broadcast_to(scale, (len(x), 4, 3))}, decode,
      num_objects=4, latent_dim=3)
  lone = evaluation.lone_sprite_decoding(codec, num_scenes=5, seed=3)
  assert sorted(set(widths)) == [1, 4]
  np.testing.assert_allclose([lone["top_object_nll"], lone["all_objects_nll"]],
                             64 * 64 * 3 * np.log(2), rtol=1e-5)
  assert lone["excess_nll"] == 0 and lone["scenes"] == 5 and lone["seed"] == 3
  np.testing.assert_allclose(lone["top_object_kl_by_dim"],
                             [2.0, (np.exp(-2.0) - 1) / 2 + 1, 0.0], atol=1e-6)
  assert lone["top_object_active_dims"] == 2


def test_gaussian_kl_per_dim_matches_tfp():
  import tensorflow_probability as tfp
  from mvae_tf import evaluation
  rng = np.random.RandomState(0)
  loc, scale = rng.normal(size=[3, 5]), np.exp(rng.normal(size=[3, 5]))
  expected = tfp.distributions.Normal(loc, scale).kl_divergence(
      tfp.distributions.Normal(np.float64(0), np.float64(1)))
  np.testing.assert_allclose(evaluation.gaussian_kl_per_dim(loc, scale), expected, rtol=1e-10)


def _assert_elbo_breakdown(test_elbo, num_sprites):
  """The bins by count partition the scenes and their means weight up to the overall
  terms; the scale and distance bins partition the scenes of one sprite and of several."""
  by_count = test_elbo["by_scene"]["by_count"]
  assert [b["from"] for b in by_count] == list(range(num_sprites + 1))
  assert sum(b["scenes"] for b in by_count) == test_elbo["scenes"]
  for term in ("nll", "kl", "elbo"):
    total = sum(b[term] * b["scenes"] for b in by_count if b["scenes"])
    assert total == pytest.approx(test_elbo[term] * test_elbo["scenes"], rel=1e-5)
  for group, counts in (("one_sprite_by_scale", [1]),
                        ("several_sprites_by_nearest_distance_px", range(2, num_sprites + 1)),
                        ("several_sprites_by_overlap_px", range(2, num_sprites + 1))):
    assert (sum(b["scenes"] for b in test_elbo["by_scene"][group])
            == sum(by_count[c]["scenes"] for c in counts))


def test_overlap_pixels_known_answer():
  """Three scenes drawn by the data's own renderer: apart, overlapping, and one sprite.
  The overlap is recounted from each sprite's own cover."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mvae_tf import data  # pylint: disable=g-import-not-at-top
  from mvae_tf import evaluation  # pylint: disable=g-import-not-at-top
  # [B=3, S=2] sprites: two squares of scale 0.5, far apart, then 4 px apart, then one.
  present = tf.constant([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
  shape = tf.zeros([3, 2], tf.int32)
  scale = tf.fill([3, 2], 0.5)
  orientation = tf.zeros([3, 2])
  position = tf.constant([[[0.25, 0.25], [0.75, 0.75]], [[0.47, 0.47], [0.47, 0.53]],
                          [[0.47, 0.47], [0.47, 0.53]]])  # (y, x), fractions of the side
  colour = tf.fill([3, 2, 3], 0.5)
  _, masks = data.render_scenes(present, shape, scale, orientation, position, colour)
  masks = masks.numpy()  # [3, 3, 64, 64]
  got = evaluation.overlap_pixels(masks)
  alone = [data.render_scenes(present * tf.constant([[1.0, 0.0]]), shape, scale, orientation,
                              position, colour)[1].numpy()[:, 1],
           data.render_scenes(present * tf.constant([[0.0, 1.0]]), shape, scale, orientation,
                              position, colour)[1].numpy()[:, 2]]  # 2 x [3, 64, 64]
  expected = ((alone[0] > 0) & (alone[1] > 0)).sum(axis=(1, 2))  # [3]
  assert got.tolist() == expected.tolist()
  assert got[0] == 0 and got[1] > 20 and got[2] == 0


def test_elbo_by_scene_known_answer():
  """Planted terms: six scenes of 0-2 sprites; each group's mean is hand-computed, an empty
  bin is None, and the gap to a baseline is the difference bin by bin."""
  from mvae_tf import evaluation
  nll = np.array([1.0, 10.0, 30.0, 100.0, 200.0, 50.0])
  kl = np.array([1.0, 2.0, 4.0, 6.0, 8.0, 10.0])
  counts = np.array([0, 1, 1, 2, 2, 2])
  nearest = np.array([np.inf, np.inf, np.inf, 4.0, 12.0, 5.0])
  scale = np.array([0.0, 0.55, 0.9, 0.7, 0.7, 0.7])
  overlap = np.array([0, 0, 0, 120, 0, 7])
  got = evaluation.elbo_by_scene(nll, kl, counts, nearest, scale, overlap, num_sprites=2)
  by_count = got["by_count"]
  assert [(b["from"], b["scenes"]) for b in by_count] == [(0, 1), (1, 2), (2, 3)]
  assert (by_count[1]["nll"], by_count[1]["kl"], by_count[1]["elbo"]) == (20.0, 3.0, -23.0)
  assert by_count[2]["elbo"] == pytest.approx(-(350 + 24) / 3)
  scales = got["one_sprite_by_scale"]
  assert [b["scenes"] for b in scales] == [1, 0, 1]
  assert scales[0]["elbo"] == -12.0 and scales[1]["elbo"] is None and scales[2]["elbo"] == -34.0
  near = got["several_sprites_by_nearest_distance_px"]
  assert [b["scenes"] for b in near] == [2, 1, 0]
  assert near[0]["elbo"] == -83.0 and near[1]["elbo"] == -208.0
  shared = got["several_sprites_by_overlap_px"]
  assert [(b["from"], b["to"], b["scenes"]) for b in shared] == [
      (0.0, 1.0, 1), (1.0, 50.0, 1), (50.0, 4096.0, 1)]
  assert [b["elbo"] for b in shared] == [-208.0, -60.0, -106.0]
  baseline = evaluation.elbo_by_scene(nll - 5, kl, counts, nearest, scale, overlap,
                                      num_sprites=2)
  gap = evaluation.elbo_gap_by_scene(got, baseline)
  assert [b["elbo"] for b in gap["by_count"]] == [-5.0, -5.0, -5.0]
  assert gap["one_sprite_by_scale"][1] == {"from": 2 / 3, "to": 5 / 6, "scenes": 0,
                                           "elbo": None}
  other = evaluation.elbo_by_scene(nll[1:], kl[1:], counts[1:], nearest[1:], scale[1:],
                                   overlap[1:], 2)
  with pytest.raises(ValueError, match="the same scenes in each bin of 'by_count'"):
    evaluation.elbo_gap_by_scene(got, other)


def _assert_error_breakdown(result):
  """The error bins partition the test scenes of one sprite and of several, and their
  right / under / over fractions add up to the confusion matrix's."""
  matrix = np.array(result["test"]["confusion_true_by_predicted"])
  errors = result["errors"]
  for bins, rows in ((errors["one_sprite_by_scale"], [1]),
                     (errors["several_sprites_by_nearest_distance_px"], range(2, len(matrix))),
                     (errors["several_sprites_by_overlap_px"], range(2, len(matrix)))):
    assert sum(b["scenes"] for b in bins) == matrix[list(rows)].sum()
    for kind, cells in (("accuracy", lambda i, j: i == j), ("under", lambda i, j: j < i),
                        ("over", lambda i, j: j > i)):
      expected = sum(matrix[i, j] for i in rows for j in range(matrix.shape[1]) if cells(i, j))
      assert sum(b[kind] * b["scenes"] for b in bins if b["scenes"]) == pytest.approx(expected)


def _assert_centre_cell_reference(result, num_sprites):
  """The reference's accuracy, recomputed from the same test scenes with Python sets."""
  from mvae_tf import evaluation  # pylint: disable=g-import-not-at-top
  test = result["test"]
  grid = result["centre_cell_reference"]["grid"]
  right = 0
  for batch in evaluation.scenes(num_sprites, test["scenes"], test["seed"],
                                 batch_size=test["batch_size"],
                                 presence_prob=test["presence_prob"]):
    for position, present, count in zip(batch["position"], batch["present"], batch["count"]):
      cells = {(min(int(float(y) * grid), grid - 1), min(int(float(x) * grid), grid - 1))
               for (y, x), p in zip(position, present) if p}
      right += len(cells) == count
  assert result["centre_cell_reference"]["test"]["accuracy"] == right / test["scenes"]
