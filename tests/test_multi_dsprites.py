"""DeepMind's Multi-dSprites TFRecords: the published format, written from our generator
and read back: images, masks, counts and factors."""

import numpy as np
import pytest
import tensorflow as tf

from mvae_tf import config, data, multi_dsprites


def _generator_batch(num_sprites=3, batch=6, seed=4):
  return {k: v.numpy() for k, v in next(iter(data.make_dataset(num_sprites, batch, seed)))
          .items()}


def _write(path, variant, batch):
  multi_dsprites.write_tfrecord(str(path), multi_dsprites.scenes_from_generator(batch,
                                                                                variant))


def test_the_file_is_the_published_format(tmp_path):
  path = tmp_path / "md.tfrecords"
  _write(path, "colored_on_colored", _generator_batch())
  record = next(iter(tf.data.TFRecordDataset(str(path), compression_type="GZIP")))
  example = tf.train.Example.FromString(record.numpy())
  features = example.features.feature
  # One one-byte string per image value and per mask value, as DeepMind's reader expects.
  assert len(features["image"].bytes_list.value) == 64 * 64 * 3
  assert {len(v) for v in features["image"].bytes_list.value} == {1}
  assert len(features["mask"].bytes_list.value) == 64 * 64 * 5
  for name in ("x", "y", "shape", "visibility", "orientation", "scale"):
    assert len(features[name].float_list.value) == 5, name
  assert len(features["color"].float_list.value) == 5 * 3
  # DeepMind's own parsing steps, written out: FixedLenFeature of strings, decode_raw,
  # squeeze, and masks transposed to [E, 64, 64, 1].
  spec = {"image": tf.io.FixedLenFeature([64, 64, 3], tf.string),
          "mask": tf.io.FixedLenFeature([64, 64, 5, 1], tf.string)}
  parsed = tf.io.parse_single_example(record, spec)
  mask = tf.squeeze(tf.io.decode_raw(parsed["mask"], tf.uint8), axis=-1)
  assert tf.transpose(mask, [2, 0, 1, 3]).shape == (5, 64, 64, 1)


@pytest.mark.parametrize("variant", ["colored_on_colored", "binarized", "colored_on_grayscale"])
def test_scenes_read_back_as_our_generator_made_them(tmp_path, variant):
  batch = _generator_batch()
  path = tmp_path / f"{variant}.tfrecords"
  _write(path, variant, batch)
  read = next(iter(multi_dsprites.make_dataset(str(path), variant, batch_size=6)))
  entities = multi_dsprites.MAX_ENTITIES[variant]
  assert read["image"].shape == (6, 64, 64, 3) and read["image"].dtype == tf.float32
  assert read["masks"].shape == (6, entities, 64, 64)
  np.testing.assert_array_equal(read["count"].numpy(), batch["count"])
  np.testing.assert_array_equal(read["masks"].numpy()[:, :4] > 0, batch["masks"] > 0)
  assert not read["masks"].numpy()[:, 4:].any()  # Unused entity slots are empty.
  if variant == "binarized":  # White on black, the one channel repeated.
    image = read["image"].numpy()
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    np.testing.assert_array_equal(image[..., 0] > 0, batch["image"].max(axis=-1) > 0)
    assert set(np.unique(image)) <= {0.0, 1.0}
  else:  # 8-bit quantisation of our float image.
    np.testing.assert_allclose(read["image"].numpy(), batch["image"], atol=0.5 / 255 + 1e-6)
  np.testing.assert_allclose(read["y"].numpy()[:, 1:4], batch["position"][..., 0], rtol=1e-6)
  np.testing.assert_array_equal(read["visibility"].numpy()[:, 0], 1.0)


def test_batches_skip_take_and_repeat(tmp_path):
  path = tmp_path / "md.tfrecords"
  _write(path, "colored_on_colored", _generator_batch(batch=10))
  whole = [b["count"].numpy() for b in multi_dsprites.make_dataset(str(path),
                                                                   "colored_on_colored", 4)]
  assert len(whole) == 2  # 10 scenes in batches of 4: the last 2 are dropped.
  second = next(iter(multi_dsprites.make_dataset(str(path), "colored_on_colored", 4,
                                                 first_batch=1)))
  np.testing.assert_array_equal(second["count"].numpy(), whole[1])
  cycled = list(multi_dsprites.make_dataset(str(path), "colored_on_colored", 4,
                                            num_batches=5, repeat=True))
  assert len(cycled) == 5


def test_bad_files_and_variants_are_one_clear_error(tmp_path):
  path = tmp_path / "md.tfrecords"
  _write(path, "colored_on_colored", _generator_batch())
  with pytest.raises(config.ConfigError, match=r"--variant must be one of binarized"):
    multi_dsprites.check_file(str(path), "colour")
  with pytest.raises(config.ConfigError, match=r"does not exist"):
    multi_dsprites.check_file(str(tmp_path / "missing"), "binarized")
  with pytest.raises(config.ConfigError, match=r"not a GZIP TFRecord file of Multi-dSprites "
                                               r"'binarized' scenes \(4 entities, 1 channel"):
    multi_dsprites.check_file(str(path), "binarized")  # A 5-entity, 3-channel file.
  garbage = tmp_path / "garbage"
  garbage.write_bytes(b"not a tfrecord")
  with pytest.raises(config.ConfigError, match=r"not a GZIP TFRecord file"):
    multi_dsprites.check_file(str(garbage), "colored_on_colored")
  multi_dsprites.check_file(str(path), "colored_on_colored")  # The right variant passes.


def test_too_many_sprites_for_a_variant_are_refused():
  with pytest.raises(ValueError, match=r"4 sprite slots do not fit the 3 foreground"):
    list(multi_dsprites.scenes_from_generator(_generator_batch(num_sprites=4), "binarized"))


def test_train_then_evaluate_fg_ari_on_a_multi_dsprites_file(tmp_path):
  import json
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = tmp_path / "md.tfrecords"
  _write(path, "colored_on_colored", _generator_batch(batch=40))
  model_dir = tmp_path / "run"
  env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
  trained = subprocess.run(
      [sys.executable, os.path.join(root, "train.py"), "--dataset=multi_dsprites",
       f"--data_path={path}", "--variant=colored_on_colored", "--batch_size=8",
       "--train_steps=6", f"--model_dir={model_dir}", "--num_pooling=3"],
      capture_output=True, text=True, cwd=root, env=env, timeout=300)
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert "step 6/6" in trained.stdout
  saved = json.loads((model_dir / "config.json").read_text())
  assert saved["train"]["dataset"] == "multi_dsprites"
  assert saved["train"]["num_sprites"] == 4 and saved["model"]["num_objects"] == 6
  out = tmp_path / "eval"
  evaluated = subprocess.run(
      [sys.executable, os.path.join(root, "evaluate.py"), f"--model_dir={model_dir}",
       f"--output_dir={out}", f"--data_path={path}", "--variant=colored_on_colored",
       "--segmentation_scenes=32"],
      capture_output=True, text=True, cwd=root, env=env, timeout=300)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  measured = json.loads((out / "metrics.json").read_text())["multi_dsprites"]
  assert measured["scenes"] == 32 and measured["variant"] == "colored_on_colored"
  assert -1 <= measured["segmentation"]["fg_ari"] <= 1
  assert measured["segmentation"]["scored_scenes"] == int(
      (_generator_batch(batch=40)["count"][:32] > 0).sum())
  assert np.isfinite(measured["test_elbo"]["elbo"])
