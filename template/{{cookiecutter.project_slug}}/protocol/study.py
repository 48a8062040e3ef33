"""Run protocol, rarely edited: a hyperparameter search's study, kept in the project.

``scripts/search.py`` keeps each study in ``experiments/<task>/searches/<study>/``::

    settings.json   what defines the search: space, sampler, seed, pruner, metric and
                    direction, train.py's fixed options. A relaunch must match them
    journal.log     Optuna's journal storage: each trial's parameters, epoch reports and
                    state. Many processes, on the nodes of one shared file system, add to
                    it at once; no database server
    trials.json     the trials in brief, for ``dlscaffold status`` and ``report``
    claims/<n>      locked (flock) while trial n trains: by the search process and by its
                    train.py, so the kernel frees it only once both are gone
    .claim.lock     held while one process decides what to train next (``lock.claiming``)

Every trial is an ordinary run, ``results/<study>-trial<n>/``: a relaunch finds
it finished, interrupted or failed like any run. Optuna is imported by
``scripts/search.py`` and by the train.py of a trial; never by the rest.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import TrialState

from protocol.files import now, read_json, write_json
from protocol.space import Dimension

DIRECTIONS = ("maximize", "minimize")
STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


@dataclass(frozen=True)
class Settings:
    """What defines a search: a relaunch with any of these changed is another search."""

    task: str
    space: dict[str, Any]
    sampler: str
    seed: int | None
    pruner: str
    startup_trials: int
    metric: str
    direction: str
    fixed: dict[str, Any]  # the hyperparameters the space leaves alone, and where runs go

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, recorded: dict[str, Any]) -> Settings:
        return cls(**{field.name: recorded.get(field.name) for field in fields(cls)})


def differences(recorded: Any, settings: Settings) -> list[str]:
    """How ``settings`` differ from those the study was started with, one line each."""
    if not isinstance(recorded, dict):
        return ["settings.json is missing or malformed"]
    current = settings.to_json()
    lines = []
    for key in current:
        if recorded.get(key) != current[key]:
            lines.append(f"{key}: {_shown(recorded.get(key))} when started, {_shown(current[key])} now")
    return lines


def _shown(value: Any) -> str:
    text = str(value) if isinstance(value, (str, int)) else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def open_study(study_dir: Path, settings: Settings, create: bool = False) -> optuna.Study:
    """The study (``create``: created if new). The sampler is seeded with the seed plus the number
    of trials so far: a relaunch samples new points, not the first launch's again."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if create:  # create_study writes to the journal even when the study exists: once a launch
        optuna.create_study(
            study_name=study_dir.name,
            storage=storage(study_dir),
            direction=settings.direction,
            load_if_exists=True,
        )
    journal = storage(study_dir)
    study = optuna.load_study(study_name=study_dir.name, storage=journal, pruner=pruner(settings))
    study.sampler = sampler(settings, len(study.get_trials(deepcopy=False)))
    return study


def repair_journal(study_dir: Path) -> None:
    """Cut off a last line a full disk left half-written: the next append would glue onto it and
    leave a line no reader can parse, for good. Under the journal's own lock."""
    journal = study_dir / "journal.log"
    if not journal.is_file():
        return
    lock = JournalFileSymlinkLock(str(journal))
    lock.acquire()
    try:
        with journal.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - (1 << 20)))
            tail = handle.read()
            if not tail or tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            handle.truncate(size - len(tail) + cut + 1 if cut >= 0 else size - len(tail))
            os.fsync(handle.fileno())
    finally:
        lock.release()


_STORAGES: dict[Path, JournalStorage] = {}


def storage(study_dir: Path) -> JournalStorage:
    """One storage per study and process: it reads only what the journal gained since its last read."""
    if study_dir not in _STORAGES:
        _STORAGES[study_dir] = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    return _STORAGES[study_dir]


