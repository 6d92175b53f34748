"""The README's own specs validate, write somewhere of their own, and its links exist (issue 12)."""

import re
from pathlib import Path

import pytest
import yaml

from ablab.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, flags=re.S)
SHIPPED = {yaml.safe_load(p.read_text()).get("name", p.stem) for p in (ROOT / "studies").rglob("*.yaml")}


def test_the_readme_has_a_spec():
    assert BLOCKS, "README.md shows a study spec in a ```yaml block"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_readme_spec_validates(index, tmp_path, capsys):
    spec = yaml.safe_load(BLOCKS[index])
    assert spec["name"] not in SHIPPED, "a README study must not write into a shipped study's results (the demo's)"
    path = tmp_path / "readme.yaml"
    path.write_text(BLOCKS[index])
    code = main(["validate", str(path), "--no-timing", "--out", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_readme_links_point_into_the_repository():
    assert "../shared" not in README
    for target in re.findall(r"\]\(([^)#]+)\)", README) + re.findall(r"`(docs/[\w./-]+\.md)`", README):
        if not target.startswith("http"):
            assert (ROOT / target).is_file(), target
    assert "docs/architecture.md" in README


def test_make_demo_installs_no_test_extras():
    """`make demo` depends on an install of the package alone; the test extras (Ray, selenium) are for `make test`."""
    make = (ROOT / "Makefile").read_text()
    demo_deps = re.search(r"^demo:(.*)$", make, flags=re.M).group(1).split()
    recipes = {m.group(1): m.group(2) for m in re.finditer(r"^(\S+):[^\n]*\n((?:\t[^\n]*\n)+)", make, flags=re.M)}
    installs = [line for d in demo_deps for line in recipes[d].splitlines() if "pip install" in line]
    assert installs and all("[" not in line.split("pip install")[1] for line in installs), installs
