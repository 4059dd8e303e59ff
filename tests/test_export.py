"""export.py and its SavedModel: the signature contract in Python, in the C++ loader TF
Serving uses, in Keras (TFSMLayer) and in saved_model_cli; errors; atomic versions."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import checkpoints, config, export, training
import c_saved_model
from strategies import strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, N, D = 2, 3, 5  # Tiny distinct sizes; the 4x4 grid makes kl_map [B, 4, 4].
MVAE = config.ModelConfig("mvae", num_objects=N, latent_dim=D, num_pooling=4)
VAE = config.ModelConfig("vae", num_objects=1, latent_dim=7, num_pooling=4)
QUIET = training.LoopOptions(log_every_secs=1e9)


def _images(batch=B, seed=0):
  return np.random.RandomState(seed).uniform(size=(batch, 64, 64, 3)).astype(np.float32)


def _latents(latent_dim, objects=N, seed=1):
  return np.random.RandomState(seed).randn(B, objects, latent_dim).astype(np.float32)


def _feeds(latent_dim):
  """Inputs for every signature; decode gets a number of objects other than N."""
  return {"encode": {"images": _images()}, "serving_default": {"images": _images()},
          "reconstruct": {"images": _images()},
          "decode": {"latents": _latents(latent_dim, objects=4)}, "metadata": {}}


def _train(tmp_path_factory, model_config, devices):
  model_dir = str(tmp_path_factory.mktemp("run"))
  train_config = config.TrainConfig(num_sprites=2, batch_size=4, train_steps=3, seed=2)
  training.train(model_config, train_config, model_dir, strategy(*devices),
                 QUIET, log=lambda _: None)
  return model_dir


@pytest.fixture(scope="module")
def mvae_run(tmp_path_factory):
  """An MVAE trained 3 steps on 2 logical CPU replicas, and its export."""
  model_dir = _train(tmp_path_factory, MVAE, ["/cpu:0", "/cpu:1"])
  export_dir = str(tmp_path_factory.mktemp("export"))
  path = export.export(model_dir, export_dir)
  return model_dir, export_dir, path


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
  model_dir = _train(tmp_path_factory, VAE, ["/cpu:0"])
  export_dir = str(tmp_path_factory.mktemp("export"))
  return model_dir, export_dir, export.export(model_dir, export_dir)


def _live_outputs(model_dir, latent_dim):
  """What the live Keras model computes for `_feeds`."""
  model, _, _, step = checkpoints.restore_model(model_dir)
  feeds = _feeds(latent_dim)
  encoded = {k: v.numpy() for k, v in model.encode(tf.constant(_images())).items()}
  logits = model.decode(tf.constant(feeds["decode"]["latents"])).numpy()
  reconstruction = tf.sigmoid(model.decode(tf.constant(encoded["loc"]))).numpy()
  return step, {
      "encode": encoded, "serving_default": encoded,
      "decode": {"logits": logits, "images": 1 / (1 + np.exp(-logits))},
      "reconstruct": {"images": reconstruction, "kl": encoded["kl"]},
  }


_FRESH_PROCESS = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    feeds = dict(np.load(sys.argv[2], allow_pickle=True))
    outputs = {}
    for name in ("encode", "serving_default", "reconstruct"):
      for key, value in loaded.signatures[name](images=tf.constant(feeds["images"])).items():
        outputs[name + "/" + key] = value.numpy()
    for key, value in loaded.signatures["decode"](
        latents=tf.constant(feeds["latents"])).items():
      outputs["decode/" + key] = value.numpy()
    for key, value in loaded.signatures["metadata"]().items():
      outputs["metadata/" + key] = value.numpy()
    np.savez(sys.argv[3], **outputs)
""")


def _load_in_fresh_process(path, latent_dim, tmp_path):
  feeds = _feeds(latent_dim)
  np.savez(tmp_path / "feeds.npz", images=feeds["encode"]["images"],
           latents=feeds["decode"]["latents"])
  subprocess.run([sys.executable, "-c", _FRESH_PROCESS, path, str(tmp_path / "feeds.npz"),
                  str(tmp_path / "outputs.npz")], check=True, capture_output=True, timeout=300)
  flat = dict(np.load(tmp_path / "outputs.npz", allow_pickle=True))
  outputs = {}
  for name, value in flat.items():
    signature, key = name.split("/")
    outputs.setdefault(signature, {})[key] = value
  return outputs


