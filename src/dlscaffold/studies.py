"""The read side of a project's hyperparameter searches, for ``dlscaffold status`` and ``report``.

``scripts/search.py`` keeps each study in ``experiments/<task>/searches/<study>/``
and rewrites its ``trials.json`` (each trial's number, state, value, parameters
and run) whenever a trial starts or ends. This module reads that file, and the
trials' run directories for those still running: never Optuna's journal, never
Optuna or torch. A malformed file or entry is passed over, as ``status`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlscaffold import files
from dlscaffold.runs import RunStatus, printable, read_json, subdirs

SUMMARY = "trials.json"
MAX_TRIALS = 100_000


@dataclass
class Trial:
    number: int
    state: str  # complete, pruned, failed, running, interrupted, waiting
    value: float | None
    run: str
    params: dict[str, str]
    reason: str | None = None


@dataclass
class Study:
    task: str
    name: str
    metric: str
    direction: str
    wanted: int | None
    trials: list[Trial]
    best: Trial | None
    path: Path = field(repr=False)

    def count(self, state: str) -> int:
        return sum(trial.state == state for trial in self.trials)

    def ranked(self) -> list[Trial]:
        """The complete trials, best first."""
        complete = [trial for trial in self.trials if trial.state == "complete" and trial.value is not None]
        return sorted(complete, key=lambda trial: trial.value or 0.0, reverse=self.direction == "maximize")


def collect_studies(project_root: Path, runs: list[RunStatus], task: str | None = None) -> list[Study]:
    """Every study of every task (or of ``task``); ``runs`` tells which running trials still train."""
    states = {(run.task, run.run): run.state for run in runs}
    studies = []
    for task_dir in sorted(subdirs(project_root / "experiments")):
        if task is not None and printable(task_dir.name) != task:
            continue
        for study_dir in sorted(subdirs(task_dir / "searches")):
            study = read_study(printable(task_dir.name), study_dir, states)
            if study is not None:
                studies.append(study)
    return studies


def read_study(task: str, study_dir: Path, run_states: dict[tuple[str, str], str]) -> Study | None:
    content = read_json(study_dir / SUMMARY)
    if not isinstance(content, dict) or not isinstance(content.get("trials"), list):
        return None
    metric = printable(content["metric"]) if isinstance(content.get("metric"), str) else "value"
    direction = "minimize" if content.get("direction") == "minimize" else "maximize"
    wanted = content.get("trials_wanted")
    trials = [trial for entry in content["trials"][:MAX_TRIALS] if (trial := _trial(entry)) is not None]
    for trial in trials:
        if trial.state == "running":  # told running by the search: does its run still train?
            run_state = run_states.get((task, trial.run))
            if run_state in ("interrupted", "incomplete", None):
                trial.state = "interrupted" if run_state else "waiting"
    study = Study(
        task=task,
        name=printable(study_dir.name),
        metric=metric,
        direction=direction,
        wanted=wanted if isinstance(wanted, int) and not isinstance(wanted, bool) else None,
        trials=trials,
        best=None,
        path=study_dir,
    )
    ranked = study.ranked()
    study.best = ranked[0] if ranked else None
    return study


def _trial(entry: Any) -> Trial | None:
    if not isinstance(entry, dict):
        return None
    number, state, run = entry.get("number"), entry.get("state"), entry.get("run")
    if not isinstance(number, int) or not isinstance(state, str) or not isinstance(run, str):
        return None
    params = entry.get("params")
    shown = {
        printable(str(key)): printable(str(value))
        for key, value in (params.items() if isinstance(params, dict) else [])
    }
    reason = entry.get("reason")
    return Trial(
        number=number,
        state=printable(state),
        value=files.finite_number(entry.get("value")),
        run=run,
        params=shown,
        reason=printable(reason) if isinstance(reason, str) else None,
    )


def format_studies(studies: list[Study]) -> str:
    """An aligned table, one study per line: how far it is, and its best trial."""
    rows = [["TASK", "STUDY", "DONE", "COMPLETE", "PRUNED", "FAILED", "RUNNING", "BEST"]]
    for study in studies:
        done = study.count("complete") + study.count("pruned")
        running = study.count("running")
        waiting = study.count("interrupted") + study.count("waiting")
        best, top = "-", study.best
        if top is not None and top.value is not None:
            best = f"{study.metric}={top.value:.4f} (trial {top.number}, {printable(top.run)})"
        rows.append(
            [
                study.task,
                study.name,
                f"{done}/{study.wanted}" if study.wanted is not None else str(done),
                str(study.count("complete")),
                str(study.count("pruned")),
                str(study.count("failed")),
                f"{running}" + (f" (+{waiting} to resume)" if waiting else ""),
                best,
            ]
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
