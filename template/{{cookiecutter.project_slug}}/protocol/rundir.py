"""Run protocol, rarely edited: a run directory and its flag files.

A run lives in ``experiments/<task>/results/<run>/``::

    hparams.json      the hyperparameters that define it, defaults included: its identity
    manifest.json     how to reproduce it: command, seed, git state, versions, history
    progress.json     epoch, step and metrics of the last completed epoch
    history.jsonl     one JSON line per completed epoch: the learning curves
    logs/             tracker output
    checkpoints/      last and best checkpoints
    run.lock          present while a process trains it: host, pid, start time, SLURM job;
                      touched every 30 s (a heartbeat other hosts can read)
    ranks/            of a run over several processes: one file per rank, its host and pid,
                      beating while it trains, and how it ended
    finished.out      completed: final metrics and duration       (at most one
    interrupted.out   stopped by a signal, or found dead: resume    of these three
    failed.out        an exception or a diverged loss: why          at a time)
    pruned.out        a search's trial its pruner stopped: final, like finished.out
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.files import finite_values, now, read_json, write_json
from protocol.ranks import Ranks

FLAGS = ("finished.out", "interrupted.out", "failed.out", "pruned.out")


@dataclass
class Run:
    """One run directory, as seen by the process that trains it."""

    task: str
    name: str
    dir: Path
    args: argparse.Namespace  # every option of train.py
    hparams: dict[str, Any]  # the ones that define the run
    resuming: bool = False
    stop_signal: str | None = field(default=None, repr=False)  # set by a signal handler
    ranks: Ranks | None = None  # the processes of a run started by srun or torchrun

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def stop_requested(self) -> bool:
        """True once SIGINT, SIGTERM or SIGUSR1 arrived: stop at the next safe point."""
        return self.stop_signal is not None

    def request_stop(self, signal_name: str) -> None:
        """Called from a signal handler: the loop stops at its next safe point."""
        self.stop_signal = signal_name
        print(f"\n[{self.name}] {signal_name} received: stopping at the next safe point.")

    def record_progress(self, epoch: int, step: int, metrics: dict[str, float], main_metric: str) -> None:
        """Write what the last completed epoch achieved, for ``dlscaffold status``, reports and sweeps.

        ``progress.json`` holds the last epoch; ``history.jsonl`` gains one line per
        epoch. A resumed run replays epochs, so an epoch may appear twice: the last
        line for it wins.
        """
        stamp = now()
        write_json(
            self.dir / "progress.json",
            {"epoch": epoch, "step": step, "metrics": metrics, "main_metric": main_metric, "time": stamp},
        )
        entry = {"epoch": epoch, "step": step, "time": stamp, "metrics": metrics}
        append_json_line(self.dir / "history.jsonl", entry)


def append_json_line(path: Path, data: dict[str, Any]) -> None:
    """Append ``data`` to ``path`` as one line of strict JSON (a NaN or infinite number becomes null).

    One ``os.write`` on an O_APPEND descriptor: the line lands whole at the end
    of the file, even with readers about; a kill leaves at most a partial last
    line, which readers skip. Cheaper than rewriting the file every epoch.
    """
    line = json.dumps(finite_values(data), default=str, allow_nan=False) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)  # 0666 less the umask
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line  # end a line a kill cut short, so that this one stays whole
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def flag_state(run_dir: Path) -> str | None:
    """``finished``, ``interrupted``, ``failed``, ``pruned`` or ``None``, from the flag file present."""
    for flag in FLAGS:
        if (run_dir / flag).is_file():  # a directory or a FIFO under that name is not a flag
            return flag.removesuffix(".out")
    return None


def write_flag(run_dir: Path, flag: str, **content: Any) -> None:
    """Replace any flag with ``flag``: a run has at most one at any instant."""
    clear_flags(run_dir)
    write_json(run_dir / flag, {"state": flag.removesuffix(".out"), "time": now(), **content})


def clear_flags(run_dir: Path) -> None:
    for flag in FLAGS:
        (run_dir / flag).unlink(missing_ok=True)


def progress_summary(run_dir: Path) -> dict[str, Any]:
    """Where the run stood at its last completed epoch."""
    progress = read_json(run_dir / "progress.json")
    progress = progress if isinstance(progress, dict) else {}
    return {key: progress.get(key) for key in ("epoch", "step", "main_metric")}


def archive(run_dir: Path) -> Path:
    """Move a finished or failed run aside, so a new attempt never destroys its results."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.{stamp}")
    suffix = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.{stamp}-{suffix}")
        suffix += 1
    run_dir.rename(target)
    return target


def config_differences(run_dir: Path, hparams: dict[str, Any]) -> list[str]:
    """How ``hparams`` differ from those the run was trained with; empty for a new run.

    A run is named after the values that differ from their defaults, so a default
    changed in code, or a --run_name reused with other values, finds a run that
    was trained with something else: it must be neither skipped nor resumed.
    """
    path = run_dir / "hparams.json"
    try:
        if not path.exists():
            return []
    except OSError:  # a name too long, a directory we may not enter: launching it says why
        return []
    recorded = read_json(path)
    if not isinstance(recorded, dict):
        return [f"{path} is malformed"]
    current = json.loads(json.dumps(hparams, default=str))  # as it would be recorded
    differences = []
    for key in sorted(set(recorded) | set(current)):
        if recorded.get(key, MISSING) != current.get(key, MISSING):
            before, now_ = recorded.get(key, MISSING), current.get(key, MISSING)
            differences.append(f"{key}: {_shown(before)} when trained, {_shown(now_)} now")
    return differences


MISSING = "(absent)"


def _shown(value: Any) -> str:
    return value if value is MISSING else json.dumps(value)
