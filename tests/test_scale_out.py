"""Scaling out a generated project: sweeps that skip what is done, and DDP on two CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FRAMEWORKS, run_python

pytestmark = pytest.mark.slow

FAST = ["--epochs", "2", "--batch_size", "128", "--hidden_size", "16"]


@pytest.fixture(scope="module", params=FRAMEWORKS)
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dlscaffold.create import create_project

    answers = {"project_name": "scale", "framework": request.param}
    return create_project(answers, tmp_path_factory.mktemp(request.param), use_git=False).root


def results(root: Path) -> Path:
    return root / "experiments" / "task1" / "results"


def test_sweep_runs_the_grid_then_skips_what_is_done(project: Path) -> None:
    grid = ["--grid", "learning_rate=0.01,1e30", "--grid", "seed=3"]
    first = run_python(["scripts/sweep.py", "task1", *grid, "--", *FAST], cwd=project)
    assert first.returncode == 1, first.stdout + first.stderr  # one run diverges on purpose
    good = results(project) / "batch_size-128_epochs-2_hidden_size-16_learning_rate-0.01_seed-3"
    bad = results(project) / "batch_size-128_epochs-2_hidden_size-16_learning_rate-1e+30_seed-3"
    assert (good / "finished.out").exists()
    assert (bad / "failed.out").exists()  # and the failure did not stop the good run
    summary = first.stdout[first.stdout.index("RUN") :]
    assert "finished" in summary and "val_acc=" in summary
    assert "failed" in summary and "RunDiverged" in summary

    finished_before = (good / "finished.out").read_bytes()
    log_before = (good / "stdout.log").read_bytes()
    second = run_python(["scripts/sweep.py", "task1", *grid, "--", *FAST], cwd=project)
    assert second.returncode == 1
    assert second.stdout.count("skip") == 2
    assert (good / "finished.out").read_bytes() == finished_before
    assert (good / "stdout.log").read_bytes() == log_before  # no training was launched

    retried = run_python(["scripts/sweep.py", "task1", *grid, "--retry_failed", "--", *FAST], cwd=project)
    assert "skip   " + good.name in retried.stdout
    assert "run    " + bad.name in retried.stdout
    archived = [path for path in results(project).iterdir() if path.name.startswith(bad.name + ".")]
    assert len(archived) == 1
    # each attempt's output stays with its own run directory
    assert (archived[0] / "stdout.log").read_text().count("training in") == 1
    assert (bad / "stdout.log").read_text().count("training in") == 1


def test_a_sweep_reports_runs_trained_with_another_default_as_conflicts(project: Path) -> None:
    grid = ["--grid", "seed=7", "--", "--epochs", "1", "--batch_size", "128", "--hidden_size", "8"]
    first = run_python(["scripts/sweep.py", "task1", *grid], cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    train = project / "experiments" / "task1" / "train.py"
    source = train.read_text()
    assert "default=0.01," in source
    train.write_text(source.replace("default=0.01,", "default=0.02,", 1))  # weight decay's default changes
    try:
        second = run_python(["scripts/sweep.py", "task1", *grid], cwd=project)
    finally:
        train.write_text(source)
    assert second.returncode == 1
    assert (
        "conflict batch_size-128_epochs-1_hidden_size-8_seed-7: weight_decay: 0.01 when trained, 0.02 now"
        in (second.stdout)
    )
    assert (
        "training in" not in second.stdout and "conflict  " in second.stdout
    )  # nothing ran; the summary says


def test_sweep_file_dry_run_and_parallel_workers(project: Path, tmp_path: Path) -> None:
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text(json.dumps({"grid": {"seed": [10, 11]}, "args": FAST}))
    dry = run_python(["scripts/sweep.py", "task1", "--sweep_file", str(sweep_file), "--dry-run"], cwd=project)
    assert dry.returncode == 0
    commands = [line for line in dry.stdout.splitlines() if "train.py" in line]
    assert len(commands) == 2 and all("--seed" in line for line in commands)
    assert not list(results(project).glob("*seed-1[01]*"))

    parallel = run_python(
        ["scripts/sweep.py", "task1", "--sweep_file", str(sweep_file), "--workers", "2"], cwd=project
    )
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    for seed in (10, 11):
        assert (
            results(project) / f"batch_size-128_epochs-2_hidden_size-16_seed-{seed}" / "finished.out"
        ).exists()


def distributed_command(framework: str, *args: str) -> list[str]:
    if framework == "pytorch":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "experiments/task1/train.py",
            *args,
        ]
    return [
        sys.executable,
        "experiments/task1/train.py",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        *args,
    ]


def test_two_process_data_parallel_training_interrupts_and_resumes(project: Path) -> None:
    framework = json.loads((project / ".dlscaffold.json").read_text())["answers"]["framework"]
    args = ["--epochs", "12", "--batch_size", "16", "--hidden_size", "16", "--run_name", "ddp"]
    run_dir = results(project) / "ddp"
    process = subprocess.Popen(
        distributed_command(framework, *args),
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        checkpoint = run_dir / "checkpoints" / ("last.ckpt" if framework == "lightning" else "last.pt")
        deadline = time.monotonic() + 300
        while not checkpoint.exists():
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # what a scheduler sends to the launcher
        output = process.communicate(timeout=300)[0]
    finally:
        if process.poll() is None:  # never leave a stuck process group behind
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0, output
    assert sorted(path.name for path in run_dir.glob("*.out")) == ["interrupted.out"], output
    interrupted = (run_dir / "interrupted.out").read_text()

    # each rank's share of the data follows from the world size: one process cannot continue it
    alone = run_python(["experiments/task1/train.py", *args, "--num_workers", "0"], cwd=project)
    assert alone.returncode == 4, alone.stdout + alone.stderr
    assert "was written by 2 processes and this launch has 1" in alone.stderr
    assert "Traceback" not in alone.stderr
    assert (run_dir / "interrupted.out").read_text() == interrupted  # left as it was found

    resumed = subprocess.run(
        distributed_command(framework, *args), cwd=project, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(path.name for path in run_dir.glob("*.out")) == ["finished.out"]
    history = [event["event"] for event in json.loads((run_dir / "manifest.json").read_text())["history"]]
    assert history == ["start", "interrupted", "resume", "refused", "resume", "finished"]
    assert json.loads((run_dir / "finished.out").read_text())["epoch"] == 12


def test_mixed_precision_trains(project: Path) -> None:
    trained = run_python(
        ["experiments/task1/train.py", *FAST, "--precision", "bf16-mixed", "--run_name", "bf16"], cwd=project
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    finished = json.loads((results(project) / "bf16" / "finished.out").read_text())
    assert finished["metrics"]["val_acc"] > 0.4
