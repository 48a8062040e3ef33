"""uv runs a generated project from its pyproject.toml alone, and runs dlscaffold from the wheel.

The first project downloads torch from PyPI (a CUDA build on Linux: about 3 GB, and a
venv of about 5 GB); uv's cache (``UV_CACHE_DIR``, else uv's default) keeps it for the
other flavour and the next session. The venvs are removed after each test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlscaffold import __version__
from dlscaffold.create import create_project

from conftest import FRAMEWORKS, REPO_ROOT

UV, UVX = shutil.which("uv"), shutil.which("uvx")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(UV is None or UVX is None, reason="uv is not on PATH (pip install -e '.[test]')"),
]


def run(command: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a uv command as a user would in ``cwd``, on this Python, never one uv downloads."""
    # our venv and import path are not the project's, nor the wheel's
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(UV_PYTHON=sys.executable, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, less the projects' venvs afterwards: gigabytes pytest would keep for three sessions."""
    yield tmp_path
    for venv in tmp_path.glob("*/.venv"):
        shutil.rmtree(venv, ignore_errors=True)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_uv_run_trains_a_fresh_project(workdir: Path, framework: str) -> None:
    if framework == "lightning" and sys.version_info < (3, 10):
        pytest.skip("pytorch-lightning 2.6.6 needs Python 3.10")
    root = create_project({"project_name": "demo", "framework": framework}, workdir, use_git=False).root
    result = run([UV, "run", "python", "experiments/task1/train.py", "--epochs", "1"], cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list((root / "experiments" / "task1" / "results").glob("*/finished.out")), result.stdout
    assert (root / "uv.lock").is_file()
    # the dev group comes with `uv sync` and `uv run`: the tests and hooks run without another step
    assert all((root / ".venv" / "bin" / tool).is_file() for tool in ("pytest", "ruff", "pre-commit"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("uv-wheel")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (built,) = dist.glob("dlscaffold-*.whl")
    return built


def test_uvx_runs_dlscaffold_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    uvx = [UVX, "--isolated", "--from", str(wheel), "dlscaffold"]  # --isolated: no tool installed before
    version = run([*uvx, "--version"], cwd=tmp_path)
    assert version.returncode == 0, version.stdout + version.stderr
    assert __version__ in version.stdout
    new = run([*uvx, "new", "x", "--no-input"], cwd=tmp_path)
    assert new.returncode == 0, new.stdout + new.stderr
    assert (tmp_path / "x" / "experiments" / "task1" / "train.py").is_file()
    assert (tmp_path / "x" / "pyproject.toml").is_file()