def _check_contract(outputs, num_objects, latent_dim, grid):
  assert set(outputs["encode"]) == {"loc", "scale", "kl", "coords", "kl_map"}
  assert outputs["encode"]["loc"].shape == (B, num_objects, latent_dim)
  assert outputs["encode"]["scale"].shape == (B, num_objects, latent_dim)
  assert outputs["encode"]["kl"].shape == (B, num_objects)
  assert outputs["encode"]["coords"].shape == (B, num_objects, 2)
  assert outputs["encode"]["kl_map"].shape == (B, grid, grid)
  assert np.all(np.diff(outputs["encode"]["kl"], axis=1) <= 0)  # Descending KL.
  assert np.all(np.abs(outputs["encode"]["coords"]) <= 1)
  assert set(outputs["decode"]) == {"logits", "images"}
  assert outputs["decode"]["images"].shape == (B, 64, 64, 3)
  assert set(outputs["reconstruct"]) == {"images", "kl"}
  assert outputs["reconstruct"]["kl"].shape == (B, num_objects)


@pytest.mark.parametrize("run_name, model_config", [("mvae_run", MVAE), ("vae_run", VAE)])
def test_python_and_c_loaders_match_the_live_model(request, tmp_path, run_name,
                                                   model_config):
  model_dir, _, path = request.getfixturevalue(run_name)
  dim, objects, grid = model_config.latent_dim, model_config.num_objects, 4
  if model_config.model == "vae":
    grid = 1
  step, live = _live_outputs(model_dir, dim)
  assert os.path.basename(path) == str(step) == "3"
  python = _load_in_fresh_process(path, dim, tmp_path)
  _check_contract(python, objects, dim, grid)
  for signature, outputs in live.items():
    for key, value in outputs.items():
      np.testing.assert_allclose(python[signature][key], value, rtol=1e-5, atol=1e-5,
                                 err_msg=f"{signature}/{key}")
  metadata = python["metadata"]
  assert (int(metadata["num_objects"]), int(metadata["latent_dim"]),
          int(metadata["grid_size"]), int(metadata["step"])) == (objects, dim, grid, step)
  assert metadata["model"] == model_config.model.encode()

  c_model = c_saved_model.CSavedModel(path)
  try:
    assert set(c_model.signatures) == set(export.SIGNATURES)
    for signature, feeds in _feeds(dim).items():
      outputs = c_model.run(signature, feeds)
      for key, value in outputs.items():
        if value.dtype == object:
          assert value == python[signature][key]
        else:
          np.testing.assert_allclose(value, python[signature][key], rtol=1e-5, atol=1e-5,
                                     err_msg=f"C API {signature}/{key}")
  finally:
    c_model.close()


def test_signature_defs_name_inputs_and_keep_the_batch_dynamic(mvae_run):
  _, _, path = mvae_run
  c_model = c_saved_model.CSavedModel(path)
  try:
    sigs = c_model.signatures
  finally:
    c_model.close()
  float32 = 1
  expected = {
      "encode": ({"images": (-1, 64, 64, 3)},
                 {"loc": (-1, N, D), "scale": (-1, N, D), "kl": (-1, N),
                  "coords": (-1, N, 2), "kl_map": (-1, 4, 4)}),
      "decode": ({"latents": (-1, -1, D)},
                 {"logits": (-1, 64, 64, 3), "images": (-1, 64, 64, 3)}),
      "reconstruct": ({"images": (-1, 64, 64, 3)},
                      {"images": (-1, 64, 64, 3), "kl": (-1, N)}),
  }
  expected["serving_default"] = expected["encode"]
  for name, (inputs, outputs) in expected.items():
    assert {k: v.shape for k, v in sigs[name]["inputs"].items()} == inputs, name
    assert {k: v.shape for k, v in sigs[name]["outputs"].items()} == outputs, name
    assert all(v.dtype == float32 for v in sigs[name]["inputs"].values())
    assert sigs[name]["method_name"] == "tensorflow/serving/predict"
  assert set(sigs["metadata"]["outputs"]) == {"num_objects", "latent_dim", "grid_size",
                                              "step", "model", "num_sprites",
                                              "presence_prob"}


