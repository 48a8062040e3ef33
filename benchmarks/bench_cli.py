"""Start-up and generation speed of the dlscaffold command, against baselines timed in the same run.

    python benchmarks/bench_cli.py [--repeats 15]

Prints the median wall time of each command and the ratio to its baseline:
  * ``dlscaffold --help`` against ``python -c "import click"``: the CLI must not
    import anything heavy at start-up (goal: at most 1.1x);
  * ``dlscaffold new`` against ``cookiecutter <repo> --no-input`` on the same
    template (goal: at most 1.0x);
  * ``dlscaffold status`` on a project with 500 runs against ``dlscaffold --help``:
    what reading the runs adds to start-up;
  * ``dlscaffold report`` on 2,000 runs with 20-epoch histories (400 configurations
    of 5 seeds) against ``dlscaffold status`` on the same runs: what the tables,
    the histories and the plots cost on top of reading the runs;
  * ``dlscaffold update`` of a 5-task project made from the 0.1.0 template
    (``tests/data``) against ``dlscaffold new`` of the same project with
    ``--no-git``: what rendering twice, merging and journalling add to one render;
  * ``dlscaffold update --check`` against ``dlscaffold --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def dlscaffold_command() -> list[str]:
    """The console script pip installed beside this Python (not a version manager's shim on PATH,
    such as pyenv's, a shell script that adds its own start-up to every call)."""
    script = Path(sys.executable).parent / "dlscaffold"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dlscaffold"]


def cookiecutter_command() -> list[str]:
    found = shutil.which("cookiecutter")
    return [found] if found else [sys.executable, "-m", "cookiecutter"]


def project_with_runs(root: Path, count: int) -> Path:
    """A project record and ``count`` finished or interrupted run directories, as projects write them."""
    (root / ".dlscaffold.json").write_text(
        json.dumps({"answers": {"framework": "pytorch"}, "tasks": ["task1"]})
    )
    for index in range(count):
        run = root / "experiments" / "task1" / "results" / f"learning_rate-0.{index}_seed-{index % 5}"
        (run / "checkpoints").mkdir(parents=True)
        progress = {"epoch": 20, "step": 660, "metrics": {"val_acc": 0.9}, "main_metric": "val_acc"}
        (run / "progress.json").write_text(json.dumps(progress))
        flag = "finished.out" if index % 3 else "interrupted.out"
        (run / flag).write_text(json.dumps({"state": flag[:-4], **progress}))
    return root


def project_with_histories(root: Path, configs: int, seeds: int, epochs: int) -> Path:
    """``configs * seeds`` finished runs, each with a ``history.jsonl`` of ``epochs`` lines."""
    (root / ".dlscaffold.json").write_text(
        json.dumps({"answers": {"framework": "pytorch"}, "tasks": ["task1"]})
    )
    for config in range(configs):
        for seed in range(seeds):
            run = root / "experiments" / "task1" / "results" / f"learning_rate-{config}e-4_seed-{seed}"
            (run / "checkpoints").mkdir(parents=True)
            lines = []
            for epoch in range(1, epochs + 1):
                acc = 0.9 - 0.5 * math.exp(-epoch / (3 + config % 7)) + 0.01 * seed
                metrics = {
                    "train_loss": 1 - acc,
                    "val_loss": 1.1 - acc,
                    "train_acc": acc,
                    "val_acc": acc - 0.02,
                }
                entry = {
                    "epoch": epoch,
                    "step": epoch * 33,
                    "time": "2026-01-01T00:00:00+0000",
                    "metrics": metrics,
                }
                lines.append(json.dumps(entry) + "\n")
            (run / "history.jsonl").write_text("".join(lines))
            progress = {"epoch": epochs, "step": epochs * 33, "metrics": metrics, "main_metric": "val_acc"}
            (run / "progress.json").write_text(json.dumps(progress))
            finished = {**progress, "metrics": {**metrics, "best_val_acc": acc}, "duration_s": 12.5}
            (run / "finished.out").write_text(json.dumps({"state": "finished", **finished}))
    return root


def median_seconds(command: list[str], repeats: int, fresh_dir: bool = False, cwd: Path = REPO_ROOT) -> float:
    """Median wall time of ``command``; ``fresh_dir`` runs each repeat in a new empty directory."""
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as workdir:
            cwd = Path(workdir) if fresh_dir else cwd
            start = time.perf_counter()
            subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def old_project(root: Path, tasks: int) -> Path:
    """A git-committed project made from the 0.1.0 template with ``tasks`` tasks."""
    from dlscaffold.create import create_project
    from dlscaffold.tasks import add_task
    from dlscaffold.template import Template

    with tarfile.open(REPO_ROOT / "tests" / "data" / "template-0.1.0.tar.gz") as tar:
        tar.extractall(root / "template", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    project = create_project({"project_name": "bench"}, root, template=Template(root / "template")).root
    for index in range(2, tasks + 1):
        add_task(project, f"task{index}")
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", *identity, "commit", "-qm", "tasks"], cwd=project, check=True)
    return project


def write_bytecode() -> None:
    """Compile dlscaffold's modules once, as installing the wheel does.

    click's bytecode was written when pip installed it; an editable install in an
    environment with PYTHONDONTWRITEBYTECODE set would compile dlscaffold's
    sources at every start instead, and the benchmark would time the compiler.
    """
    import compileall

    compileall.compile_dir(REPO_ROOT / "src" / "dlscaffold", quiet=1)


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=False, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_update_seconds(project: Path, repeats: int) -> float:
    """Median wall time of ``dlscaffold update`` on fresh copies of ``project``."""
    times = []
    for index in range(repeats):
        copy = project.with_name(f"copy{index}")
        shutil.copytree(project, copy, symlinks=True)
        start = time.perf_counter()
        subprocess.run(dlscaffold_command() + ["update"], cwd=copy, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        shutil.rmtree(copy)
    return statistics.median(times)


def report(label: str, ours_s: float, baseline_s: float, goal: float | None) -> None:
    ratio = ours_s / baseline_s
    verdict = "" if goal is None else ("ok" if ratio <= goal else "SLOW")
    goal_text = "-" if goal is None else f"{goal:.1f}x"
    times = f"{ours_s * 1000:>9.1f}ms {baseline_s * 1000:>9.1f}ms"
    print(f"{label:<10} {times} {ratio:>6.2f}x {goal_text:>6} {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    repeats = parser.parse_args().repeats
    write_bytecode()

    pairs = [
        (
            "start-up",
            dlscaffold_command() + ["--help"],
            [sys.executable, "-c", "import click"],
            1.1,
            False,
        ),
        (
            "generate",
            dlscaffold_command() + ["new", "bench", "--no-input", "--no-git"],
            cookiecutter_command() + [str(REPO_ROOT), "--no-input", "project_name=bench"],
            1.0,
            True,
        ),
    ]
    print(f"{'measure':<10} {'dlscaffold':>11} {'baseline':>11} {'ratio':>7} {'goal':>6}")
    for label, ours, baseline, goal, fresh in pairs:
        ours_times, baseline_times = [], []
        for _ in range(repeats):  # alternately, so that a drifting machine slows both alike
            ours_times.append(median_seconds(ours, 1, fresh))
            baseline_times.append(median_seconds(baseline, 1, fresh))
        report(label, statistics.median(ours_times), statistics.median(baseline_times), goal)
    with tempfile.TemporaryDirectory() as workdir:
        project = project_with_runs(Path(workdir), 500)
        status_s = median_seconds(dlscaffold_command() + ["status", "--json"], repeats, cwd=project)
        help_s = median_seconds(dlscaffold_command() + ["--help"], repeats)
        report("status500", status_s, help_s, None)
    with tempfile.TemporaryDirectory() as workdir, tempfile.TemporaryDirectory() as out:
        project = project_with_histories(Path(workdir), configs=400, seeds=5, epochs=20)
        report_s = median_seconds(dlscaffold_command() + ["report", "--out", out], repeats, cwd=project)
        status_s = median_seconds(dlscaffold_command() + ["status", "--json"], repeats, cwd=project)
        report("report2000", report_s, status_s, None)
    with tempfile.TemporaryDirectory() as workdir:
        project = old_project(Path(workdir), tasks=5)
        update_s = median_update_seconds(project, repeats)
        new_s = median_seconds(
            dlscaffold_command() + ["new", "bench", "--no-input", "--no-git"], repeats, True
        )
        report("update", update_s, new_s, None)
        check = dlscaffold_command() + ["update", "--check"]
        status = subprocess.run(check, cwd=os.fspath(project), check=False).returncode
        assert status == 1, "the 0.1.0 project should have an update available"
        check_s = statistics.median(timed(check, project) for _ in range(repeats))
        report("check", check_s, median_seconds(dlscaffold_command() + ["--help"], repeats), None)
    print(f"(median of {repeats} runs each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
