"""The README's and docs/'s links: every relative link and picture names a file that exists."""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))
# [text](target) and ![alt](target) outside code, where target has no scheme or spaces.
LINK = re.compile(r"\]\(([^)\s:]+)\)")


def _relative_links(text):
  prose = re.sub(r"```.*?```", "", text, flags=re.S)  # Code blocks hold no links.
  prose = re.sub(r"`[^`\n]*`", "", prose)  # Nor does inline code.
  return LINK.findall(prose)


def test_pages_found():
  assert "docs/throughput.md" in PAGES and "docs/counting_study.md" in PAGES


def test_relative_links_known_answer():
  text = ("see [a](docs/a.md), ![p](../p.png), [web](https://x.org/y), `f(x)[0](y)`\n"
          "```\n[c](d)\n```")
  assert _relative_links(text) == ["docs/a.md", "../p.png"]


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page):
  with open(os.path.join(ROOT, page)) as f:
    links = _relative_links(f.read())
  base = os.path.dirname(os.path.join(ROOT, page))
  missing = [link for link in links if not os.path.exists(os.path.join(base, link))]
  assert not missing, f"{page} links to files that do not exist: {missing}"


PROGRAMS = ["train.py", "export.py", "evaluate.py", "count_objects.py", "benchmark.py"]


def _flag_names(program):
  with open(os.path.join(ROOT, program)) as f:
    return re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', f.read())


def test_flag_names_known_answer():
  assert "num_sprites" in _flag_names("train.py") and "json" in _flag_names("benchmark.py")


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_flag_in_readme(program):
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  undocumented = [name for name in _flag_names(program)
                  if not re.search(rf"--{name}\b", readme)]
  assert not undocumented, f"the README never names these flags of {program}: {undocumented}"
