"""Run protocol, rarely edited: ``manifest.json``, how to reproduce a run."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from protocol.cluster import slurm_ids
from protocol.files import PROJECT_ROOT, now, read_json, write_json
from protocol.rundir import Run

PACKAGES = ("torch", "numpy", "torchdata", "pytorch-lightning")


def update_manifest(
    run: Run, event: str, manifest: dict[str, Any] | None = None, **details: Any
) -> dict[str, Any]:
    """Append ``event`` to the run's history; on the first call of a process, record how it ran."""
    if manifest is None:
        manifest = read_json(run.dir / "manifest.json")
        manifest = manifest if isinstance(manifest, dict) else {}
        manifest.update(
            command=[sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]],
            hparams=run.hparams,
            seed=run.hparams.get("seed"),
            git=git_state(),
            versions=package_versions(),
            host=socket.gethostname(),
            slurm=slurm_ids(),
        )
        if not isinstance(manifest.get("history"), list):
            manifest["history"] = []
    entry = {"event": event, "time": now(), "pid": os.getpid(), "host": socket.gethostname()}
    if event in ("start", "resume"):  # a resume may run other code than the start did
        entry["snapshot"] = manifest["git"].get("snapshot")
    slurm = slurm_ids()
    manifest["history"].append({**entry, **({"slurm": slurm} if slurm else {}), **details})
    write_json(run.dir / "manifest.json", manifest)
    return manifest


def git_state(max_diff_bytes: int = 100_000) -> dict[str, Any]:
    """Commit, dirtiness, (when small) the diff, and a snapshot of the code exactly as it ran."""
    try:
        status = _git("--no-optional-locks", "status", "--porcelain")  # never rewrites the user's index
        commit = _git("rev-parse", "--verify", "-q", "HEAD", check=False).strip() or None  # no commit yet
        diff = _git("diff", "HEAD") if commit else ""
    except OSError:
        return {"commit": None, "snapshot": None, "note": "git is not installed: the code is not recorded"}
    except subprocess.SubprocessError:
        return {"commit": None, "snapshot": None, "note": "not a git repository: the code is not recorded"}
    state: dict[str, Any] = {"commit": commit, "dirty": bool(status.strip())}
    if diff and len(diff) <= max_diff_bytes:
        state["diff"] = diff
    try:
        state["snapshot"] = snapshot_code(commit)
    except (OSError, subprocess.SubprocessError) as error:
        state["snapshot"], state["note"] = None, f"no snapshot of the code: {error}"
    return state


SNAPSHOT_REFS = "refs/dlscaffold/snapshots"


def snapshot_code(parent: str | None) -> str:
    """A commit of the working tree as it is, untracked files included (what .gitignore allows).

    It is built with a temporary index (a copy of the real one, so unchanged files
    are not hashed again) and kept reachable by a ref of its own under
    ``refs/dlscaffold/snapshots/``: the user's index, branches, stash and files are
    never touched. ``git checkout <snapshot>`` or ``dlscaffold reproduce`` restore it.
    """
    index = Path(_git("rev-parse", "--git-path", "index").strip())
    index = index if index.is_absolute() else PROJECT_ROOT / index
    with tempfile.TemporaryDirectory(prefix="dlscaffold-snapshot-") as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if index.is_file():
            shutil.copyfile(index, env["GIT_INDEX_FILE"])
        _git("add", "--all", env=env)
        tree = _git("write-tree", env=env).strip()
    parents = ["-p", parent] if parent else []
    identity = {"GIT_AUTHOR_NAME": "dlscaffold", "GIT_AUTHOR_EMAIL": "dlscaffold@localhost"}
    identity |= {"GIT_COMMITTER_NAME": "dlscaffold", "GIT_COMMITTER_EMAIL": "dlscaffold@localhost"}
    message = "The code of a run, as it ran (dlscaffold snapshot)"
    snapshot = _git("commit-tree", tree, *parents, "-m", message, env={**os.environ, **identity}).strip()
    _git("update-ref", f"{SNAPSHOT_REFS}/{snapshot}", snapshot)
    return snapshot


def _git(*command: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    return subprocess.run(
        ["git", *command], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=check, timeout=60
    ).stdout


def package_versions() -> dict[str, str]:
    """Python's version and the versions of the packages that shape results."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        module = sys.modules.get(package.replace("-", "_"))  # imported already: no search on disk
        try:
            versions[package] = getattr(module, "__version__", None) or metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions
