"""The shipped models' summary table: its rows, its errors, and the README's copy of it."""

import json
import os

import pytest

from mvae_tf import config as config_lib
from mvae_tf import shipped

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _metrics(step=700, counting=0.8125, margin=-2.25):
  """A metrics.json as evaluate.py writes it for a model directory, cut to what is read."""
  model_config = config_lib.ModelConfig(num_objects=4, num_pooling=3, suppression_radius=1,
                                        aggregation="max")
  train_config = config_lib.TrainConfig(num_sprites=2, train_steps=step, object_sparsity=2.5,
                                        unselected_kl_weight=1.0)
  metrics = {
      "source": {"model_dir": "/tmp/run", "step": step,
                 "config": config_lib.to_dict(model_config, train_config)},
      "num_sprites": 2,
      "object_counting": {"test": {"accuracy": counting}},
      "segmentation": {"fg_ari": 0.87654},
      "entity_exchange": {"success_rate": 0.5},
      "test_elbo": {"elbo": -123.456},
  }
  if margin is not None:
    metrics["vae_baseline"] = {"mvae_minus_vae_elbo": margin}
  return metrics


def _ship(root, eval_name, metrics, export=None):
  os.makedirs(os.path.join(root, eval_name))
  with open(os.path.join(root, eval_name, "metrics.json"), "w") as f:
    json.dump(metrics, f)
  if export:
    os.makedirs(os.path.join(root, export))


def test_row_known_answer(tmp_path):
  _ship(tmp_path, "m_eval", _metrics(), export="m/700")
  _ship(tmp_path, "m_300_eval", _metrics(step=300, counting=0.5, margin=None), export="m/300")
  table = shipped.summary_table(str(tmp_path)).splitlines()
  assert table[:2] == shipped.HEADER.splitlines()
  # Sorted by directory name: the earlier version, m_300_eval, first.
  assert table[2:] == [
      f"| `{tmp_path}/m/300` | 2 | 8x8, 1 | max | 2.5 | 50.0% | 0.877 | 50.0% | -123.5 "
      "| not measured |",
      f"| `{tmp_path}/m/700` | 2 | 8x8, 1 | max | 2.5 | 81.2% | 0.877 | 50.0% | -123.5 "
      "| -2.2 |"]


@pytest.mark.parametrize("eval_name, export, message", [
    ("m_eval", None, "no export .*m/700"),
    ("m_699_eval", "m/699", "names step 699 but its metrics.json records step 700"),
    ("m_evaluation", "m/700", r"named <model>\[_<step>\]_eval"),
])
def test_bad_evaluation_directory(tmp_path, eval_name, export, message):
  _ship(tmp_path, eval_name, _metrics(), export=export)
  with pytest.raises(ValueError, match=message):
    shipped.summary_row(os.path.join(tmp_path, eval_name), _metrics())


def test_evaluation_of_an_export_or_of_other_data(tmp_path):
  _ship(tmp_path, "m_eval", {}, export="m/700")
  of_export = {**_metrics(), "source": {"saved_model": "/tmp/e/700", "step": 700}}
  with pytest.raises(ValueError, match="does not come from `evaluate.py --model_dir`"):
    shipped.summary_row(os.path.join(tmp_path, "m_eval"), of_export)
  multi_dsprites = {"source": _metrics()["source"], "multi_dsprites": {}}
  with pytest.raises(ValueError, match="lacks num_sprites, object_counting, segmentation, "
                                       "entity_exchange, test_elbo"):
    shipped.summary_row(os.path.join(tmp_path, "m_eval"), multi_dsprites)


def test_no_evaluations(tmp_path):
  with pytest.raises(ValueError, match="no .*_eval/metrics.json"):
    shipped.summary_table(str(tmp_path))


def test_readme_table_is_the_shipped_evaluations(monkeypatch):
  monkeypatch.chdir(ROOT)
  with open("README.md") as f:
    readme = f.read()
  table = shipped.summary_table("pretrained")
  assert len(table.splitlines()) > 2
  assert table in readme, "README's table of shipped models differs from:\n" + table
