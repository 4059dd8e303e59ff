"""figures.save: a figure file is replaced whole or not at all."""

import os

import pytest

from mvae_tf import figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_save_writes_the_format_its_extension_names_and_closes_the_figure(tmp_path):
  import matplotlib.pyplot as plt
  fig = plt.figure()
  plt.plot([0, 1], [1, 0])
  figures.save(fig, str(tmp_path / "f.png"))
  assert (tmp_path / "f.png").read_bytes()[:8] == PNG_SIGNATURE
  assert not plt.fignum_exists(fig.number)
  fig = plt.figure()
  figures.save(fig, str(tmp_path / "f.svg"))
  assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:500]
  assert sorted(os.listdir(tmp_path)) == ["f.png", "f.svg"]  # No temporary left.


def test_a_failed_save_leaves_the_earlier_figure_whole(tmp_path):
  import matplotlib.pyplot as plt
  path = tmp_path / "f.png"
  figures.save(plt.figure(), str(path))
  earlier = path.read_bytes()
  fig = plt.figure()

  def fail_halfway(f, **kwargs):
    del kwargs
    f.write(PNG_SIGNATURE + b"half a figure")
    raise OSError("No space left on device")

  fig.savefig = fail_halfway
  with pytest.raises(OSError, match="No space left"):
    figures.save(fig, str(path))
  assert path.read_bytes() == earlier
  assert os.listdir(tmp_path) == ["f.png"]
  assert not plt.fignum_exists(fig.number)
