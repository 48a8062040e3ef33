"""Whether the process named by a run's ``run.lock`` is still alive, seen from any host.

The generated protocol writes into the lock the trainer's host, pid, process
start time and SLURM job, and touches the lock every 30 seconds while it
trains. So: on the host that trains it, the pid must be alive *and* still be
the same process (same start time: pids are reused); under SLURM, the job must
be running by ``squeue``; anywhere else, the heartbeat must be recent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from functools import cached_property
from pathlib import Path
from typing import Any

STALE_S = 300.0  # the protocol's heartbeat is 30 s: ten missed beats is a dead process
ACTIVE_JOB_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "RESIZING"})


class SlurmJobs:
    """The state of every job in the cluster, asked of ``squeue`` once, and only if needed."""

    @cached_property
    def states(self) -> dict[str, str] | None:
        """Job id -> state; ``None`` when there is no SLURM to ask (or it does not answer)."""
        if shutil.which("squeue") is None:
            return None
        try:
            # %A: the job's own id; %i: an array task's as the protocol records it, 12_3
            result = subprocess.run(
                ["squeue", "--noheader", "--format=%A %i %T"], capture_output=True, text=True, timeout=15
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if result.returncode != 0:
            return None
        states = {}
        for line in result.stdout.splitlines():
            if len(line.split()) == 3:
                job, name, state = line.split()
                states[job] = states[name] = state
        return states

    def state(self, job_id: str) -> str | None:
        """The job's state; ``"GONE"`` if SLURM no longer lists it; ``None`` if SLURM cannot tell."""
        if self.states is None:
            return None
        return self.states.get(job_id, "GONE")


def lock_state(lock: Path, owner: dict[str, Any], jobs: SlurmJobs) -> tuple[str, str | None]:
    """``running`` or ``interrupted``, with the reason shown by ``status``."""
    pid, host, job = owner["pid"], owner["host"], owner.get("slurm_job_id")
    if isinstance(job, str) and job:
        state = jobs.state(job)
        if state is not None and state not in ACTIVE_JOB_STATES:
            return "interrupted", f"SLURM job {job} ended ({state.lower()}) without a flag"
        if state is not None:
            return "running", f"SLURM job {job} on {where(owner)}"
    if host == socket.gethostname():
        if not pid_alive(pid):
            return "interrupted", f"process {pid} died without a flag (killed?)"
        started = owner.get("process_start")
        if isinstance(started, int) and process_start(pid) not in (None, started):
            return "interrupted", f"process {pid} died without a flag; its pid now belongs to another program"
        return "running", None
    try:
        silent = time.time() - lock.stat().st_mtime
    except OSError:
        return "interrupted", "its lock vanished"
    if silent > STALE_S:
        return "interrupted", f"no heartbeat from pid {pid} on {host} for {silent / 60:.0f} min"
    if silent < -STALE_S:  # touched "in the future": that host's clock is ahead; it beats, so it lives
        return "running", f"pid {pid} on {host} (its heartbeat is dated ahead of this clock)"
    return "running", f"pid {pid} on {host}"


def where(owner: dict[str, Any]) -> str:
    """``n1``; for a run over several processes ``n1, n2 (8 processes)``."""
    nodes, world_size = owner.get("nodes"), owner.get("world_size")
    if not (isinstance(nodes, list) and nodes and all(isinstance(node, str) for node in nodes)):
        return str(owner["host"])
    shown = ", ".join(nodes[:4]) + (f" and {len(nodes) - 4} more" if len(nodes) > 4 else "")
    return f"{shown} ({world_size} processes)" if isinstance(world_size, int) else shown


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # alive, but another user's
    return True


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); ``None`` where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[19])  # field 22; the name before ")" may hold spaces
    except (OSError, ValueError, IndexError):
        return None
