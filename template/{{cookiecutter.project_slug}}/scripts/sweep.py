r"""Run a grid of experiments; relaunch it and only what still needs running runs.

    python scripts/sweep.py {{ cookiecutter.task_name }} \
        --grid learning_rate=0.01,0.001 --grid seed=0,1 -- --epochs 2
    python scripts/sweep.py {{ cookiecutter.task_name }} --sweep_file sweep.json --workers 2
    python scripts/sweep.py {{ cookiecutter.task_name }} --grid seed=0,1 --dry-run
    python scripts/sweep.py {{ cookiecutter.task_name }} --grid seed=0,1 \
        --slurm --time 4:00:00 --gpus_per_task 1 -- --epochs 50

Each point of the grid is one ``train.py`` command and one run directory.
Finished runs are skipped, interrupted ones resume, failed ones are reported
(``--retry_failed`` runs them again); one failing run does not stop the others.
The exit code is 0 when every run of the sweep has finished.
A sweep file is JSON: ``{"grid": {"seed": [0, 1]}, "args": ["--epochs", "2"]}``.

With ``--slurm`` the runs still to do become one SLURM job array, one task per
run; its script is kept in ``experiments/<task>/slurm/`` to inspect or resubmit. SLURM
warns each task with SIGUSR1 before its time limit; the training process then
checkpoints, writes interrupted.out and requeues its own task, which resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from protocol.files import load_experiment_script, read_json
from protocol.naming import run_name
from protocol.rundir import flag_state


@dataclass
class Point:
    """One run of the sweep: its train.py arguments and where it lands."""

    args: list[str]
    name: str
    run_dir: Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        usage="%(prog)s TASK [options] [-- train.py options for every run]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", help="the experiment to sweep: experiments/<task>/train.py")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="a hyperparameter and its values; repeat for a product grid",
    )
    parser.add_argument("--sweep_file", type=Path, help="JSON file with 'grid' and 'args'")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once (default: 1)")
    parser.add_argument("--retry_failed", action="store_true", help="run failed runs again")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    slurm = parser.add_argument_group("SLURM (with --slurm: submit a job array instead of running here)")
    slurm.add_argument("--slurm", action="store_true", help="submit the runs as a SLURM job array")
    slurm.add_argument("--partition", help="partition to submit to (default: the cluster's)")
    slurm.add_argument("--time", default="1:00:00", help="time limit of each run (default: %(default)s)")
    slurm.add_argument("--gpus_per_task", type=int, default=0, help="GPUs for each run")
    slurm.add_argument("--cpus_per_task", type=int, default=1, help="CPUs for each run")
    slurm.add_argument("--mem", help="memory for each run, e.g. 16G")
    slurm.add_argument(
        "--warning_seconds",
        type=int,
        default=120,
        help="send SIGUSR1 this long before the time limit, to checkpoint and requeue (default: 120)",
    )
    return parser


def parse_grid(specs: list[str], sweep_file: Path | None) -> tuple[dict[str, list[str]], list[str]]:
    grid: dict[str, list[str]] = {}
    extra: list[str] = []
    if sweep_file is not None:
        content = json.loads(sweep_file.read_text())
        for key, values in content.get("grid", {}).items():
            grid[key] = [str(value) for value in values]
        extra = [str(arg) for arg in content.get("args", [])]
    for spec in specs:
        name, separator, values = spec.partition("=")
        if not separator or not name or not values:
            raise SystemExit(f"--grid expects NAME=V1,V2,..., not {spec!r}")
        grid[name] = values.split(",")
    return grid, extra


def expand(task: str, grid: dict[str, list[str]], extra: list[str]) -> list[Point]:
    """Every combination of the grid, named exactly as train.py will name it."""
    try:
        train = load_experiment_script(task, "train")
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from error
    parser = train.build_parser()
    points = []
    for values in itertools.product(*grid.values()):
        args = [*extra]
        for name, value in zip(grid, values):
            args += [f"--{name}", value]
        parsed = parser.parse_args(args)
        name = run_name(parsed, parser, train.HPARAMS)
        points.append(Point(args=args, name=name, run_dir=parsed.results_dir / name))
    return points


def command(task: str, point: Point) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "experiments" / task / "train.py"), *point.args]


def run_point(task: str, point: Point, retry_failed: bool) -> int:
    """Train one point, its output going to ``<run>/stdout.log``."""
    args = [*command(task, point), *(["--retry_failed"] if retry_failed else [])]
    point.run_dir.mkdir(parents=True, exist_ok=True)
    with (point.run_dir / "stdout.log").open("a") as log:
        return subprocess.call(args, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)


def to_run(points: list[Point], retry_failed: bool) -> list[Point]:
    """The points that still need training, saying why the others are left alone."""
    pending = []
    for point in points:
        state = flag_state(point.run_dir)
        if state == "finished" or (state == "failed" and not retry_failed):
            print(f"skip   {point.name} ({state})")
        else:
            print(f"{'resume' if state == 'interrupted' else 'run':<6} {point.name}")
            pending.append(point)
    return pending


def array_script(args: argparse.Namespace, points: list[Point], log_dir: Path) -> str:
    """An sbatch script whose array task i runs point i, replacing the shell (exec) so that
    SLURM's warning signal reaches the training process itself."""
    options = [
        f"--job-name={args.task}-sweep",
        f"--array=0-{len(points) - 1}",
        f"--time={args.time}",
        f"--cpus-per-task={args.cpus_per_task}",
        f"--signal=B:USR1@{args.warning_seconds}",
        "--requeue",
        "--open-mode=append",
        f"--output={log_dir}/%A_%a.out",
    ]
    options += [f"--partition={args.partition}"] * bool(args.partition)
    options += [f"--gpus-per-task={args.gpus_per_task}"] * bool(args.gpus_per_task)
    options += [f"--mem={args.mem}"] * bool(args.mem)
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in options)]
    lines += [f"cd {shlex.quote(str(PROJECT_ROOT))}", 'case "$SLURM_ARRAY_TASK_ID" in']
    for index, point in enumerate(points):
        lines.append(f"  {index}) exec {shlex.join(command(args.task, point))} ;;")
    lines.append("esac")
    return "\n".join(lines) + "\n"


