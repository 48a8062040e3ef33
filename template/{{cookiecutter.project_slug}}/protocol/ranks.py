"""Run protocol, rarely edited: where each process of a distributed run trains, and whether it still does.

Every rank of a run started by ``srun`` or ``torchrun`` writes ``ranks/<rank>.json``
(host, pid, the launch it belongs to) and touches it every ``BEAT_S`` seconds
while it trains; leaving through Python, it writes how it ended. A rank killed
outright (SIGKILL, the out-of-memory killer, a node lost) leaves a file that
neither beats nor says how it ended: that is how the ranks left name it in
``failed.out``, and how ``dlscaffold status`` tells a live job from a dead one.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.files import now, one_line, read_json, write_json
from protocol.lock import pid_alive

BEAT_S = 3.0
SILENT_S = 10.0  # a rank whose file is not touched for this long is gone


@dataclass
class Ranks:
    """This launch's processes: which one this is, and the host of each."""

    rank: int
    hosts: list[str]  # by rank
    launch: str  # one id shared by the ranks of this launch, none of an earlier one
    stop_beating: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def world_size(self) -> int:
        return len(self.hosts)

    @property
    def nodes(self) -> list[str]:
        return list(dict.fromkeys(self.hosts))

    def describe(self) -> dict[str, Any]:
        """What the lock and manifest.json record of the launch."""
        return {"world_size": self.world_size, "nodes": self.nodes, "ranks": self.hosts}


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


def start_beating(run_dir: Path, ranks: Ranks) -> None:
    """Write this rank's file and touch it every ``BEAT_S`` seconds, until :func:`end`."""
    path = run_dir / "ranks" / f"{ranks.rank}.json"
    path.parent.mkdir(exist_ok=True)
    record = {"rank": ranks.rank, "host": socket.gethostname(), "pid": os.getpid()}
    write_json(path, {**record, "launch": ranks.launch, "started": now(), "ended": None})

    def beat() -> None:
        while not ranks.stop_beating.wait(BEAT_S):
            try:
                os.utime(path)
            except OSError:
                pass  # the file system is away for a moment: the next beat tries again

    threading.Thread(target=beat, name="rank-heartbeat", daemon=True).start()


def end(run_dir: Path, ranks: Ranks, how: str) -> None:
    """Say how this rank ended (``finished``, ``interrupted``, or why it failed), and stop beating."""
    ranks.stop_beating.set()
    path = run_dir / "ranks" / f"{ranks.rank}.json"
    record = read_json(path)
    if isinstance(record, dict) and record.get("launch") == ranks.launch:
        try:
            write_json(path, {**record, "ended": how, "ended_at": now()})
        except OSError:
            pass  # the ranks left are told by the silence instead


def lost_ranks(run_dir: Path, ranks: Ranks, wait: float = SILENT_S + BEAT_S) -> dict[int, str]:
    """The other ranks that failed or died, each in a few words (``rank 1 on n2 (pid 7) was killed...``).

    A rank on this host is dead when its process is; elsewhere, when its file stops
    beating. Called when a collective failed, so waits at most ``wait`` seconds for
    a rank that just died to fall silent; a rank still beating then lives.
    """
    deadline = time.monotonic() + wait
    while True:
        lost: dict[int, str] = {}
        unsure = False
        for rank, host in enumerate(ranks.hosts):
            if rank == ranks.rank:
                continue
            verdict = _verdict(run_dir / "ranks" / f"{rank}.json", ranks.launch)
            if verdict is None:
                unsure = True
            elif verdict:
                lost[rank] = f"rank {rank} on {one_line(host)} {verdict}"
        if not unsure or time.monotonic() >= deadline:
            return lost
        time.sleep(0.5)


def _verdict(path: Path, launch: str) -> str | None:
    """How the rank of ``path`` ended: "" alive or ended well, a reason, or None (cannot tell yet)."""
    record = read_json(path)
    if not isinstance(record, dict) or record.get("launch") != launch:
        return None  # not started yet, or never: silent at the deadline
    ended = record.get("ended")
    if isinstance(ended, str):
        return "" if ended in ("finished", "interrupted") else f"failed: {one_line(ended)}"
    pid = record.get("pid")
    if record.get("host") == socket.gethostname() and isinstance(pid, int):
        return "" if pid_alive(pid) else f"(pid {pid}) was killed (SIGKILL, out of memory?)"
    try:
        silent = time.time() - path.stat().st_mtime
    except OSError:
        return None
    if silent > SILENT_S:
        return f"(pid {pid}) fell silent: killed, out of memory, or its node was lost"
    return None
