"""Run protocol, rarely edited: where each process of a distributed run trains, and whether it still does.

Every rank of a run started by ``srun`` or ``torchrun`` writes ``ranks/<rank>.json``
(host, pid, the launch it belongs to) and touches it every ``BEAT_S`` seconds
while it trains; leaving through Python, it writes how it ended. A rank killed
outright (SIGKILL, the out-of-memory killer, a node lost) or hung leaves a file
that stops changing without saying how it ended.

A rank whose collective failed waits up to ``SILENT_S`` for the others to end,
beat or fall silent, and names the ones gone. And rank 0 watches the other
ranks' files, rank 1 watches rank 0's, from the thread that beats: a rank
silent for ``GIVE_UP_S`` is named even while the watcher's training waits in a
collective that would hang until its timeout (and under NCCL then die without a
word). Silence is judged by whether a file still changes, never against this
host's clock, which may differ from the file server's.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.files import now, one_line, read_json, write_json
from protocol.lock import pid_alive

BEAT_S = 3.0
SILENT_S = 10.0  # after a failed collective: a rank whose file has not changed for this long is gone
# with no failure seen: longer than a rank's longest pause between beats, such as a checkpoint
# pickled into a slow file system while it holds Python's lock
GIVE_UP_S = 120.0

Lost = dict[int, str]  # rank -> what became of it, in a few words


@dataclass
class Ranks:
    """This launch's processes: which one this is, and the host of each."""

    rank: int
    hosts: list[str]  # by rank
    launch: str  # one id shared by the ranks of this launch, none of an earlier one
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    recording: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one end recorded
    recorded: bool = False  # failed.out was written for a rank gone, by this process
    watching: bool = True  # off once this process's training failed and finds out why itself

    @property
    def world_size(self) -> int:
        return len(self.hosts)

    def describe(self) -> dict[str, Any]:
        """What the lock and manifest.json record of the launch."""
        nodes = list(dict.fromkeys(self.hosts))
        return {"world_size": self.world_size, "nodes": nodes, "ranks": self.hosts, "launch": self.launch}

    def path(self, run_dir: Path, rank: int) -> Path:
        return run_dir / "ranks" / f"{rank}.json"

    def watched(self) -> list[int]:
        """Rank 0 watches every other rank; rank 1 watches rank 0, which keeps the books."""
        if self.rank == 0:
            return list(range(1, self.world_size))
        return [0] if self.rank == 1 else []


def join() -> Ranks | None:
    """Every rank's host and one launch id, gathered by a collective; ``None`` for one process.

    Called by every rank at the same point, once the process group exists.
    """
    dist = sys.modules.get("torch.distributed")  # never imported here: no process group without torch
    if dist is None or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    hosts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, socket.gethostname())
    launch = [uuid.uuid4().hex]
    dist.broadcast_object_list(launch, src=0)
    return Ranks(rank=dist.get_rank(), hosts=hosts, launch=launch[0])


def start_beating(run_dir: Path, ranks: Ranks, on_lost: Callable[[Lost], None]) -> None:
    """Write this rank's file and touch it every ``BEAT_S`` seconds, until :func:`end`.

    Between beats, watch the ranks of :meth:`Ranks.watched`; the first found gone
    is passed to ``on_lost``, from this thread.
    """
    path = ranks.path(run_dir, ranks.rank)
    path.parent.mkdir(exist_ok=True)
    record = {"rank": ranks.rank, "host": socket.gethostname(), "pid": os.getpid()}
    write_json(path, {**record, "launch": ranks.launch, "started": now(), "ended": None})
    seen: dict[int, Seen] = {}

    def beat() -> None:
        while not ranks.stop.wait(BEAT_S):
            try:
                os.utime(path)
            except OSError:
                pass  # the file system is away for a moment: the next beat tries again
            watched = ranks.watched() if ranks.watching else []
            gone = {rank: text for rank in watched if (text := _gone(run_dir, ranks, rank, seen, GIVE_UP_S))}
            if gone:
                on_lost(gone)
                return

    threading.Thread(target=beat, name="rank-heartbeat", daemon=True).start()


def end(run_dir: Path, ranks: Ranks, how: str) -> None:
    """Say how this rank ended (``finished``, ``interrupted``, or its error), and stop beating."""
    ranks.stop.set()
    path = ranks.path(run_dir, ranks.rank)
    record = read_json(path)
    if isinstance(record, dict) and record.get("launch") == ranks.launch:
        try:
            write_json(path, {**record, "ended": how, "ended_at": now()})
        except OSError:
            pass  # the ranks left are told by the silence instead


def lost_ranks(run_dir: Path, ranks: Ranks, wait: float = SILENT_S + BEAT_S) -> tuple[Lost, Lost]:
    """The other ranks gone (killed, hung, their node lost) and those that failed with an error.

    Called when a collective failed, so waits at most ``wait`` seconds for each
    other rank to end, beat again (alive) or stay silent for ``SILENT_S`` (gone).
    """
    gone: Lost = {}
    failed: Lost = {}
    seen: dict[int, Seen] = {}
    pending = [rank for rank in range(ranks.world_size) if rank != ranks.rank]
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        for rank in list(pending):
            record = read_json(ranks.path(run_dir, rank))
            ended = record.get("ended") if isinstance(record, dict) else None
            if isinstance(record, dict) and record.get("launch") == ranks.launch and isinstance(ended, str):
                if ended not in ("finished", "interrupted", "pruned"):
                    failed[rank] = f"rank {rank} on {one_line(ranks.hosts[rank])} failed: {one_line(ended)}"
                pending.remove(rank)
            elif text := _gone(run_dir, ranks, rank, seen, SILENT_S, record):
                gone[rank] = text
                pending.remove(rank)
            elif rank in seen and seen[rank].changed:  # it beat since the first look: alive
                pending.remove(rank)
        time.sleep(0.5 if pending else 0)
    return gone, failed


@dataclass
class Seen:
    """What one watcher saw of a rank's file: its modification time, unchanged since ``since``."""

    mtime: int
    since: float  # on this host's monotonic clock
    changed: bool = False  # it changed since the first look: the rank beats


def _gone(
    run_dir: Path, ranks: Ranks, rank: int, seen: dict[int, Seen], silent_s: float, record: Any = None
) -> str | None:
    """``rank 1 on n2 (pid 7) ...`` if that rank is gone: dead here, or its file unchanged for
    ``silent_s``; ``None`` while it lives, once it ended, or while this cannot tell yet.
    ``record``: the rank's file, if the caller read it already."""
    path = ranks.path(run_dir, rank)
    record = read_json(path) if record is None else record
    if not isinstance(record, dict) or record.get("launch") != ranks.launch or record.get("ended"):
        return None  # not started yet (its silence shows soon enough), or ended through Python
    pid, host = record.get("pid"), one_line(ranks.hosts[rank])
    if record.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
        return f"rank {rank} on {host} (pid {pid}) was killed (SIGKILL, out of memory?)"
    try:
        touched = path.stat().st_mtime_ns
    except OSError:
        return None
    before = seen.get(rank)
    if before is None or before.mtime != touched:
        seen[rank] = Seen(touched, time.monotonic(), changed=before is not None)
        return None
    if time.monotonic() - before.since > silent_s:
        return f"rank {rank} on {host} (pid {pid}) fell silent: killed, hung, or its node was lost"
    return None
