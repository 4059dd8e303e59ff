"""The shipped models at a glance: one row of headline figures from each evaluation.

`evaluate.py` writes every measured number of a model into `metrics.json` (README,
"Evaluation"). Each shipped model under `pretrained/` has such a file in a directory named
for it, `<name>_eval` for the export `pretrained/<name>/<step>` (the latest version of
`<name>`), or `<name>_<step>_eval` for an earlier version. `summary_table` reads them all
and writes one Markdown row per model: its data and design (from the run's `config.json`,
recorded in `metrics.json["source"]`), then counting by the paper's protocol (section 4.3:
a KL threshold searched on one set of scenes, the accuracy on another), FG-ARI of the solo
decodes' masks, entity exchange, the test ELBO and its margin over the VAE of the same
steps where one was measured. The README's table of shipped models is its output, and a
test keeps the two equal, so that no figure there is typed by hand.
"""

import glob
import json
import os
import re

from mvae_tf import config as config_lib

EVAL_SUFFIX = "_eval"

HEADER = ("| export | sprites | grid, suppression radius | pooling | λ | counting (test) "
          "| FG-ARI | exchange | test ELBO | MVAE − VAE |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def export_path(eval_dir, step):
  """`<root>/<name>/<step>` for the evaluation directory `<root>/<name>[_<step>]_eval`.

  Raises ValueError when the name is not of that form, names another step than the one
  `metrics.json` records, or the export is not there.
  """
  root, base = os.path.split(os.path.normpath(eval_dir))
  match = re.fullmatch(r"(.+?)(?:_(\d+))?" + EVAL_SUFFIX, base)
  if not match:
    raise ValueError(f"an evaluation directory is named <model>[_<step>]{EVAL_SUFFIX}; "
                     f"received {base!r}")
  name, named_step = match.groups()
  if named_step is not None and int(named_step) != step:
    raise ValueError(f"{base} names step {named_step} but its metrics.json records step {step}")
  path = os.path.join(root, name, str(step))
  if not os.path.isdir(path):
    raise ValueError(f"{eval_dir} evaluates step {step} of {name}, but there is no export {path}")
  return path


def summary_row(eval_dir, metrics):
  """One Markdown table row (a string) of a model's headline figures.

  Args:
    eval_dir: the directory that holds `metrics.json`, named as `export_path` expects.
    metrics: that file's contents, as `evaluate.py` writes them for a model directory.
  """
  if "config" not in metrics.get("source", {}):
    raise ValueError(f"{eval_dir}/metrics.json does not come from `evaluate.py --model_dir`: "
                     "the table reads the run's config.json, which an export's evaluation "
                     "does not record")
  missing = [key for key in ("num_sprites", "object_counting", "segmentation",
                             "entity_exchange", "test_elbo") if key not in metrics]
  if missing:
    raise ValueError(f"{eval_dir}/metrics.json lacks {', '.join(missing)}: not an evaluation "
                     "of this project's scenes by evaluate.py")
  step = metrics["source"]["step"]
  model_config, train_config = config_lib.from_dict(metrics["source"]["config"])
  grid = 64 // 2 ** model_config.num_pooling
  counting = metrics["object_counting"]["test"]["accuracy"]
  elbo = metrics["test_elbo"]["elbo"]
  margin = metrics.get("vae_baseline", {}).get("mvae_minus_vae_elbo")
  cells = [
      f"`{export_path(eval_dir, step)}`",
      str(metrics["num_sprites"]),
      f"{grid}x{grid}, {model_config.suppression_radius}",
      model_config.aggregation,
      f"{train_config.object_sparsity:g}",
      f"{100 * counting:.1f}%",
      f"{metrics['segmentation']['fg_ari']:.3f}",
      f"{100 * metrics['entity_exchange']['success_rate']:.1f}%",
      f"{elbo:.1f}",
      "not measured" if margin is None else f"{margin:+.1f}",
  ]
  return "| " + " | ".join(cells) + " |"


def summary_table(root="pretrained"):
  """The Markdown table of every `<root>/*_eval/metrics.json`, sorted by directory name."""
  paths = sorted(glob.glob(os.path.join(root, "*" + EVAL_SUFFIX, "metrics.json")))
  if not paths:
    raise ValueError(f"no {root}/*{EVAL_SUFFIX}/metrics.json: run from the repository's root")
  rows = []
  for path in paths:
    with open(path) as f:
      rows.append(summary_row(os.path.dirname(path), json.load(f)))
  return "\n".join([HEADER] + rows)
