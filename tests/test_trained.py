"""trained.py: what a run or an export says of the data it was trained on, and its errors."""

import pytest

from mvae_tf import config, trained


def _trained(num_sprites, presence_prob):
  return trained.Trained(codec=None, model="mvae", step=7, grid_size=16,
                         num_sprites=num_sprites, presence_prob=presence_prob,
                         source={"saved_model": "/e/7", "step": 7})


def test_scene_settings_default_to_the_recorded_data_and_give_way_to_the_arguments():
  recorded = _trained(num_sprites=5, presence_prob=0.25)
  assert recorded.scene_settings() == (5, 0.25)
  assert recorded.scene_settings(num_sprites=2) == (2, 0.25)
  assert recorded.scene_settings(presence_prob=1.0) == (5, 1.0)
  assert recorded.scene_settings(3, 0.0) == (3, 0.0)


def test_an_export_that_does_not_record_its_data():
  old = _trained(num_sprites=trained.UNKNOWN, presence_prob=trained.UNKNOWN)
  with pytest.raises(config.ConfigError, match="the export '/e/7' does not record the data"):
    old.scene_settings()
  # Given the sprites, the presence probability falls back to TrainConfig's (the paper's).
  assert old.scene_settings(num_sprites=3) == (3, config.TrainConfig().presence_prob)


@pytest.mark.parametrize("num_sprites, presence_prob, message", [
    (0, None, "num_sprites"), (2.5, None, "num_sprites"), (None, 1.5, "presence_prob"),
    (None, -0.1, "presence_prob")])
def test_scene_settings_out_of_range(num_sprites, presence_prob, message):
  with pytest.raises(config.ConfigError, match=f"`{message}`"):
    _trained(3, 0.5).scene_settings(num_sprites, presence_prob)


def test_from_export_errors_name_the_path(tmp_path):
  with pytest.raises(config.ConfigError, match=r"'.*' holds no saved_model.pb: give one "
                     r"exported version, E/<V>"):
    trained.from_export(str(tmp_path))
  (tmp_path / "saved_model.pb").write_bytes(b"not a SavedModel")
  with pytest.raises(config.ConfigError, match="cannot be loaded as an mvae_tf export"):
    trained.from_export(str(tmp_path))
