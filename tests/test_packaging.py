"""Packaging: the wheel carries the template (install it elsewhere and generate from any
directory), and a generated project declares its dependencies for uv and pip from one list."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from dlscaffold import __version__

from conftest import FRAMEWORKS, REPO_ROOT, tree_digest

TRACKERS = ["tensorboard", "csv", "wandb"]


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


@pytest.mark.slow
def test_wheel_contains_template_without_bytecode(installed: Path) -> None:
    (wheel,) = (installed.parents[1] / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dlscaffold/_template/cookiecutter.json" in names
    assert "dlscaffold/_template_root/cookiecutter.json" in names
    assert any(name.startswith("dlscaffold/_template/{{cookiecutter.project_slug}}/") for name in names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


@pytest.mark.slow
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


@pytest.mark.slow
def test_python_dash_m_works(installed: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(installed / "python"), "-m", "dlscaffold", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_our_own_sources_are_ruff_clean(command: list[str]) -> None:
    folders = ["src", "tests", "benchmarks"]
    result = subprocess.run(
        ["ruff", *command, "--no-cache", *folders], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def requirement_lines(path: Path) -> list[str]:
    """What pip reads from a requirements file: each line less its comment."""
    lines = (line.partition("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("tracker", TRACKERS)
def test_generated_project_declares_its_dependencies_once(new_project, framework: str, tracker: str) -> None:
    tomllib = pytest.importorskip("tomllib")
    root = new_project(framework=framework, tracker=tracker).root
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    dependencies = pyproject["project"]["dependencies"]
    dev = pyproject["dependency-groups"]["dev"]  # uv syncs it by default
    expected = {"torch", "numpy", "torchdata", "tqdm", "optuna"}
    expected |= {"pytorch-lightning"} if framework == "lightning" else set()
    expected |= {"tensorboard": {"tensorboard"}, "csv": set(), "wandb": {"wandb"}}[tracker]
    assert {Requirement(line).name for line in dependencies} == expected
    assert {Requirement(line).name for line in dev} == {"pytest", "ruff", "pre-commit"}
    assert not [line for line in dependencies if "==" in line]  # torch above all: the user picks its build
    if framework == "lightning":
        assert "pytorch-lightning>=2.6.6" in dependencies  # 2.6.2 and 2.6.3 were malicious
        assert pyproject["project"]["requires-python"] == ">=3.10"  # what pytorch-lightning 2.6.6 needs
    # pip reads the same list, dev tools included, in the same order
    assert requirement_lines(root / "requirements.txt") == dependencies + dev
    # `pip install -e .` builds with hatchling, which must find the packages; uv installs dependencies only
    assert pyproject["build-system"]["build-backend"] == "hatchling.build"
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert packages and all((root / package / "__init__.py").is_file() for package in packages)
    assert pyproject["tool"]["uv"]["package"] is False


def test_generated_pre_commit_config_runs_ruff(new_project) -> None:
    yaml = pytest.importorskip("yaml")
    root = new_project().root
    (repo,) = yaml.safe_load((root / ".pre-commit-config.yaml").read_text())["repos"]
    assert repo["repo"] == "https://github.com/astral-sh/ruff-pre-commit"
    assert str(repo["rev"]).startswith("v")
    assert [hook["id"] for hook in repo["hooks"]] == ["ruff-check", "ruff-format"]


@pytest.mark.slow
def test_pip_installs_a_generated_project_editable(new_project, tmp_path: Path) -> None:
    """pip builds the project with hatchling (fetched from PyPI) and takes its dependencies, here
    already present in the outer environment, from pyproject.toml."""
    root = new_project(framework="lightning", tracker="tensorboard").root
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True
    )
    python = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-e", "."], cwd=root, capture_output=True, text=True
    )
    assert install.returncode == 0, install.stdout + install.stderr
    show = subprocess.run([str(python), "-m", "pip", "show", "demo"], capture_output=True, text=True)
    assert "pytorch-lightning" in show.stdout and "tensorboard" in show.stdout
    where = subprocess.run(
        [str(python), "-c", "import trainers, utils; print(utils.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0 and str(root) in where.stdout, where.stderr