def test_saved_model_cli_lists_the_signatures(mvae_run):
  _, _, path = mvae_run
  result = subprocess.run(["saved_model_cli", "show", "--all", "--dir", path],
                          capture_output=True, text=True, timeout=300, check=True)
  for name in export.SIGNATURES:
    assert f"signature_def['{name}']" in result.stdout
  assert re.search(r"inputs\['images'\] tensor_info:\s+dtype: DT_FLOAT\s+"
                   r"shape: \(-1, 64, 64, 3\)", result.stdout)
  assert re.search(rf"inputs\['latents'\] tensor_info:\s+dtype: DT_FLOAT\s+"
                   rf"shape: \(-1, -1, {D}\)", result.stdout)
  assert re.search(rf"outputs\['loc'\] tensor_info:\s+dtype: DT_FLOAT\s+"
                   rf"shape: \(-1, {N}, {D}\)", result.stdout)


def test_tfsm_layer_inside_another_keras_model(mvae_run):
  model_dir, _, path = mvae_run
  inputs = keras.Input((64, 64, 3))
  encoded = keras.layers.TFSMLayer(path, call_endpoint="encode")(inputs)
  count = keras.layers.Lambda(lambda kl: tf.reduce_sum(tf.cast(kl > 1.0, tf.int32), -1))(
      encoded["kl"])
  outer = keras.Model(inputs, {"kl": encoded["kl"], "count": count})
  outputs = outer(tf.constant(_images()))
  _, live = _live_outputs(model_dir, D)
  np.testing.assert_allclose(outputs["kl"].numpy(), live["encode"]["kl"], rtol=1e-5,
                             atol=1e-5)
  assert outputs["count"].shape == (B,)


@pytest.mark.parametrize("signature, feeds, c_message, python_message", [
    ("encode", {"images": np.zeros([B, 32, 64, 3], np.float32)}, "images must be",
     "images must be"),
    ("encode", {"images": np.zeros([B, 64, 64], np.float32)}, "images must be",
     "images must be|shape"),
    ("decode", {"latents": np.zeros([B, 2, D + 1], np.float32)}, "latents must be",
     "latents must be|shape"),
    ("encode", {"images": np.zeros([B, 64, 64, 3], np.float64)}, "float but double",
     "float64|double|dtype"),
])
def test_wrong_inputs_give_a_clear_error(mvae_run, signature, feeds, c_message,
                                         python_message):
  _, _, path = mvae_run
  c_model = c_saved_model.CSavedModel(path)
  try:
    with pytest.raises(c_saved_model.CApiError, match=c_message):
      c_model.run(signature, feeds)
  finally:
    c_model.close()
  loaded = tf.saved_model.load(path)
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError),
                     match=python_message):
    loaded.signatures[signature](**{k: tf.constant(v) for k, v in feeds.items()})


def _export_cli(*flags):
  return subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), *flags],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)


def _numeric(export_dir):
  return sorted(n for n in os.listdir(export_dir) if n.isdigit())


def test_export_cli_versions_and_overwrite(mvae_run, tmp_path):
  # The CLI passes its flags to export.export unchanged, so the first export and the refusal
  # to overwrite go through the CLI (its exit code and one-line error), the rest in-process.
  model_dir, _, _ = mvae_run
  export_dir = str(tmp_path / "serving")
  first = _export_cli(f"--model_dir={model_dir}", f"--export_dir={export_dir}")
  assert first.returncode == 0, first.stderr
  assert os.listdir(export_dir) == ["3"]
  again = _export_cli(f"--model_dir={model_dir}", f"--export_dir={export_dir}")
  assert again.returncode != 0 and "pass --overwrite" in again.stderr
  assert "Traceback" not in again.stderr
  before = os.stat(os.path.join(export_dir, "3", "saved_model.pb")).st_mtime_ns
  export.export(model_dir, export_dir, overwrite=True)
  assert os.stat(os.path.join(export_dir, "3", "saved_model.pb")).st_mtime_ns != before
  export.export(model_dir, export_dir, version=17)
  assert sorted(os.listdir(export_dir)) == ["17", "3"]  # No temporary directory left.


