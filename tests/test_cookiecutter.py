"""The repository is also a plain cookiecutter template, producing the same project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FRAMEWORKS, cookiecutter, tree_digest


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_cookiecutter_makes_the_same_project_as_new(new_project, tmp_path: Path, framework: str) -> None:
    text = 'Emoji \U0001f600 and "quotes" \\ é'  # the hook and TOML must take characters beyond the BMP
    ours = new_project("demo", framework=framework, description=text).root
    theirs_dir = tmp_path / "cookiecutter"
    result = cookiecutter(theirs_dir, "project_name=demo", f"framework={framework}", f"description={text}")
    assert result.returncode == 0, result.stderr
    theirs = theirs_dir / "demo"
    # new also keeps the template for `dlscaffold update`, and names it in the record
    kept = {".dlscaffold-template.tar.gz", ".dlscaffold.json"}
    assert {k: v for k, v in tree_digest(ours).items() if k not in kept} == {
        k: v for k, v in tree_digest(theirs).items() if k not in kept
    }
    assert not (theirs / ".dlscaffold-template.tar.gz").exists()
    record, their_record = (json.loads((root / ".dlscaffold.json").read_text()) for root in (ours, theirs))
    assert set(record) - set(their_record) == {"template_digest", "dlscaffold_version"}
    assert {key: record[key] for key in their_record} == their_record


def test_cookiecutter_refuses_a_bad_name_through_the_hook(tmp_path: Path) -> None:
    result = cookiecutter(tmp_path, "project_name=import")
    assert result.returncode != 0
    assert "Python keyword" in result.stderr
    assert list(tmp_path.iterdir()) == []
