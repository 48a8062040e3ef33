"""Run protocol, rarely edited: a search's trial, each epoch reported to the search's pruner.

``scripts/search.py`` starts a trial's train.py with ``DLSCAFFOLD_TRIAL`` set to
``<study dir>#<trial number>``. At each epoch's end, rank 0 reports the search's
metric to the study and asks its pruner whether the trial falls behind the
others; the training loop is never edited for it. Without the variable, as
for every run outside a search (and for ``dlscaffold reproduce``), nothing
happens and Optuna is never imported.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from protocol.errors import MetricMissing

TRIAL_VARIABLE = "DLSCAFFOLD_TRIAL"


class Trial:
    """The search's trial this run is, as its train.py sees it."""

    def __init__(self, study_dir: Path, number: int) -> None:
        self.study_dir = study_dir
        self.number = number
        self.trial: Any = None  # optuna.Trial, opened at the first report
        self.reported: set[int] = set()  # epochs the study holds a value for
        self.settings: Any = None

    @classmethod
    def from_environment(cls) -> Trial | None:
        study_dir, _, number = os.environ.get(TRIAL_VARIABLE, "").rpartition("#")
        if not study_dir or not number.isdecimal():
            return None
        return cls(Path(study_dir), int(number))

    def should_prune(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Report ``metrics`` of ``epoch`` (counting from 1); whether the pruner stops the trial."""
        from protocol import study

        if self.settings is None:  # read once: the search checked them when it started this trial
            self.settings = study.read_settings(self.study_dir)
        settings = self.settings
        if not isinstance(settings, dict):
            raise RuntimeError(f"{self.study_dir}/settings.json is missing or malformed")
        metric = settings.get("metric")
        if metric not in metrics:
            raise MetricMissing(
                f"the search optimises {metric!r}, which this run does not report: "
                f"its epochs report {', '.join(sorted(metrics))} (search.py --metric)"
            )
        if self.trial is None:
            opened = study.open_trial(self.study_dir, self.number, settings)
            if opened is None:
                return False  # told already (a trial trained again by hand): nothing to report to
            self.trial, self.reported = opened
        value = float(metrics[metric])
        if not math.isfinite(value):
            return False  # the protocol fails a run whose metrics go bad
        if epoch not in self.reported:  # a resumed trial reported its epochs before the stop
            self.trial.report(value, epoch)
            self.reported.add(epoch)
        return bool(self.trial.should_prune())