def open_trial(
    study_dir: Path, number: int, recorded: dict[str, Any]
) -> tuple[optuna.Trial, set[int]] | None:
    """Trial ``number`` as its train.py reports to it, and the epochs it reported; ``None`` once told."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = Settings.from_json(recorded)
    study = optuna.load_study(study_name=study_dir.name, storage=storage(study_dir), pruner=pruner(settings))
    frozen = storage(study_dir).get_trial(trial_id(study_dir, number))
    if frozen.state != TrialState.RUNNING:
        return None
    return trial_object(study_dir, study, number), set(frozen.intermediate_values)


def trial_id(study_dir: Path, number: int) -> int:
    journal = storage(study_dir)
    study_id = journal.get_study_id_from_name(study_dir.name)
    return journal.get_trial_id_from_study_id_trial_number(study_id, number)


def trial_object(study_dir: Path, study: optuna.Study, number: int) -> optuna.Trial:
    """Trial ``number`` to suggest or report to, as ``study.ask()`` gives a new one."""
    return optuna.Trial(study, trial_id(study_dir, number))


def fail(study_dir: Path, study: optuna.Study, number: int, reason: str) -> None:
    """Mark trial ``number`` failed, saying why (``trials.json`` shows it)."""
    storage(study_dir).set_trial_user_attr(trial_id(study_dir, number), "reason", reason[:500])
    study.tell(number, state=TrialState.FAIL)


def sampler(settings: Settings, offset: int) -> optuna.samplers.BaseSampler:
    seed = None if settings.seed is None else (settings.seed + offset) % 2**32  # numpy's range
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials still running count as bad ones, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials, constant_liar=True)


def pruner(settings: Settings) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        # a trial whose best epoch so far is worse than the median of the complete trials' at
        # the same epoch stops; the first startup_trials are never pruned
        return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, space: list[Dimension]) -> dict[str, Any]:
    """The trial's point; a parameter sampled before (a search killed mid-way) keeps its value."""
    params: dict[str, Any] = {}
    for dim in space:
        if dim.kind == "categorical":
            params[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices))
        elif dim.kind == "int":
            assert isinstance(dim.low, int) and isinstance(dim.high, int)
            step = int(dim.step) if dim.step is not None else 1
            params[dim.name] = trial.suggest_int(dim.name, dim.low, dim.high, step=step, log=dim.log)
        else:
            assert dim.low is not None and dim.high is not None
            params[dim.name] = trial.suggest_float(
                dim.name, float(dim.low), float(dim.high), step=dim.step, log=dim.log
            )
    return params


def run_name(study_dir: Path, trial: optuna.trial.FrozenTrial) -> str:
    """The run directory's name: a retried trial may continue another trial's run."""
    name = trial.user_attrs.get("run")
    return name if isinstance(name, str) else f"{study_dir.name}-trial{trial.number:03d}"


def trial_value(run_dir: Path, metric: str, direction: str) -> float | None:
    """The best of the run's epochs for ``metric`` (its best checkpoint's, for the main metric)."""
    values = []
    try:
        lines = (run_dir / "history.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        entry = _json_line(line)
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        value = metrics.get(metric) if isinstance(metrics, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:  # a line a kill cut short
        return None


def write_summary(study_dir: Path, study: optuna.Study, settings: Settings, wanted: int) -> None:
    """``trials.json``: each trial's state, value, parameters and run, and the best so far."""
    trials = study.get_trials(deepcopy=False)
    rows = [
        {
            "number": trial.number,
            "state": STATES.get(trial.state, str(trial.state)),
            "value": trial.value if trial.state == TrialState.COMPLETE else None,
            "params": trial.params,
            "run": run_name(study_dir, trial),
            "reason": trial.user_attrs.get("reason"),
        }
        for trial in trials
    ]
    complete = [row for row in rows if row["state"] == "complete" and row["value"] is not None]
    pick = max if settings.direction == "maximize" else min
    best = pick(complete, key=lambda row: row["value"])["number"] if complete else None
    summary = {
        "study": study_dir.name,
        "task": settings.task,
        "metric": settings.metric,
        "direction": settings.direction,
        "trials_wanted": wanted,
        "best": best,
        "updated": now(),
        "trials": rows,
    }
    write_json(study_dir / "trials.json", summary)


def read_settings(study_dir: Path) -> Any:
    return read_json(study_dir / "settings.json")


def claim(study_dir: Path, number: int) -> int | None:
    """Lock trial ``number`` for this process; the descriptor, or ``None`` if another holds it.

    Passed on to the trial's train.py, the descriptor keeps the trial claimed for
    as long as either process lives: a search killed mid-trial leaves its train.py
    the owner until it ends.
    """
    claims = study_dir / "claims"
    claims.mkdir(exist_ok=True)
    fd = os.open(claims / f"{number}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def prune(study: optuna.Study, number: int) -> None:
    """Mark trial ``number`` pruned: its run ended with ``pruned.out``."""
    study.tell(number, state=TrialState.PRUNED)
