"""git, as dlscaffold uses it: a new project's first commit, and the code a run recorded.

The run manifest records the commit a run was trained from and a snapshot of
its code, so a project that starts under version control can reproduce its
runs from day one.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from dlscaffold.errors import GitError

FALLBACK_IDENTITY = ["-c", "user.name=dlscaffold", "-c", "user.email=dlscaffold@localhost"]


def repository_of(path: Path) -> str | None:
    """The top directory of the git work tree ``path`` (an existing directory) belongs to, if any."""
    result = _git(path, "rev-parse", "--show-toplevel")
    if result is None or result.returncode != 0:
        return None
    return result.stdout.strip() or None


def init_with_first_commit(root: Path, message: str) -> str | None:
    """``git init`` and commit everything; return why not, or ``None`` on success."""
    if shutil.which("git") is None:
        return "git is not installed"
    for command in (["init", "-q"], ["add", "-A"]):
        result = _git(root, *command)
        if result is None or result.returncode != 0:
            return _reason(result)
    identity = [] if _has_identity(root) else FALLBACK_IDENTITY
    result = _git(root, *identity, "commit", "-q", "-m", message)
    return None if result is not None and result.returncode == 0 else _reason(result)


def _has_identity(root: Path) -> bool:
    for key in ("user.name", "user.email"):
        result = _git(root, "config", key)
        if result is None or not result.stdout.strip():
            return False
    return True


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError:
        return None


def _reason(result: subprocess.CompletedProcess[str] | None) -> str:
    if result is None:
        return "git could not be run"
    return result.stderr.strip() or f"git exited with {result.returncode}"


def export(root: Path, commit: str, destination: Path) -> None:
    """Write the files of ``commit`` (of the repository holding ``root``) into ``destination``.

    ``git archive`` reads objects only: the repository's index, branches and
    working tree are left as they are.
    """
    check = _git(root, "cat-file", "-e", f"{commit}^{{commit}}")
    if check is None or check.returncode != 0:
        raise GitError(f"the repository at {root} has no commit {commit} (was the snapshot ref deleted?)")
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit], cwd=root, capture_output=True, check=False
        )
    except OSError as error:
        raise GitError(f"git could not be run: {error}") from error
    if archive.returncode != 0:
        raise GitError(f"git archive {commit} failed: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and patch releases of 3.9 to 3.11
            tar.extractall(destination, filter="data")
        else:
            tar.extractall(destination)  # the project's own commit, from git archive