def test_export_cli_errors(tmp_path, mvae_run):
  model_dir, _, _ = mvae_run
  empty = tmp_path / "empty"
  empty.mkdir()
  a_file = tmp_path / "file"
  a_file.write_text("x")
  corrupt = tmp_path / "corrupt"
  corrupt.mkdir()
  for name in os.listdir(model_dir):
    if not name.startswith("events"):
      with open(os.path.join(model_dir, name), "rb") as src:
        content = src.read()
      if ".data-" in name:
        content = content[: len(content) // 2]  # A truncated checkpoint.
      (corrupt / name).write_bytes(content)
  out = str(tmp_path / "out")
  # Two cases through the CLI: a flag it checks itself, and a library error it prints in
  # one line. The library's errors are the same in-process, where they cost no TF import.
  for flags, message in [
      ([f"--export_dir={out}"], "--model_dir is required"),
      ([f"--model_dir={corrupt}", f"--export_dir={out}"], "cannot restore checkpoint"),
  ]:
    result = _export_cli(*flags)
    assert result.returncode != 0, flags
    assert message in result.stderr, (flags, result.stderr)
    assert "Traceback" not in result.stderr, flags
    assert not os.path.exists(out) or not os.listdir(out), flags
  for kwargs, message in [
      (dict(model_dir=str(tmp_path / "missing"), export_dir=out), "not a directory"),
      (dict(model_dir=str(empty), export_dir=out), "is empty"),
      (dict(model_dir=str(corrupt), export_dir=out), "cannot restore checkpoint"),
      (dict(model_dir=model_dir, export_dir=str(a_file)), "not a directory"),
      (dict(model_dir=model_dir, export_dir=str(a_file / "sub")), "cannot create"),
      (dict(model_dir=model_dir, export_dir=out, version=-2), "--version"),
  ]:
    with pytest.raises((export.ExportError, checkpoints.CheckpointError, config.ConfigError),
                       match=re.escape(message)):
      export.export(**kwargs)
    assert not os.path.exists(out) or not os.listdir(out), kwargs


def test_a_failed_export_leaves_nothing(mvae_run, tmp_path, monkeypatch):
  model_dir, _, _ = mvae_run
  export_dir = str(tmp_path / "serving")

  def fail_halfway(model, step, path, train_config=None):
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, "saved_model.pb"), "w") as f:
      f.write("half")
    raise OSError("disk full")

  monkeypatch.setattr(export, "write_saved_model", fail_halfway)
  with pytest.raises(OSError, match="disk full"):
    export.export(model_dir, export_dir)
  assert os.listdir(export_dir) == []


