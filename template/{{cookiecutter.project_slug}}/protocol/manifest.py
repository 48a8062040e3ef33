"""Run protocol, rarely edited: ``manifest.json``, how to reproduce a run."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
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
            command=[sys.executable, *sys.argv],
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
    slurm = slurm_ids()
    manifest["history"].append({**entry, **({"slurm": slurm} if slurm else {}), **details})
    write_json(run.dir / "manifest.json", manifest)
    return manifest


def git_state(max_diff_bytes: int = 100_000) -> dict[str, Any]:
    """Commit, dirtiness and (when small) the diff of the project's git tree."""

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        diff = git("diff", "HEAD")
        status = git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}
    state: dict[str, Any] = {"commit": commit, "dirty": bool(status.strip())}
    if diff and len(diff) <= max_diff_bytes:
        state["diff"] = diff
    return state


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
