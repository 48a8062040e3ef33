"""``dlscaffold reproduce`` on run directories anyone could have handed over: never runs what they name."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dlscaffold.create import create_project

from conftest import run_cli


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    return create_project({"project_name": "handed", "framework": "pytorch"}, tmp_path / "p").root


def head(root: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def recording_program(path: Path, marker: Path, exit_code: int = 3) -> Path:
    """An executable that notes it ran (and with what), then fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$@" > {marker}\nexit {exit_code}\n')
    path.chmod(0o755)
    return path


def finished_run(root: Path, manifest: object, name: str = "seed-0") -> Path:
    run = root / "experiments" / "task1" / "results" / name
    run.mkdir(parents=True)
    (run / "finished.out").write_text(json.dumps({"state": "finished", "metrics": {"val_acc": 0.5}}))
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def command(program: str) -> list[str]:
    return [program, "experiments/task1/train.py", "--epochs", "1"]


def test_the_interpreter_a_manifest_names_never_runs(project: Path, tmp_path: Path) -> None:
    planted = tmp_path / "planted-ran"
    evil = recording_program(tmp_path / "evil" / "python", planted)
    chosen = tmp_path / "chosen-ran"
    fake = recording_program(tmp_path / "mine" / "python", chosen)
    run = finished_run(project, {"command": command(str(evil)), "git": {"snapshot": head(project)}})

    result = run_cli("reproduce", str(run), "--python", str(fake))
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert not planted.exists()  # what the manifest named did not run
    assert "experiments/task1/train.py" in chosen.read_text()  # the one the user chose did
    assert f"with {fake} (--python; --python chooses another)" in result.output
    assert f"the reproduction did not finish (exit 3, with {fake})" in result.output


def test_without_python_the_project_environment_is_used_and_named(project: Path, tmp_path: Path) -> None:
    planted = tmp_path / "planted-ran"
    evil = recording_program(tmp_path / "evil" / "python", planted)
    chosen = tmp_path / "venv-ran"
    venv_python = recording_program(project / ".venv" / "bin" / "python", chosen)
    run = finished_run(project, {"command": command(str(evil)), "git": {"snapshot": head(project)}})

    result = run_cli("reproduce", str(run))
    assert result.exit_code == 1
    assert not planted.exists() and chosen.exists()
    assert f"with {venv_python} (the project's .venv; --python chooses another)" in result.output


def test_a_python_that_is_not_there_is_one_line(project: Path, tmp_path: Path) -> None:
    run = finished_run(project, {"command": command("python"), "git": {"snapshot": head(project)}})
    result = run_cli("reproduce", str(run), "--python", str(tmp_path / "nowhere" / "python"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: --python {tmp_path}/nowhere/python: no such executable"
    ]


MALFORMED = {
    "a list": [1, 2],
    "a command of numbers": {"command": [1, 2], "git": {"snapshot": "0" * 40}},
    "git as a list": {"command": command("python"), "git": ["snapshot"]},
    "a snapshot that is a list": {"command": command("python"), "git": {"snapshot": ["a"]}},
    "history entries that are lists": {
        "command": command("python"),
        "git": {"snapshot": None},
        "history": [[1], {"snapshot": ["x"]}, {"snapshot": {"a": 1}}],
    },
    "an option as snapshot": {"command": command("python"), "git": {"snapshot": "--output=/tmp/x"}},
    "an option in history": {
        "command": command("python"),
        "git": {"snapshot": "0" * 40},
        "history": [{"snapshot": "--remote=ext::sh"}],
    },
    "a script climbing out": {
        "command": ["python", "experiments/../../../../etc/train.py"],
        "git": {"snapshot": "SNAPSHOT"},
    },
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_is_one_line(project: Path, tmp_path: Path, case: str) -> None:
    chosen = tmp_path / "ran"
    fake = recording_program(tmp_path / "mine" / "python", chosen)
    manifest = json.loads(json.dumps(MALFORMED[case]).replace("SNAPSHOT", head(project)))
    run = finished_run(project, manifest)
    result = run_cli("reproduce", str(run), "--python", str(fake))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert not chosen.exists()


def test_a_run_name_with_terminal_escapes_is_printed_escaped(project: Path, tmp_path: Path) -> None:
    fake = recording_program(tmp_path / "mine" / "python", tmp_path / "ran")
    run = finished_run(
        project, {"command": command("python"), "git": {"snapshot": head(project)}}, name="seed-0\x1b[2J"
    )
    result = run_cli("reproduce", str(run), "--python", str(fake))
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "seed-0\\x1b[2J" in result.output
    assert os.path.isdir(run)
