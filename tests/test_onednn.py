"""oneDNN is on by default for every entry point, and the user's own setting wins."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_POINTS = ("train.py", "export.py", "evaluate.py", "count_objects.py", "benchmark.py")
_PROBE = ("import os, mvae_tf, tensorflow; from mvae_tf import machine; "
          "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], machine.onednn_enabled())")


def _probe(env_value):
  env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
  if env_value is not None:
    env["TF_ENABLE_ONEDNN_OPTS"] = env_value
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
  assert result.returncode == 0, result.stderr
  return result.stdout.split()[-2:]


@pytest.mark.parametrize("env_value, expected", [(None, ["1", "True"]), ("0", ["0", "False"]),
                                                 ("1", ["1", "True"])])
def test_importing_mvae_tf_turns_onednn_on_unless_the_user_says(env_value, expected):
  assert _probe(env_value) == expected


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_every_entry_point_sets_it_before_tensorflow_is_imported(script):
  with open(os.path.join(ROOT, script)) as f:
    source = f.read()
  setting = source.index('os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")')
  first_import = min(m.start() for m in re.finditer(
      r"^\s*(import tensorflow|from mvae_tf|import mvae_tf|from absl)", source, re.M))
  assert setting < first_import, script
