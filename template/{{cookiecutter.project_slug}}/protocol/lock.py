"""Run protocol, rarely edited: one live process per run, named by ``run.lock``."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from protocol.cluster import slurm_job_id
from protocol.files import now, read_json

LOCK = "run.lock"


def acquire_lock(run_dir: Path) -> bool:
    """Create ``run.lock`` atomically; clear a lock whose owner is gone first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": slurm_job_id(), "time": now()}
    draft = run_dir / f".{LOCK}.{os.getpid()}"
    draft.write_text(json.dumps(owner) + "\n", encoding="utf-8")
    try:
        for _ in range(2):
            try:
                os.link(draft, lock)  # atomic, and fails if the lock exists: never half-written
                return True
            except FileExistsError:
                if live_owner(run_dir):
                    return False
                lock.unlink(missing_ok=True)  # left by a killed process: the run resumes
    finally:
        draft.unlink(missing_ok=True)
    return False


def release_lock(run_dir: Path) -> None:
    (run_dir / LOCK).unlink(missing_ok=True)


def live_owner(run_dir: Path) -> str | None:
    """Describe the live process holding the run's lock, or ``None``.

    A lock from this host whose process is gone, or from an earlier attempt of
    the same SLURM job (a requeue), is stale: the run was killed and resumes.
    A lock from another host cannot be checked and is taken as live.
    """
    lock = read_json(run_dir / LOCK)
    if not isinstance(lock, dict):
        return None
    pid, host = lock.get("pid"), lock.get("host")
    if lock.get("slurm_job_id") and lock.get("slurm_job_id") == slurm_job_id():
        return None
    if host == socket.gethostname() and not (isinstance(pid, int) and pid_alive(pid)):
        return None
    return f"pid {pid} on {host}"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False  # 0 and negative numbers name process groups, not a process
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # alive, but someone else's
    return True
