"""Run protocol, rarely edited: one live process per run, named by ``run.lock``.

The lock records who trains the run: host, pid, the process's start time (so a
pid reused by another program is not taken for the run), the SLURM job and, for a
run over several processes, its world size, nodes and ranks (``ranks.py``). While
the run trains, a thread touches the lock every ``HEARTBEAT_S`` seconds: on a
shared file system any host can tell a live run from one whose node died.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from protocol.cluster import slurm_job_id
from protocol.files import now, one_line, read_json

LOCK = "run.lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0  # a lock not touched for this long belongs to a dead process, wherever it ran


def acquire_lock(run_dir: Path, **layout: Any) -> bool:
    """Create ``run.lock`` atomically; clear a lock whose owner is gone first.

    ``layout``: of a run over several processes, its world size, nodes and the host of each rank.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    owner = {
        "pid": os.getpid(),
        "process_start": process_start(os.getpid()),
        "host": socket.gethostname(),
        "slurm_job_id": slurm_job_id(),
        "time": now(),
        **layout,
    }
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


@contextlib.contextmanager
def claiming(results_dir: Path) -> Iterator[None]:
    """Decide about a run and take its lock as one step: two launches never both archive or start it.

    An ``flock`` on ``results/.claim.lock``, held for the few milliseconds a claim
    takes; the kernel drops it when the process dies. Where the file system has no
    locks, claims go on without (as before).
    """
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where the directory should be: say so, not "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(results_dir)) from None
    fd = os.open(results_dir / ".claim.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        with contextlib.suppress(OSError):  # ENOLCK: a file system without locks
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def release_lock(run_dir: Path) -> None:
    (run_dir / LOCK).unlink(missing_ok=True)


def start_heartbeat(run_dir: Path) -> Callable[[], None]:
    """Touch the lock every ``HEARTBEAT_S`` seconds until the returned function is called."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                os.utime(run_dir / LOCK)
            except OSError:
                pass  # the file system is away for a moment: the next beat tries again

    thread = threading.Thread(target=beat, name="run-heartbeat", daemon=True)
    thread.start()

    def stop_beating() -> None:
        stop.set()
        thread.join()

    return stop_beating


def live_owner(run_dir: Path) -> str | None:
    """Describe the live process holding the run's lock, or ``None``.

    Stale, so the run was killed and resumes: a lock from an earlier attempt of
    the same SLURM job (a requeue); on this host, one whose process is gone or
    is another program under the same pid. On another host, a lock is alive while
    it beats: one touched within ``STALE_S`` seconds of this host's clock is, and
    one dated further off (silent, or a host whose clock differs from ours) is
    watched until it beats, or for ``1.5 * HEARTBEAT_S`` seconds without a beat.
    """
    path = run_dir / LOCK
    lock = read_json(path)
    if not isinstance(lock, dict):
        return None
    pid, host = lock.get("pid"), lock.get("host")
    owner = one_line(f"pid {pid} on {host}")  # the file may come from anyone: no terminal escapes
    if lock.get("slurm_job_id") and lock.get("slurm_job_id") == slurm_job_id():
        return None
    if host == socket.gethostname():
        alive = isinstance(pid, int) and pid_alive(pid)
        return owner if alive and lock.get("process_start") in (None, process_start(pid)) else None
    try:
        touched = path.stat().st_mtime_ns
    except OSError:
        return None
    seen = (str(path), touched)
    if seen in _SILENT:
        return None  # watched already by this process, untouched since
    if abs(time.time() - touched / 1e9) <= STALE_S:
        return owner
    print(f"{path} of {owner} is dated {time.ctime(touched / 1e9)}; watching whether it still beats")
    if beats(path, touched, 1.5 * HEARTBEAT_S):
        return owner
    _SILENT.add(seen)  # claim and acquire_lock ask again: no second wait
    return None


_SILENT: set[tuple[str, int]] = set()  # locks found not beating by this process


def beats(path: Path, touched: int, within: float) -> bool:
    """Whether the lock is touched again within ``within`` seconds, whatever the dates say."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(min(1.0, within / 10))
        try:
            if path.stat().st_mtime_ns != touched:
                return True
        except OSError:
            return False  # released: its owner is done
    return False


def pid_alive(pid: int) -> bool:
    if isinstance(pid, bool) or pid <= 0:
        return False  # 0 and negative numbers name process groups, not a process
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # alive, but someone else's
    return True


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); ``None`` where unknown.

    Together with the pid it names one process: a pid reused later has another start.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[19])  # field 22; the name before ")" may hold spaces
    except (OSError, ValueError, IndexError):
        return None
