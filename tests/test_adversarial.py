"""What an adversarial pass over every command found, each kept fixed by a test of what a user sees."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dlscaffold.create import create_project

from conftest import run_cli, run_python

CLAIMS = """
import argparse, json, multiprocessing, sys, time
from pathlib import Path
sys.path.insert(0, ".")
from protocol.launch import claim
from protocol.rundir import Run

def attempt(start, results, queue):
    args = argparse.Namespace(force=True, resume_failed=False, retry_failed=False)
    run = Run(task="task1", name="r", dir=results / "r", args=args, hparams={"a": 1})
    while time.time() < start:
        pass
    queue.put(claim(run))
    time.sleep(1.0)  # a live owner while the others decide

if __name__ == "__main__":
    results = Path(sys.argv[1])
    queue, start = multiprocessing.Queue(), time.time() + 0.5
    workers = [multiprocessing.Process(target=attempt, args=(start, results, queue)) for _ in range(6)]
    for worker in workers:
        worker.start()
    decisions = [queue.get() for _ in workers]
    locks = sorted(str(path.relative_to(results)) for path in results.glob("*/run.lock"))
    for worker in workers:
        worker.join()
    print(json.dumps({"decisions": decisions, "locks": locks}))
"""


def test_concurrent_force_launches_start_one_run_and_archive_nothing_alive(tmp_path: Path) -> None:
    root = create_project({"project_name": "race", "framework": "pytorch"}, tmp_path, use_git=False).root
    results = tmp_path / "results"
    for trial in range(8):
        run = results / "r"
        run.mkdir(parents=True)
        (run / "hparams.json").write_text(json.dumps({"a": 1}))
        (run / "finished.out").write_text(json.dumps({"state": "finished", "metrics": {}}))
        done = run_python(["-c", CLAIMS, str(results)], cwd=root)
        assert done.returncode == 0, done.stderr
        outcome = json.loads(done.stdout.strip().splitlines()[-1])
        starts = [decision for decision in outcome["decisions"] if decision in ("start", "resume")]
        assert len(starts) == 1 and outcome["decisions"].count(3) == 5, (trial, outcome)
        assert outcome["locks"] == ["r/run.lock"], (trial, outcome)  # the winner's lock, in place
        archived = [path for path in results.iterdir() if path.name.startswith("r.")]
        assert len(archived) == 1 and (archived[0] / "finished.out").is_file()
        subprocess.run(["rm", "-rf", str(results)], check=True)


def test_report_summarises_huge_finite_values(new_project) -> None:
    root = new_project().root
    for seed in (0, 1):
        run = root / "experiments" / "task1" / "results" / f"lr-1_seed-{seed}"
        run.mkdir(parents=True)
        (run / "hparams.json").write_text(json.dumps({"seed": seed, "lr": 1}))
        metrics = {"val_acc": 1e308}
        (run / "finished.out").write_text(json.dumps({"state": "finished", "metrics": metrics}))
        (run / "progress.json").write_text(json.dumps({"metrics": metrics, "main_metric": "val_acc"}))
        (run / "history.jsonl").write_text(json.dumps({"epoch": 1, "metrics": metrics}) + "\n")
    result = run_cli("report", str(root))
    assert result.exit_code == 0, result.output
    markdown = (root / "reports" / "report.md").read_text()
    assert "| 2 | 1.000e+308 ± 0.0000 |" in markdown
    assert r"the val\_acc curves cannot be drawn" in markdown


@pytest.mark.parametrize("task", ["loader", "resume"])
def test_new_refuses_a_task_whose_files_are_the_templates_own(tmp_path: Path, task: str) -> None:
    result = run_cli("new", "w", "--task", task, "--no-input", "--no-git", "--output-dir", str(tmp_path))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"the task name {task!r} would make tests/test_{task}.py" in result.output
    assert list(tmp_path.iterdir()) == []


def test_runs_repeating_a_seed_count_once(new_project) -> None:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    values = {"seed-0": 0.5, "seed-0.20261203-101010": 0.1, "seed-0-reproduced-20261203": 0.5, "seed-1": 0.7}
    for name, value in values.items():
        run = results / name
        run.mkdir(parents=True)
        seed = 1 if name == "seed-1" else 0
        (run / "hparams.json").write_text(json.dumps({"seed": seed, "lr": 1}))
        flag = {"state": "finished", "metrics": {"val_acc": value}, "main_metric": "val_acc"}
        (run / "finished.out").write_text(json.dumps(flag))
    old = results / "seed-0.20261203-101010" / "finished.out"
    subprocess.run(["touch", "-d", "2020-01-01", str(old)], check=True)  # the archived attempt is older
    status = run_cli("status", str(root))
    assert "2      val_acc=0.6000 ± 0.1414" in status.output, status.output  # seeds 0 and 1, once each
    report = run_cli("report", str(root))
    assert report.exit_code == 0
    assert "| 2 | 0.6000 ± 0.1414 |" in (root / "reports" / "report.md").read_text()


FAKE_PYTHON = '#!/bin/sh\necho "$@" > {marker}\nexit 3\n'


def handed_run(root: Path, results: Path, name: str) -> Path:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout
    run = results / name
    run.mkdir(parents=True)
    (run / "finished.out").write_text(json.dumps({"state": "finished", "metrics": {}}))
    manifest = {"command": ["python", "experiments/task1/train.py"], "git": {"snapshot": head.strip()}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_reproduce_passes_names_starting_with_a_dash_and_follows_a_symlinked_results(
    tmp_path: Path,
) -> None:
    root = create_project({"project_name": "odd", "framework": "pytorch"}, tmp_path / "p").root
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    results = root / "experiments" / "task1" / "results"
    subprocess.run(["rm", "-rf", str(results)], check=True)
    results.symlink_to(scratch)  # runs kept on scratch storage
    marker = tmp_path / "args"
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(marker=marker))
    fake.chmod(0o755)
    run = handed_run(root, results, "-x")
    result = run_cli("reproduce", str(run), "--python", str(fake))
    assert "is not inside a dlscaffold project" not in result.output, result.output
    assert result.exit_code == 1 and "exit 3" in result.output  # the fake python ran: no other refusal
    assert "--run_name=-x-reproduced-" in marker.read_text()
    assert f"--results_dir={results}" in marker.read_text()


def test_reproduce_refuses_a_tolerance_that_is_not_a_number(tmp_path: Path) -> None:
    root = create_project({"project_name": "tol", "framework": "pytorch"}, tmp_path).root
    run = handed_run(root, root / "experiments" / "task1" / "results", "r")
    result = run_cli("reproduce", str(run), "--tolerance", "nan")
    assert result.exit_code == 2 and "nan is not a finite number" in result.output


def test_names_too_long_for_the_file_system_are_one_line(tmp_path: Path) -> None:
    root = create_project({"project_name": "long", "framework": "pytorch"}, tmp_path, use_git=False).root
    long = "a" * 300
    for command in (
        ["scripts/sweep.py", "task1", "--grid", "seed=0", "--", "--epochs", "1", "--results_dir", long],
        ["experiments/task1/eval.py", "--run_dir", long],
    ):
        result = run_python(command, cwd=root)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert "File name too long" in result.stdout + result.stderr
    named = run_python(["experiments/task1/train.py", "--run_name", "é" * 61], cwd=root)
    assert named.returncode == 2 and "a run name has at most 120 bytes (UTF-8)" in named.stderr


def test_tracker_ids_are_unique_and_what_wandb_accepts(tmp_path: Path) -> None:
    root = create_project({"project_name": "ids", "framework": "pytorch"}, tmp_path, use_git=False).root
    names = ["exp#1:a?b", "a" * 100 + "_seed-0", "a" * 100 + "_seed-1", "x/y'z;w,"]
    code = "import sys; sys.path.insert(0, '.'); from protocol.naming import tracker_id; "
    code += f"print('\\n'.join(tracker_id(name) for name in {names!r}))"
    ids = run_python(["-c", code], cwd=root).stdout.split()
    assert len(set(ids)) == len(names)
    assert all(len(run_id) <= 64 and not set(run_id) & set(":;,#?/'") for run_id in ids)
