"""{{ cookiecutter.task_name }}: its data, a tiny real training run, and what the run leaves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainers.{{ cookiecutter.task_name }}_data import load_splits

TASK = "{{ cookiecutter.task_name }}"
CHECKPOINT = "last.{{ 'ckpt' if cookiecutter.framework == 'lightning' else 'pt' }}"
DEVICE_OPTION = "{{ '--accelerator' if cookiecutter.framework == 'lightning' else '--device' }}"
TINY_RUN = ["--epochs", "2", "--batch_size", "128", "--hidden_size", "32", "--learning_rate", "0.01"]


def test_splits_are_disjoint_and_the_same_every_time() -> None:
    first, second = load_splits(), load_splits()
    assert all(len(split) > 0 for split in first.values())
    assert first["test"].indices == second["test"].indices
    assert not set(first["train"].indices) & set(first["test"].indices)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, load_script) -> Path:
    results = tmp_path_factory.mktemp("results")
    train = load_script(TASK, "train")
    assert train.main([*TINY_RUN, "--results_dir", str(results), "--run_name", "tiny"]) == 0
    return results / "tiny"


def test_training_leaves_a_finished_run(finished_run: Path) -> None:
    flags = sorted(path.name for path in finished_run.glob("*.out"))
    assert flags == ["finished.out"]
    finished = json.loads((finished_run / "finished.out").read_text())
    assert finished["metrics"]["val_acc"] > 0.4  # three balanced classes: chance is 1/3
    assert (finished_run / "checkpoints" / CHECKPOINT).stat().st_size > 0
    assert any((finished_run / "logs").iterdir())
    assert json.loads((finished_run / "hparams.json").read_text())["hidden_size"] == 32
    assert not (finished_run / "run.lock").exists()


def test_relaunch_skips_a_finished_run(finished_run: Path, load_script) -> None:
    before = (finished_run / "finished.out").read_bytes()
    train = load_script(TASK, "train")
    args = [*TINY_RUN, "--results_dir", str(finished_run.parent), "--run_name", "tiny"]
    assert train.main(args) == 0
    assert (finished_run / "finished.out").read_bytes() == before


def test_eval_reports_test_metrics(finished_run: Path, load_script) -> None:
    evaluate = load_script(TASK, "eval")
    assert evaluate.main(["--run_dir", str(finished_run), DEVICE_OPTION, "cpu"]) == 0
    saved = json.loads((finished_run / "test_metrics.json").read_text())
    assert 0.0 <= saved["metrics"]["test_acc"] <= 1.0