def submit_array(args: argparse.Namespace, points: list[Point]) -> int:
    if not points:
        print("nothing to submit: every run has finished (or failed: --retry_failed)")
        return 0
    if args.retry_failed:
        points = [Point([*point.args, "--retry_failed"], point.name, point.run_dir) for point in points]
    log_dir = PROJECT_ROOT / "experiments" / args.task / "slurm"
    log_dir.mkdir(parents=True, exist_ok=True)
    script = log_dir / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    script.write_text(array_script(args, points, log_dir))
    try:
        result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    except FileNotFoundError:
        print(f"sbatch not found: submit from a SLURM login node. Script kept: {script}", file=sys.stderr)
        return 1
    if result.returncode != 0:
        print(f"sbatch failed: {result.stderr.strip()}\nThe script is kept: {script}", file=sys.stderr)
        return 1
    job = result.stdout.strip().split(";")[0]
    print(f"submitted job array {job} ({len(points)} runs): {script}")
    print(f"follow it with `squeue -j {job}` and `dlscaffold status`; logs go to {log_dir}")
    return 0


def summary(points: list[Point]) -> str:
    rows = [("RUN", "STATE", "METRIC", "REASON")]
    for point in points:
        state = flag_state(point.run_dir) or "incomplete"
        flag = read_json(point.run_dir / f"{state}.out") or {}
        progress = read_json(point.run_dir / "progress.json") or {}
        metric_name = progress.get("main_metric")
        value = (flag.get("metrics") or progress.get("metrics") or {}).get(metric_name)
        metric = f"{metric_name}={value:.4f}" if isinstance(value, float) else "-"
        rows.append((point.name, state, metric, flag.get("reason") or ""))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)  # after "--": options for train.py
    args = build_parser().parse_args(argv[:split])
    train_args = argv[split + 1 :]
    grid, extra = parse_grid(args.grid, args.sweep_file)
    points = expand(args.task, grid, [*extra, *train_args])
    if args.dry_run:
        for point in points:
            print(" ".join(command(args.task, point)))
        return 0
    pending = to_run(points, args.retry_failed)
    if args.slurm:
        return submit_array(args, pending)
    pool = ThreadPoolExecutor(max_workers=max(1, args.workers))
    try:
        list(pool.map(lambda point: run_point(args.task, point, args.retry_failed), pending))
    except KeyboardInterrupt:  # the runs in progress got the Ctrl-C too: they checkpoint and stop
        pool.shutdown(wait=True, cancel_futures=True)  # and none of the waiting ones starts
        print(f"\ninterrupted; relaunch the same command to resume.\n\n{summary(points)}")
        return 130
    pool.shutdown()
    print()
    print(summary(points))
    unfinished = [point for point in points if flag_state(point.run_dir) != "finished"]
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
