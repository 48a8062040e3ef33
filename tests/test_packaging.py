"""The wheel carries the template: install it elsewhere and generate from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dlscaffold import __version__

from conftest import REPO_ROOT, tree_digest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the freshly built wheel installed; returns its bin directory."""
    work = tmp_path_factory.mktemp("packaging")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(work / "dist")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (work / "dist").glob("dlscaffold-*.whl")
    # click, jinja2 and cookiecutter come from the outer environment; the wheel itself is what is tested
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(work / "venv")], check=True)
    bin_dir = work / "venv" / "bin"
    install = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return bin_dir


def test_wheel_contains_template_without_bytecode(installed: Path) -> None:
    (wheel,) = (installed.parents[1] / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dlscaffold/_template/cookiecutter.json" in names
    assert "dlscaffold/_template_root/cookiecutter.json" in names
    assert any(name.startswith("dlscaffold/_template/{{cookiecutter.project_slug}}/") for name in names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_installed_command_generates_the_same_project_from_anywhere(
    installed: Path, new_project, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(installed / "python"), "-c", "import dlscaffold; print(dlscaffold.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert str(installed.parent) in where.stdout  # the wheel, not the source checkout
    result = subprocess.run(
        [str(installed / "dlscaffold"), "new", "demo", "--no-input", "--no-git"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    generated = elsewhere / "demo"
    assert not list(generated.rglob("__pycache__"))
    assert tree_digest(generated) == tree_digest(new_project("demo").root)


def test_python_dash_m_works(installed: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(installed / "python"), "-m", "dlscaffold", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_our_own_sources_are_ruff_clean(command: list[str]) -> None:
    folders = ["src", "tests", "benchmarks"]
    result = subprocess.run(
        ["ruff", *command, "--no-cache", *folders], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
