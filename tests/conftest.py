"""Fixtures shared by the test files: generating projects and looking at trees."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dlscaffold.cli import main
from dlscaffold.create import NewProject, create_project

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ["lightning", "pytorch"]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes: compare two to see any change."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(root).parts
    }


def run_cli(*args: str, cwd: Path | None = None) -> Result:
    """Invoke the ``dlscaffold`` command in-process, as a user would type it."""
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, list(args))
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, list(args))
    finally:
        os.chdir(previous)


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


@pytest.fixture
def new_project(tmp_path: Path) -> Callable[..., NewProject]:
    """Generate a project under ``tmp_path`` through the library, without git."""

    def generate(name: str = "demo", **answers: str) -> NewProject:
        return create_project({"project_name": name, **answers}, tmp_path, use_git=False)

    return generate


def run_python(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a Python command in a generated project, output captured for the assertion message."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def cookiecutter(output: Path, *context: str, template: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """Run the cookiecutter command on this repository, or on ``template``, as a user would: `--no-input`."""
    code = "import sys; from cookiecutter.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, str(template), "--no-input", "-o", str(output), *context],
        capture_output=True,
        text=True,
    )
