"""Generate a project, train and evaluate it for real on the CPU, run its own tests."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import FRAMEWORKS, run_python

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_generated_project_trains_evaluates_and_passes_its_tests(cli, new_project, framework: str) -> None:
    root = new_project("e2e", framework=framework).root
    assert cli("add-task", "task2", "--project", str(root)).exit_code == 0

    # the seed's own command line, shortened to a few seconds
    train = run_python(
        [
            "experiments/task1/train.py",
            "--learning_rate",
            "0.01",
            "--batch_size",
            "64",
            "--epochs",
            "3",
            "--hidden_size",
            "32",
        ],
        cwd=root,
    )
    assert train.returncode == 0, train.stdout + train.stderr
    run_dir = (
        root
        / "experiments"
        / "task1"
        / "results"
        / "batch_size-64_epochs-3_hidden_size-32_learning_rate-0.01_seed-0"
    )
    assert sorted(path.name for path in run_dir.glob("*.out")) == ["finished.out"]
    finished = json.loads((run_dir / "finished.out").read_text())
    assert finished["metrics"]["val_acc"] > 0.5  # chance is 1/3
    assert finished["epoch"] == 3
    suffix = "ckpt" if framework == "lightning" else "pt"
    assert (run_dir / "checkpoints" / f"last.{suffix}").exists()
    assert (run_dir / "checkpoints" / f"best.{suffix}").exists()
    assert list((run_dir / "logs").glob("events.out.tfevents.*"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["hparams"]["hidden_size"] == 32
    assert [event["event"] for event in manifest["history"]] == ["start", "finished"]

    evaluate = run_python(["experiments/task1/eval.py", "--run_dir", str(run_dir)], cwd=root)
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
    assert "test_acc" in evaluate.stdout
    test_metrics = json.loads((run_dir / "test_metrics.json").read_text())["metrics"]
    assert test_metrics["test_acc"] > 0.5

    added = run_python(["experiments/task2/train.py", "--epochs", "1"], cwd=root)
    assert added.returncode == 0, added.stdout + added.stderr
    assert (root / "experiments" / "task2" / "results" / "epochs-1_seed-0" / "finished.out").exists()

    status = cli("status", str(root), "--json")
    states = {(run["task"], run["state"]) for run in json.loads(status.output)}
    assert states == {("task1", "finished"), ("task2", "finished")}

    lint = subprocess.run(["ruff", "check", "--no-cache", "."], cwd=root, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    own_tests = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root)
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr
    assert "passed" in own_tests.stdout and "failed" not in own_tests.stdout
