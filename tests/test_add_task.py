"""``dlscaffold add-task``: a task added later is the first task under another name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import FRAMEWORKS, cookiecutter, tree_digest


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_add_from_a_subdirectory(cli, new_project, framework: str) -> None:
    root = new_project(framework=framework).root
    result = cli("add-task", "vision", cwd=root / "experiments" / "task1")
    assert result.exit_code == 0, result.output
    for path in (
        "experiments/vision/train.py",
        "experiments/vision/eval.py",
        "trainers/vision_trainer.py",
        "trainers/vision_data.py",
        "tests/test_vision.py",
        "experiments/vision/results",
    ):
        assert (root / path).exists(), path
    assert json.loads((root / ".dlscaffold.json").read_text())["tasks"] == ["task1", "vision"]
    assert "python experiments/vision/train.py" in result.output


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_added_task_equals_the_first_modulo_its_name(cli, new_project, framework: str) -> None:
    root = new_project(framework=framework).root
    assert cli("add-task", "speech_v2", "--project", str(root)).exit_code == 0
    first = {p.relative_to(root): p.read_text() for p in root.rglob("*") if p.is_file() and "task1" in str(p)}
    assert first
    for path, text in first.items():
        twin = root / str(path).replace("task1", "speech_v2")
        expected = text.replace("task1", "speech_v2").replace("Task1", "SpeechV2")
        assert twin.read_text() == expected, path


def test_added_task_does_not_touch_existing_files(cli, new_project) -> None:
    root = new_project().root
    (root / "trainers" / "task1_trainer.py").write_text("# my edits\n")
    before = tree_digest(root)
    assert cli("add-task", "task2", "--project", str(root)).exit_code == 0
    after = tree_digest(root)
    changed = {path for path in before if before[path] != after.get(path)}
    assert changed == {".dlscaffold.json"}


def test_dry_run_lists_files_and_writes_nothing(cli, new_project) -> None:
    root = new_project().root
    before = tree_digest(root)
    result = cli("add-task", "task2", "--dry-run", "--project", str(root))
    assert result.exit_code == 0
    assert "Would add" in result.output and "trainers/task2_trainer.py" in result.output
    assert tree_digest(root) == before


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("task1", "already has a task"),
        ("Bad-Name", "invalid task name"),
        ("utils", "reserved"),
        ("data", "reserved"),
        ("for", "keyword"),
        ("../up", "invalid task name"),
    ],
)
def test_refusals_change_nothing(cli, new_project, name: str, message: str) -> None:
    root = new_project().root
    before = tree_digest(root)
    result = cli("add-task", name, "--project", str(root))
    assert result.exit_code != 0
    assert message in result.output
    assert tree_digest(root) == before


def test_files_in_the_way_are_refused(cli, new_project) -> None:
    root = new_project().root
    (root / "trainers" / "audio_trainer.py").write_text("# a module the user wrote\n")
    before = tree_digest(root)
    result = cli("add-task", "audio", "--project", str(root))
    assert result.exit_code != 0
    assert "trainers/audio_trainer.py" in result.output
    assert tree_digest(root) == before


def test_outside_a_project_is_refused(cli, tmp_path: Path) -> None:
    result = cli("add-task", "task2", cwd=tmp_path)
    assert result.exit_code != 0
    assert "not inside a dlscaffold project" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_plain_cookiecutter_project_accepts_add_task(cli, tmp_path: Path) -> None:
    assert cookiecutter(tmp_path, "project_name=demo", "framework=pytorch").returncode == 0
    root = tmp_path / "demo"
    result = cli("add-task", "task2", cwd=root)
    assert result.exit_code == 0, result.output
    trainer = (root / "trainers" / "task2_trainer.py").read_text()
    assert re.search(r"^def train\(run: Run\)", trainer, re.MULTILINE)  # the plain flavour's own loop
    assert "from trainers import task2_data as data" in trainer
    assert not (root / "trainers" / "task2_trainer.pytorch.py").exists()
