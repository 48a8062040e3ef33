"""The read side of the run-directory protocol, for ``dlscaffold status``.

A generated project writes, per run, at most one flag file (``finished.out``,
``interrupted.out``, ``failed.out``, ``pruned.out``), a ``run.lock`` while a process trains it
and ``progress.json`` after each epoch. This module reads those files and
nothing else: it never imports the project or torch, and a half-written or
malformed file (wrong type, huge, a FIFO, NaN) is reported, never fatal; names
and reasons are made printable, so a hostile file cannot garble the terminal.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlscaffold import files
from dlscaffold.liveness import SlurmJobs, lock_state

FLAGS = {
    "finished.out": "finished",
    "interrupted.out": "interrupted",
    "failed.out": "failed",
    "pruned.out": "pruned",  # a search's trial its pruner stopped
}
LOCK = "run.lock"
PROGRESS = "progress.json"
SEED_PART = re.compile(r"seed-\d+")


@dataclass
class RunStatus:
    task: str
    run: str
    state: str  # finished, interrupted, failed, pruned, running or incomplete
    location: Path = field(repr=False)  # the directory itself, its name unescaped
    epoch: int | None = None
    step: int | None = None
    metric_name: str | None = None
    metric: float | None = None
    updated: str | None = None
    reason: str | None = None
    path: str = ""
    group: str = ""  # the run's name without its seed: runs differing only by seed share it
    group_size: int = 1
    group_mean: float | None = None
    group_std: float | None = None
    config: str = field(default="", repr=False)  # hparams.json without the seed, as canonical JSON
    seed: str = field(default="", repr=False)  # hparams.json's seed as JSON, else the name's seed-N

    def to_dict(self) -> dict[str, Any]:
        shown = asdict(self)
        del shown["config"], shown["location"], shown["seed"]
        return shown


@dataclass
class SeedGroup:
    """Runs of one task with the same hyperparameters apart from the seed.

    ``runs`` holds one run per seed, the latest: an attempt archived by ``--force`` or
    a reproduction repeats a seed, and counting it twice would shrink the spread.
    """

    task: str
    name: str
    runs: list[RunStatus]
    metric_name: str | None
    mean: float | None
    std: float | None
    members: list[RunStatus] = field(default_factory=list)  # every run of the group, repeats included


def task_names(project_root: Path) -> list[str]:
    """The tasks with a directory under ``experiments/``."""
    return sorted(printable(path.name) for path in subdirs(project_root / "experiments"))


def collect_runs(project_root: Path, task: str | None = None) -> list[RunStatus]:
    """Every run directory under ``experiments/*/results/``, sorted by task and run."""
    experiments = project_root / "experiments"
    jobs = SlurmJobs()
    runs = []
    for task_dir in sorted(subdirs(experiments)):
        if task is not None and printable(task_dir.name) != task:
            continue
        for run_dir in sorted(subdirs(task_dir / "results")):
            runs.append(read_run(task_dir.name, run_dir, jobs))
    for group in seed_groups(runs):
        for run in group.members:
            run.group, run.group_size = group.name, len(group.runs)
            run.group_mean, run.group_std = group.mean, group.std
    return runs


def seed_groups(runs: list[RunStatus]) -> list[SeedGroup]:
    """Group runs by task and hyperparameters other than the seed; mean and spread of the metric.

    The standard deviation is the sample one (n - 1), over the runs that have
    the metric; it is ``None`` for fewer than two.
    """
    members: dict[tuple[str, str], list[RunStatus]] = {}
    for run in runs:  # the same hyperparameters but the seed (by name for runs without hparams.json)
        members.setdefault((run.task, run.config or f"name:{_without_seed(run)}"), []).append(run)
    groups = []
    names: set[tuple[str, str]] = set()
    for (task, _), every_run in members.items():
        latest = {run.seed or run.run: run for run in sorted(every_run, key=lambda run: run.updated or "")}
        group_runs = sorted(latest.values(), key=every_run.index)
        name = _without_seed(every_run[0])
        while (task, name) in names:  # two configurations whose runs were named alike (--run_name)
            name += "'"
        names.add((task, name))
        values = [run.metric for run in group_runs if run.metric is not None]
        metric_names = {run.metric_name for run in group_runs if run.metric is not None}
        mean, std = _mean_and_std(values)
        metric_name = metric_names.pop() if len(metric_names) == 1 else None
        groups.append(SeedGroup(task, name, group_runs, metric_name, mean, std, every_run))
    return groups


def _mean_and_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation; ``None`` where there are too few values or they overflow."""
    try:
        mean = statistics.fmean(values) if values else None
        std = statistics.stdev(values) if len(values) > 1 else None
    except (OverflowError, ValueError):  # finite values near 1e308 can still overflow a sum
        return None, None
    finite = [value for value in (mean, std) if value is not None]
    return (mean, std) if all(math.isfinite(value) for value in finite) else (None, None)


def _without_seed(run: RunStatus) -> str:
    """The run's name with its ``seed-N`` part removed (the protocol's naming: key-value_key-value)."""
    parts = [part for part in run.run.split("_") if not SEED_PART.fullmatch(part)]
    return "_".join(parts) or "default"


def subdirs(path: Path) -> list[Path]:
    try:
        return [entry for entry in path.iterdir() if entry.is_dir() and not entry.name.startswith(".")]
    except OSError:
        return []


def read_run(task: str, run_dir: Path, jobs: SlurmJobs | None = None) -> RunStatus:
    """The state of one run directory, whatever condition its files are in."""
    status = RunStatus(
        task=printable(task),
        run=printable(run_dir.name),
        state="incomplete",
        path=printable(str(run_dir)),
        location=run_dir,
    )
    flag_name = next((name for name in FLAGS if os.path.lexists(run_dir / name)), None)
    flag = read_json(run_dir / flag_name) if flag_name else None
    progress = read_json(run_dir / PROGRESS)
    if flag_name:
        status.state = FLAGS[flag_name]
        if not isinstance(flag, dict):
            status.reason = f"{flag_name} is malformed"
        elif status.state != "finished":
            status.reason = _text(flag.get("reason"))
    elif (run_dir / LOCK).exists():
        status.state, status.reason = _lock_state(run_dir / LOCK, jobs or SlurmJobs())
    elif not any((run_dir / name).exists() for name in ("hparams.json", PROGRESS, "checkpoints")):
        status.reason = "no protocol files: not a run, or written by something else"
    if status.reason is None and os.path.lexists(run_dir / PROGRESS) and not isinstance(progress, dict):
        status.reason = f"{PROGRESS} is malformed"
    for source in (progress, flag):
        if isinstance(source, dict):
            status.epoch = _int(source.get("epoch"), status.epoch)
            status.step = _int(source.get("step"), status.step)
            _take_metric(status, source)
    hparams = read_json(run_dir / "hparams.json")
    if isinstance(hparams, dict) and hparams:  # an empty one tells nothing: grouped by name then
        status.config = json.dumps(
            {key: value for key, value in hparams.items() if key != "seed"}, sort_keys=True
        )
        status.seed = json.dumps(hparams["seed"]) if "seed" in hparams else ""
    else:
        status.seed = next((part for part in run_dir.name.split("_") if SEED_PART.fullmatch(part)), "")
    status.updated = _last_update(run_dir, flag_name)
    return status


def _lock_state(lock: Path, jobs: SlurmJobs) -> tuple[str, str | None]:
    owner = read_json(lock)
    if not isinstance(owner, dict):
        return "running", "lock being written"
    pid, host = _int(owner.get("pid"), None), _text(owner.get("host"))
    if pid is None or pid <= 0 or host is None:
        return "incomplete", f"{LOCK} is malformed"
    state, reason = lock_state(lock, {**owner, "pid": pid, "host": host}, jobs)
    silent = _silent_ranks(lock, owner.get("launch")) if state == "running" else []
    if silent:  # rank 0 lives, waiting on a rank that died: the run fails when its wait times out
        reason = "; ".join([reason or "running", *silent])
    return state, printable(reason) if reason else None  # the lock and rank files may hold anything


RANK_SILENT_S = 15.0  # each rank of a run over several processes touches its file every 3 s


def _silent_ranks(lock: Path, launch: Any) -> list[str]:
    """The ranks of this launch whose files stopped changing while rank 0's lock still beats.

    Both dates come from the file system, so a host whose clock is off does not matter.
    """
    try:
        beat = lock.stat().st_mtime
    except OSError:
        return []
    found = []
    for path in sorted((lock.parent / "ranks").glob("*.json")):
        record = read_json(path)
        if not isinstance(record, dict) or record.get("launch") != launch or record.get("ended") is not None:
            continue  # another launch's, malformed, or ended and said so
        try:
            silent = beat - path.lstat().st_mtime
        except OSError:
            continue
        if silent > RANK_SILENT_S:
            rank, host = _int(record.get("rank"), None), _text(record.get("host"))
            found.append(f"rank {rank} on {host} silent for {silent:.0f} s")
    return found


def _take_metric(status: RunStatus, source: dict[str, Any]) -> None:
    metrics = source.get("metrics")
    name = source.get("main_metric") or status.metric_name
    if not isinstance(metrics, dict) or not isinstance(name, str):
        return
    value = files.finite_number(metrics.get(name))
    if value is not None:
        status.metric_name, status.metric = printable(name), value


def _last_update(run_dir: Path, flag_name: str | None) -> str | None:
    times = []
    for name in (flag_name, PROGRESS, LOCK):
        if name:
            with contextlib.suppress(OSError):
                times.append((run_dir / name).stat().st_mtime)
    if not times:
        try:
            times.append(run_dir.stat().st_mtime)
        except OSError:
            return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(max(times)))


def read_json(path: Path) -> Any:
    try:
        return files.read_json(path)
    except files.UnreadableFile:
        return None


def _int(value: Any, fallback: int | None) -> int | None:
    """A count as the protocol writes it: an int (not a bool) that fits in 64 bits."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    return fallback


def _text(value: Any) -> str | None:
    return printable(value) if isinstance(value, str) else None


MAX_SHOWN = 200


def printable(text: str) -> str:
    """One line of plain text: undecodable bytes as U+FFFD, control characters escaped, long text cut."""
    if text.isprintable() and len(text) <= MAX_SHOWN:  # nearly always: no copy
        return text
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def format_table(runs: list[RunStatus]) -> str:
    """An aligned text table, one run per line."""
    if not runs:
        return "No runs yet. Train one: python experiments/<task>/train.py"
    header = ["TASK", "RUN", "STATE", "EPOCH", "STEP", "METRIC", "UPDATED", "REASON"]
    rows = [header]
    for run in runs:
        metric = f"{run.metric_name}={run.metric:.4f}" if run.metric is not None else "-"
        rows.append(
            [
                run.task,
                run.run,
                run.state,
                _show(run.epoch),
                _show(run.step),
                metric,
                run.updated or "-",
                run.reason or "",
            ]
        )
    table = _align(rows)
    groups = [group for group in seed_groups(runs) if len(group.runs) > 1]
    if groups:
        group_rows = [["TASK", "RUNS LIKE", "SEEDS", "METRIC (MEAN ± STD)"]]
        for group in groups:
            group_rows.append([group.task, group.name, str(len(group.runs)), _spread(group)])
        table += "\n\nRuns that differ only by seed:\n" + _align(group_rows)
    return table


def _spread(group: SeedGroup) -> str:
    if group.mean is None:
        return "-"
    std = "-" if group.std is None else f"{group.std:.4f}"
    return f"{group.metric_name or 'metric'}={group.mean:.4f} ± {std}"


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _show(value: int | None) -> str:
    return "-" if value is None else str(value)
