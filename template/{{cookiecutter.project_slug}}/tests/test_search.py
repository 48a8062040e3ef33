"""A search's space is checked before anything runs, and a trial's epochs reach its pruner."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from protocol.errors import MetricMissing
from protocol.files import write_json
from protocol.grid import SweepError
from protocol.pruning import TRIAL_VARIABLE, Trial
from protocol.space import parse_space
from protocol.study import Settings, open_study, sampler, storage

REFUSED = [
    ({"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "low > 0"),
    ({"lr": {"type": "float", "low": 1.0, "high": 0.1}}, "below high"),
    ({"lr": {"type": "float", "low": 0.1, "high": 1.0, "log": True, "step": 0.1}}, "exclude"),
    ({"depth": {"type": "int", "low": 1, "high": 2.5}}, "whole numbers"),
    ({"depth": {"type": "int", "low": True, "high": 4}}, "expected a number"),
    ({"act": {"type": "categorical", "choices": []}}, "non-empty"),
    ({"act": {"type": "categorical", "choices": ["relu", "relu"]}}, "given twice"),
    ({"act": {"type": "categorical", "choices": [None]}}, "a string or a number"),
    ({"act": {"type": "choice", "choices": ["relu"]}}, '"type" must be'),
    ({"act": {"type": "categorical", "options": ["relu"]}}, "not options"),
    ({"--lr": {"type": "float", "low": 0.1, "high": 1.0}}, "not an option name"),
    ({}, "expected a JSON object"),
]


@pytest.mark.parametrize(("space", "message"), REFUSED)
def test_a_space_optuna_or_train_py_could_not_use_is_refused(space: dict, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        parse_space(space, "space.json")


def test_a_space_keeps_its_types() -> None:
    space = {
        "lr": {"type": "float", "low": 1e-4, "high": 1, "log": True},
        "width": {"type": "int", "low": 32, "high": 256, "step": 32},
        "act": {"type": "categorical", "choices": ["relu", 0.5, 3]},
    }
    lr, width, act = parse_space(space, "space.json")
    assert (lr.low, lr.high, lr.log) == (1e-4, 1.0, True) and isinstance(lr.high, float)
    assert (width.low, width.high, width.step) == (32, 256, 32)
    assert act.corners() == ["relu", 0.5, 3]


def settings(metric: str = "val_acc") -> Settings:
    space = {"lr": {"type": "categorical", "choices": [0.1, 1e-7]}}
    return Settings("task", space, "random", 0, "median", 1, metric, "maximize", {"epochs": 1})


def test_a_trial_behind_the_complete_ones_is_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two trials of one study: the first completes well, the second is far behind after epoch 1."""
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    write_json(study_dir / "settings.json", settings().to_json())
    study = open_study(study_dir, settings(), create=True)
    good = study.ask()
    good.report(0.9, 1)
    study.tell(good, 0.9)
    behind, ahead = study.ask(), study.ask()
    monkeypatch.setenv(TRIAL_VARIABLE, f"{study_dir}#{behind.number}")
    trial = Trial.from_environment()
    assert trial is not None and trial.should_prune(1, {"val_acc": 0.3, "val_loss": 1.2})
    monkeypatch.setenv(TRIAL_VARIABLE, f"{study_dir}#{ahead.number}")
    trial = Trial.from_environment()
    assert trial is not None and not trial.should_prune(1, {"val_acc": 0.95})
    assert not trial.should_prune(1, {"val_acc": 0.1})  # epoch 1 again (a resume): reported once
    reported = optuna.load_study(study_name="study", storage=storage(study_dir)).trials[ahead.number]
    assert reported.intermediate_values == {1: 0.95}
    write_json(study_dir / "settings.json", settings("val_f1").to_json())
    trial = Trial.from_environment()  # a trial reads the settings at its first report
    with pytest.raises(MetricMissing, match="val_f1"):
        assert trial is not None and trial.should_prune(2, {"val_acc": 0.95})


def test_outside_a_search_a_run_is_no_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRIAL_VARIABLE, raising=False)
    assert Trial.from_environment() is None
    monkeypatch.setenv(TRIAL_VARIABLE, "no number")
    assert Trial.from_environment() is None


def test_the_largest_seed_still_seeds_the_sampler_after_many_trials() -> None:
    """Seeded with the seed plus the trials so far, wrapped into NumPy's range."""
    for kind in ("tpe", "random"):
        chosen = dataclasses.replace(settings(), sampler=kind, seed=2**32 - 1)
        assert sampler(chosen, 7) is not None
