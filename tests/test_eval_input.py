"""``eval.py --all --match`` takes a pattern of run names: it never evaluates or writes runs elsewhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dlscaffold.create import create_project

from conftest import run_python

EVAL = "experiments/task1/eval.py"


@pytest.fixture
def projects(tmp_path: Path) -> tuple[Path, Path]:
    """A project, and another one with a finished run that must stay untouched."""
    ours = create_project({"project_name": "ours", "framework": "pytorch"}, tmp_path, use_git=False).root
    theirs = create_project({"project_name": "theirs", "framework": "pytorch"}, tmp_path, use_git=False).root
    run = theirs / "experiments" / "task1" / "results" / "seed-0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "finished.out").write_text(json.dumps({"state": "finished", "metrics": {}}))
    (run / "hparams.json").write_text("{}")
    return ours, theirs


@pytest.mark.parametrize(
    "pattern", ["", "/", "..", ".", "../../../theirs/experiments/task1/results/*", "*/..", "**", "/tmp/*"]
)
def test_a_pattern_that_is_not_one_run_name_is_refused(projects: tuple[Path, Path], pattern: str) -> None:
    ours, theirs = projects
    before = sorted(os.listdir(theirs / "experiments" / "task1" / "results" / "seed-0"))
    result = run_python([EVAL, "--all", "--match", pattern], cwd=ours)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "is not a pattern of run names" in result.stderr.splitlines()[-1]
    assert sorted(os.listdir(theirs / "experiments" / "task1" / "results" / "seed-0")) == before


def test_a_symlink_to_another_projects_run_is_not_evaluated(projects: tuple[Path, Path]) -> None:
    ours, theirs = projects
    (ours / "experiments" / "task1" / "results" / "linked").symlink_to(
        theirs / "experiments" / "task1" / "results" / "seed-0"
    )
    result = run_python([EVAL, "--all"], cwd=ours)
    assert result.returncode == 1 and "no finished run" in result.stderr, result.stdout + result.stderr
    assert not (theirs / "experiments" / "task1" / "results" / "seed-0" / "test_metrics.json").exists()


@pytest.mark.slow
def test_a_summary_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    root = create_project({"project_name": "summary", "framework": "pytorch"}, tmp_path, use_git=False).root
    train = ["experiments/task1/train.py", "--epochs", "1", "--hidden_size", "8", "--batch_size", "256"]
    trained = run_python([*train, "--run_name", "test_summary.csv"], cwd=root)  # a run in the summary's way
    assert trained.returncode == 0, trained.stdout + trained.stderr
    result = run_python([EVAL, "--all"], cwd=root)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("cannot write the summary: ")


PLANTED = """
import os, sys, torch
class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {sys.argv[2]}",))
torch.save({"state_dict": Payload()}, sys.argv[1])
"""


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["lightning", "pytorch"])
def test_a_shared_checkpoint_cannot_run_code_when_evaluated(tmp_path: Path, framework: str) -> None:
    root = create_project({"project_name": "shared", "framework": framework}, tmp_path, use_git=False).root
    run = root / "experiments" / "task1" / "results" / "handed"
    (run / "checkpoints").mkdir(parents=True)
    hparams = {"learning_rate": 0.001, "batch_size": 32, "epochs": 1, "hidden_size": 8, "depth": 1}
    (run / "hparams.json").write_text(json.dumps({**hparams, "dropout": 0.1, "weight_decay": 0.0, "seed": 0}))
    (run / "finished.out").write_text(json.dumps({"state": "finished", "metrics": {}}))
    marker = tmp_path / "code-ran"
    suffix = "ckpt" if framework == "lightning" else "pt"
    planted = run_python(["-c", PLANTED, str(run / "checkpoints" / f"best.{suffix}"), str(marker)], cwd=root)
    assert planted.returncode == 0, planted.stderr
    result = run_python([EVAL, "--run_dir", str(run)], cwd=root)
    assert result.returncode == 1 and "cannot evaluate best." in result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()
