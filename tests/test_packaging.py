"""setup.cfg admits exactly the Pythons that TensorFlow 2.21 has wheels for, and says so."""

import configparser
import os
import re
import sys

from packaging.specifiers import SpecifierSet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CPython versions with a tensorflow==2.21.0 wheel on PyPI (3.9 and 3.14 have none).
TENSORFLOW_2_21_PYTHONS = {"3.10", "3.11", "3.12", "3.13"}


def _setup_cfg():
  parser = configparser.ConfigParser()
  parser.read(os.path.join(ROOT, "setup.cfg"))
  return parser


def test_python_requires_admits_every_python_tensorflow_supports_and_no_other():
  setup = _setup_cfg()
  assert re.search(r"tensorflow>=2\.21,<2\.22", setup["options"]["install_requires"])
  admitted = SpecifierSet(setup["options"]["python_requires"])
  candidates = {f"3.{minor}" for minor in range(6, 16)}
  assert {v for v in candidates if f"{v}.0" in admitted} == TENSORFLOW_2_21_PYTHONS


def test_classifiers_list_the_same_pythons():
  classifiers = _setup_cfg()["metadata"]["classifiers"]
  listed = set(re.findall(r"Programming Language :: Python :: (3\.\d+)", classifiers))
  assert listed == TENSORFLOW_2_21_PYTHONS


def test_this_python_is_admitted():
  admitted = SpecifierSet(_setup_cfg()["options"]["python_requires"])
  assert f"{sys.version_info.major}.{sys.version_info.minor}.0" in admitted


def test_the_kernel_sources_are_package_data():
  """`native_ops` compiles them where mvae_tf is installed: a wheel must carry them."""
  import fnmatch  # pylint: disable=g-import-not-at-top
  patterns = _setup_cfg()["options.package_data"]["mvae_tf"].split()
  kernels = os.listdir(os.path.join(ROOT, "mvae_tf", "kernels"))
  assert kernels and all(any(fnmatch.fnmatch(f"kernels/{name}", pattern) for pattern in patterns)
                         for name in kernels)