def test_a_killed_export_leaves_no_numeric_directory(mvae_run, tmp_path):
  model_dir, _, _ = mvae_run
  export_dir = tmp_path / "serving"
  process = subprocess.Popen([sys.executable, os.path.join(ROOT, "export.py"),
                              f"--model_dir={model_dir}", f"--export_dir={export_dir}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
  deadline = time.time() + 120
  while time.time() < deadline and process.poll() is None:
    if export_dir.exists() and any(n.startswith(".tmp") for n in os.listdir(export_dir)):
      break
    time.sleep(0.01)
  assert process.poll() is None, "export finished before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert _numeric(export_dir) == []


def _readme_python_blocks():
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_examples_run(mvae_run, tmp_path):
  model_dir, export_dir, path = mvae_run
  blocks = _readme_python_blocks()
  assert blocks, "the README has no Python example"
  for block in blocks:
    code = block.replace("/tmp/mvae_export/1", path).replace("/tmp/mvae_export", export_dir)
    code = code.replace("/tmp/mvae.keras", str(tmp_path / "mvae.keras"))
    code = code.replace('"/tmp/mvae"', repr(model_dir))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, (block, result.stderr[-2000:])


# (name/version, num_sprites, N, grid, smallest accuracy on these 64 scenes). Guessing the most
# likely count scores 3/8 at 0-3 sprites and 70/256 at 0-8 (each sprite present with
# probability 0.5); on these 64 scenes the best constant guess scores 0.375 at 8 sprites.
# Measured: the 8-sprite models count 0.48 (8x8 grid, λ = 0; 51.6% on the 12,800 test
# scenes), 0.55 (8x8, λ = 5; 44.5%) and 0.45 (4x4; 46.2%) of them. Each version's threshold
# is in `pretrained/NAME_eval` for the latest version, `NAME_VERSION_eval` for the others.
SHIPPED_MODELS = [("mvae_3sprites/67000", 3, 5, 16, 0.5),
                  ("mvae_3sprites/59000", 3, 5, 16, 0.5),
                  ("mvae_3sprites_grid8/55000", 3, 5, 8, 0.5),
                  ("mvae_3sprites_lambda5/55000", 3, 5, 8, 0.5),
                  ("mvae_3sprites_grid4/55000", 3, 5, 4, 0.5),
                  ("mvae_3sprites_paper/34000", 3, 5, 4, 0.5),
                  ("mvae_8sprites/62000", 8, 10, 16, 0.4),
                  ("mvae_8sprites/54000", 8, 10, 16, 0.4),
                  ("mvae_8sprites_grid8/45000", 8, 10, 8, 0.4),
                  ("mvae_8sprites_lambda5/26000", 8, 10, 8, 0.4),
                  ("mvae_8sprites_grid4/40000", 8, 10, 4, 0.4)]
# Every version of every shipped MVAE is in SHIPPED_MODELS.
SHIPPED_MVAES = {"mvae_3sprites": ["59000", "67000"], "mvae_3sprites_grid8": ["55000"],
                 "mvae_3sprites_lambda5": ["55000"], "mvae_3sprites_grid4": ["55000"],
                 "mvae_3sprites_paper": ["34000"], "mvae_8sprites": ["54000", "62000"],
                 "mvae_8sprites_grid8": ["45000"], "mvae_8sprites_lambda5": ["26000"],
                 "mvae_8sprites_grid4": ["40000"]}


def _versions(name):
  """The numeric version directories of `pretrained/NAME`."""
  return _numeric(os.path.join(ROOT, "pretrained", name))


def test_every_shipped_mvae_version_is_checked():
  names = sorted(n for n in os.listdir(os.path.join(ROOT, "pretrained"))
                 if n.startswith("mvae_") and not n.endswith("_eval"))
  assert {name: _versions(name) for name in names} == SHIPPED_MVAES
  assert sorted(m[0] for m in SHIPPED_MODELS) == sorted(
      f"{name}/{v}" for name, versions in SHIPPED_MVAES.items() for v in versions)


def _eval_dir(name, version):
  """The evaluation shipped with a version: `NAME_eval` for the latest (the one TF Serving
  serves from `pretrained/NAME`), `NAME_VERSION_eval` for an earlier one."""
  latest = max(_versions(name), key=int)  # As TF Serving orders versions: by number.
  suffix = "_eval" if version == latest else f"_{version}_eval"
  return os.path.join(ROOT, "pretrained", name + suffix)


@pytest.mark.parametrize("path, num_sprites, num_objects, grid, min_accuracy", SHIPPED_MODELS)
def test_the_shipped_pretrained_model_loads_and_counts_in_the_c_loader(
    path, num_sprites, num_objects, grid, min_accuracy):
  name, version = path.split("/")
  c_model = c_saved_model.CSavedModel(os.path.join(ROOT, "pretrained", path))
  try:
    meta = c_model.run("metadata", {})
    assert (int(meta["num_objects"]), int(meta["latent_dim"]), int(meta["grid_size"]),
            str(int(meta["step"]))) == (num_objects, 12, grid, version)
    from mvae_tf import data
    batch = next(iter(data.make_dataset(num_sprites, 64, seed=77)))
    kl_map = c_model.run("encode", {"images": batch["image"].numpy()})["kl_map"]
  finally:
    c_model.close()
  with open(os.path.join(_eval_dir(name, version), "metrics.json")) as f:
    threshold = json.load(f)["object_counting"]["threshold"]
  predicted = (kl_map.reshape(64, -1) > threshold).sum(axis=1)
  # The shipped models count well above chance on these 64 scenes.
  assert np.mean(predicted == batch["count"].numpy()) > min_accuracy


# {name: (num_sprites, every version)}: vae_3sprites has 55,000 steps beside the
# 55,000-step MVAEs, and 59,000 and 67,000 beside those of mvae_3sprites; vae_8sprites
# has the versions of mvae_8sprites.
SHIPPED_VAES = {"vae_3sprites": (3, ["55000", "59000", "67000"]),
                "vae_8sprites": (8, ["54000", "62000"])}


@pytest.mark.parametrize("name, version", [(name, version) for name, (_, versions)
                                           in SHIPPED_VAES.items() for version in versions])
def test_the_shipped_vae_baselines_load_and_reconstruct_in_the_c_loader(name, version):
  num_sprites, versions = SHIPPED_VAES[name]
  base = os.path.join(ROOT, "pretrained", name)
  assert _versions(name) == versions
  export_dir = os.path.join(base, version)
  c_model = c_saved_model.CSavedModel(export_dir)
  try:
    meta = c_model.run("metadata", {})
    from mvae_tf import data
    images = next(iter(data.make_dataset(num_sprites, 64, seed=77)))["image"].numpy()
    reconstruction = c_model.run("reconstruct", {"images": images})["images"]
  finally:
    c_model.close()
  assert (int(meta["num_objects"]), int(meta["latent_dim"]), int(meta["grid_size"]),
          str(int(meta["step"])), meta["model"]) == (1, 60, 1, version, b"vae")
  # A trained VAE reconstructs these scenes far closer than a black image does (the scenes
  # are mostly black, so the black image is the baseline to beat); measured: 0.08 to 0.09 of
  # it at 3 sprites, 0.12 at 8.
  blank_error = np.mean(images ** 2)
  assert np.mean((reconstruction - images) ** 2) < 0.25 * blank_error


def _numeric_snapshot(export_dir):
  """{version: (its file names, bytes of its saved_model.pb)} of every numeric version."""
  return {v: (sorted(os.listdir(export_dir / v)), (export_dir / v / "saved_model.pb").read_bytes())
          for v in _numeric(export_dir)}


@pytest.fixture
def served(mvae_run, tmp_path):
  """An export directory serving version 3 of `mvae_run`, and its saved_model.pb."""
  model_dir, _, _ = mvae_run
  export_dir = tmp_path / "serving"
  export.export(model_dir, str(export_dir))
  (export_dir / "3" / "old-version-marker").write_text("the version being served")
  return model_dir, export_dir, _numeric_snapshot(export_dir)


def _rename_failing_at(monkeypatch, failing_call):
  """os.rename as the export module sees it, failing on its `failing_call`-th call (1-based)."""
  calls = []
  real_rename = os.rename

  def rename(src, dst):
    calls.append((src, dst))
    if len(calls) == failing_call:
      raise OSError(28, "No space left on device (injected)")
    return real_rename(src, dst)

  monkeypatch.setattr(export.os, "rename", rename)
  return calls


def test_overwrite_exchanges_the_versions_atomically(served, monkeypatch):
  model_dir, export_dir, before = served
  exchanged = []
  real_exchange = export._exchange
  monkeypatch.setattr(export, "_exchange",
                      lambda a, b: exchanged.append((a, b)) or real_exchange(a, b))
  export.export(model_dir, str(export_dir), overwrite=True)
  assert exchanged and exchanged[0][1] == str(export_dir / "3")
  assert _numeric(export_dir) == ["3"] and os.listdir(export_dir) == ["3"]
  assert not (export_dir / "3" / "old-version-marker").exists()  # Replaced.
  assert tf.saved_model.load(str(export_dir / "3")).signatures["metadata"]()["step"] == 3


def test_a_failed_exchange_keeps_the_served_version(served, monkeypatch):
  model_dir, export_dir, before = served

  def fail(a, b):
    raise OSError(5, "Input/output error (injected)")

  monkeypatch.setattr(export, "_exchange", fail)
  with pytest.raises(OSError, match="injected"):
    export.export(model_dir, str(export_dir), overwrite=True)
  assert _numeric_snapshot(export_dir) == before and os.listdir(export_dir) == ["3"]


@pytest.mark.parametrize("failing_call", [1, 2])
def test_without_exchange_a_failed_rename_restores_the_served_version(served, monkeypatch,
                                                                      failing_call):
  model_dir, export_dir, before = served

  def unsupported(a, b):
    raise OSError(38, "renameat2 is not available")  # ENOSYS: the fallback path.

  monkeypatch.setattr(export, "_exchange", unsupported)
  calls = _rename_failing_at(monkeypatch, failing_call)
  with pytest.raises(OSError, match="injected"):
    export.export(model_dir, str(export_dir), overwrite=True)
  # Call 1 moves the old version aside, call 2 moves the new one in; after a failure at
  # call 2, call 3 moves the old one back.
  assert calls[0][0] == str(export_dir / "3")
  assert len(calls) == failing_call + (failing_call == 2)
  assert _numeric_snapshot(export_dir) == before and os.listdir(export_dir) == ["3"]


def test_without_exchange_overwrite_still_replaces(served, monkeypatch):
  model_dir, export_dir, before = served
  monkeypatch.setattr(export, "_exchange",
                      lambda a, b: (_ for _ in ()).throw(OSError(38, "unsupported")))
  export.export(model_dir, str(export_dir), overwrite=True)
  assert os.listdir(export_dir) == ["3"]
  assert not (export_dir / "3" / "old-version-marker").exists()  # Replaced.
  assert (export_dir / "3" / "saved_model.pb").stat().st_size > 0


def test_exchange_swaps_two_directories(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "x").write_text("from a")
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "x").write_text("from b")
  export._exchange(str(tmp_path / "a"), str(tmp_path / "b"))
  assert (tmp_path / "a" / "x").read_text() == "from b"
  assert (tmp_path / "b" / "x").read_text() == "from a"


def test_stale_staging_directories_are_removed_and_live_ones_kept(served, tmp_path):
  import fcntl
  model_dir, export_dir, _ = served
  killed = export_dir / ".tmp-export-3-killed"  # A dead export's: lock file, nobody holds it.
  killed.mkdir()
  (killed / ".lock").write_text("")
  (killed / "model").mkdir()
  running = export_dir / ".tmp-export-3-running"  # A running export holds its lock.
  running.mkdir()
  lock = os.open(running / ".lock", os.O_RDWR | os.O_CREAT)
  fcntl.flock(lock, fcntl.LOCK_EX)
  just_made = export_dir / ".tmp-export-3-new"  # No lock yet, made a moment ago.
  just_made.mkdir()
  old = export_dir / ".tmp-export-3-old"  # No lock, hours old: an older export's.
  old.mkdir()
  os.utime(old, (time.time() - 7200, time.time() - 7200))
  other = export_dir / "notes"
  other.mkdir()
  try:
    export.export(model_dir, str(export_dir), version=4)
    assert sorted(os.listdir(export_dir)) == sorted(
        ["3", "4", running.name, just_made.name, other.name])
  finally:
    os.close(lock)


def test_metadata_records_the_training_data(mvae_run, tmp_path):
  _, _, path = mvae_run
  meta = tf.saved_model.load(path).signatures["metadata"]()
  assert int(meta["num_sprites"]) == 2
  assert float(meta["presence_prob"]) == pytest.approx(0.5)
  c_model = c_saved_model.CSavedModel(path)
  try:
    c_meta = c_model.run("metadata", {})
  finally:
    c_model.close()
  assert int(c_meta["num_sprites"]) == 2
