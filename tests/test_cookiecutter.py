"""The repository is also a plain cookiecutter template, producing the same project."""

from __future__ import annotations

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
    assert tree_digest(theirs_dir / "demo") == tree_digest(ours)


def test_cookiecutter_refuses_a_bad_name_through_the_hook(tmp_path: Path) -> None:
    result = cookiecutter(tmp_path, "project_name=import")
    assert result.returncode != 0
    assert "Python keyword" in result.stderr
    assert list(tmp_path.iterdir()) == []
