r"""Run a grid of experiments; relaunch it and only what still needs running runs.

    python scripts/sweep.py {{ cookiecutter.task_name }} \
        --grid learning_rate=0.01,0.001 --grid seed=0,1 -- --epochs 2
    python scripts/sweep.py {{ cookiecutter.task_name }} --sweep_file sweep.json --workers 2
    python scripts/sweep.py {{ cookiecutter.task_name }} --grid seed=0,1 --dry-run
    python scripts/sweep.py {{ cookiecutter.task_name }} --grid seed=0,1 \
        --slurm --time 4:00:00 --gpus_per_task 1 -- --epochs 50
    python scripts/sweep.py {{ cookiecutter.task_name }} \
        --slurm --nodes 2 --gpus_per_node 4 --time 2-00:00:00 -- --epochs 50

Each point of the grid is one ``train.py`` command and one run directory.
Finished runs are skipped, interrupted ones resume, failed ones are reported
(``--resume_failed`` continues them from their checkpoints, ``--retry_failed``
starts them over); one failing run does not stop the others. A run directory
holding a run trained with other hyperparameters (a default changed in
train.py) is a conflict: reported, never skipped or resumed.
The exit code is 0 when every run of the sweep has finished.

A sweep file is JSON: ``{"grid": {"seed": [0, 1]}, "args": ["--epochs", "2"]}``.
Grid values are strings or finite numbers (not true/false: write the text
train.py expects), each one value as written (``"01"`` stays ``01``); a
``--grid`` on the command line replaces the file's values for that name.
Every point is checked by train.py's own options before anything runs: a typo
anywhere in the grid stops the sweep with exit code 2, not mid-way.

With ``--slurm`` the runs still to do become one SLURM job array, one task per
run; its script is kept in ``experiments/<task>/slurm/`` to inspect or resubmit.
Without a grid the one run is submitted alone. Each run is one ``srun`` of
train.py: one process, or with ``--nodes``/``--tasks_per_node``/``--gpus_per_node``
one process per GPU (per task on CPUs) on every node, ranked by SLURM. SLURM warns
every process with SIGUSR1 before the time limit; the ranks agree on a step,
rank 0 checkpoints, writes interrupted.out and requeues the job, which resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import math
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from protocol.files import load_experiment_script, one_line, read_json
from protocol.grid import SweepError, build_grid, check_text
from protocol.lock import claiming, live_owner
from protocol.naming import hyperparameter_defaults, run_name
from protocol.options import non_negative_int, positive_int
from protocol.rundir import archive, config_differences, flag_state

MAX_POINTS = 10_000  # more runs than a sweep launches on purpose: a grid that big is a typo
MAX_WARNING_SECONDS = 65_535  # the most SLURM's --signal accepts

# Patterns are matched whole (fullmatch), with [0-9] rather than \d, which also matches other
# scripts' digits. What they accept can never end an #SBATCH line or start a command.
TASK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")  # one directory under experiments/
SLURM_TIME = re.compile(r"([0-9]+-)?[0-9]+(:[0-9]+){0,2}")  # M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
PARTITION = re.compile(r"[A-Za-z0-9_.,-]+")
MEMORY = re.compile(r"[0-9]+[KMGT]?")


@dataclass
class Point:
    """One run of the sweep: its train.py arguments and where it lands."""

    args: list[str]
    name: str
    run_dir: Path
    hparams: dict[str, Any]  # what hparams.json of the run must hold


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
        help="a hyperparameter and its distinct values; repeat for a product grid; "
        "replaces that name's values in --sweep_file",
    )
    parser.add_argument("--sweep_file", type=Path, help="JSON file with 'grid' and 'args'")
    parser.add_argument("--workers", type=positive_int, default=1, help="runs trained at once (default: 1)")
    failed = parser.add_mutually_exclusive_group()
    failed.add_argument("--retry_failed", action="store_true", help="train failed runs again, from scratch")
    failed.add_argument(
        "--resume_failed", action="store_true", help="continue failed runs from their last checkpoints"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    slurm = parser.add_argument_group("SLURM (with --slurm: submit a job array instead of running here)")
    slurm.add_argument("--slurm", action="store_true", help="submit the runs as a SLURM job array")
    slurm.add_argument("--partition", type=partition, help="partition to submit to (default: the cluster's)")
    slurm.add_argument(
        "--time", type=slurm_time, default="1:00:00", help="time limit of each run (default: %(default)s)"
    )
    slurm.add_argument("--nodes", type=positive_int, default=1, help="machines each run spans (default: 1)")
    gpus = slurm.add_mutually_exclusive_group()
    gpus.add_argument(
        "--gpus_per_node",
        type=non_negative_int,
        default=0,
        help="GPUs each run uses on every node, one process each (DDP)",
    )
    gpus.add_argument(
        "--gpus_per_task", type=non_negative_int, default=0, help="GPUs for a run of one process"
    )
    slurm.add_argument(
        "--tasks_per_node",
        type=positive_int,
        help="processes per node (default: --gpus_per_node, or 1); on CPUs, the DDP ranks per node",
    )
    slurm.add_argument("--cpus_per_task", type=positive_int, default=1, help="CPUs for each process")
    slurm.add_argument("--mem", type=memory, help="memory on each node, e.g. 16G")
    slurm.add_argument(
        "--warning_seconds",
        type=warning_seconds,
        default=120,
        help="send SIGUSR1 this long before the time limit, to checkpoint and requeue (default: 120)",
    )
    return parser


def slurm_time(text: str) -> str:
    if not SLURM_TIME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SLURM time: use e.g. 30, 4:00:00 or 2-12:00:00")
    return text


def partition(text: str) -> str:
    if not PARTITION.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a partition name: letters, digits, '_.,-'")
    return text


def memory(text: str) -> str:
    if not MEMORY.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SLURM memory size: use e.g. 16G or 4000M")
    return text


def warning_seconds(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_WARNING_SECONDS:
        raise argparse.ArgumentTypeError(f"SLURM signals at most {MAX_WARNING_SECONDS} s ahead, not {value}")
    return value


def expand(task: str, grid: dict[str, list[str]], extra: list[str], args: argparse.Namespace) -> list[Point]:
    """Every combination of the grid, checked by train.py's own options and named as train.py will.

    All points are checked here, before any run starts or any file is written: a typo in the
    last value of a grid must not surface after the first runs have trained.
    """
    if not TASK.fullmatch(task):
        raise SweepError(f"no task {task!r}: a task is a directory name under experiments/")
    count = math.prod(len(values) for values in grid.values())
    if count > MAX_POINTS:
        raise SweepError(f"the grid has {count} points; a sweep runs at most {MAX_POINTS}")
    try:
        train = load_experiment_script(task, "train")
    except FileNotFoundError as error:
        raise SweepError(str(error)) from None
    parser = train.build_parser()
    extra = [*extra, *layout_args(args, parser)]
    defaults = hyperparameter_defaults(train.hyperparameters())
    points = []
    labels: dict[Path, str] = {}  # run directory -> the point that trains it
    for values in itertools.product(*grid.values()):
        point_args = [arg for name, value in zip(grid, values) for arg in (f"--{name}", value)]
        label = f"point {shlex.join(point_args)}" if point_args else "the sweep"
        parsed = parse_point(parser, [*extra, *point_args], label)
        for name in grid:
            if name not in vars(parsed):  # argparse took an abbreviation: say it in full
                raise SweepError(f"--grid {name}: train.py has no option --{name} (write its full name)")
        name = run_name(parsed, defaults)
        # train.py runs from the project root, so a relative --results_dir is relative to it
        run_dir = PROJECT_ROOT / parsed.results_dir / name
        if run_dir in labels:
            raise SweepError(
                f"{labels[run_dir]} and {label} are the same run, {name}: only train.py's "
                "hyperparameters() name a run (and --run_name has no place in a sweep)"
            )
        labels[run_dir] = label
        hparams = {key: getattr(parsed, key) for key in defaults}
        points.append(Point(args=[*extra, *point_args], name=name, run_dir=run_dir, hparams=hparams))
    return points


def parse_point(parser: argparse.ArgumentParser, args: list[str], label: str) -> argparse.Namespace:
    """train.py's parsing of one point, its complaint (usage, then "error: ...") turned into one line."""
    complaint = io.StringIO()
    try:
        with contextlib.redirect_stderr(complaint), contextlib.redirect_stdout(complaint):
            return parser.parse_args(args)
    except SystemExit as stop:
        if not stop.code:  # train.py printed its help and would exit 0: not a run
            raise SweepError(f"{label}: --help has no place in a sweep (see train.py --help)") from None
        text = complaint.getvalue().strip()
        message = text.partition(": error: ")[2] or text
        raise SweepError(f"{label}: train.py refuses it: {message}") from None


def check_sbatch_path(path: Path) -> None:
    """sbatch reads #SBATCH lines with rules of its own (spaces split them, quotes and '\\' escape,
    '%' is a file-name pattern): a path holding one of those, or a control character, is refused."""
    text = str(path)
    if any(char.isspace() or not char.isprintable() or char in "\"'\\#%" for char in text):
        raise SweepError(
            f"--slurm: {text!r} holds a space, quote, '\\', '#', '%' or control character, "
            "which an #SBATCH line cannot carry; move the project"
        )


def slurm_dir(task: str) -> Path:
    return PROJECT_ROOT / "experiments" / task / "slurm"


def command(task: str, point: Point) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "experiments" / task / "train.py"), *point.args]


def failed_option(args: argparse.Namespace) -> list[str]:
    """What the sweep tells train.py to do with a failed run."""
    return ["--retry_failed"] * args.retry_failed + ["--resume_failed"] * args.resume_failed


def run_point(task: str, point: Point, failed: list[str]) -> int:
    """Train one point, its output going to ``<run>/stdout.log``.

    A failed run to retry is moved aside here, as train.py would do, but before
    the log is opened: the new attempt's output then goes to the new directory.
    """
    args = [*command(task, point), *failed]
    retry_failed = "--retry_failed" in failed
    try:
        if retry_failed:
            with claiming(point.run_dir.parent):  # as train.py does: never while another launch decides
                if run_state(point.run_dir) == "failed" and not live_owner(point.run_dir):
                    print(f"[{point.name}] the failed attempt is kept as {archive(point.run_dir).name}")
        point.run_dir.mkdir(parents=True, exist_ok=True)
        with (point.run_dir / "stdout.log").open("a") as log:
            return subprocess.call(args, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    except OSError as error:  # the run directory is a file, or not writable: the other runs go on
        print(f"could not launch {point.name}: {one_line(str(error))}", file=sys.stderr)
        return 1


def run_state(run_dir: Path) -> str | None:
    """The run's flag; a directory we may not look into counts as not started (launching it says why)."""
    try:
        return flag_state(run_dir)
    except OSError:
        return None


def to_run(points: list[Point], failed: list[str]) -> list[Point]:
    """The points that still need training, saying why the others are left alone."""
    pending = []
    for point in points:
        state = run_state(point.run_dir)
        differences = config_differences(point.run_dir, point.hparams)
        if differences:
            print(f"conflict {point.name}: {'; '.join(differences)}")
            print("         (train.py --force retrains it, keeping the old run renamed)")
        elif state in ("finished", "pruned") or (state == "failed" and not failed):
            print(f"skip   {point.name} ({state})")
        else:
            print(f"{'resume' if state == 'interrupted' else 'run':<6} {point.name}")
            pending.append(point)
    return pending


def tasks_per_node(args: argparse.Namespace) -> int:
    return args.tasks_per_node or args.gpus_per_node or 1


LAYOUT_OPTIONS = ("--devices", "--num_nodes")  # Lightning's: set from --tasks_per_node and --nodes


def layout_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """What a Lightning train.py needs to know of the job's layout: one process per device,
    ``--devices`` on each of ``--num_nodes`` nodes (SLURM starts them all). Plain PyTorch's
    train.py reads its rank from SLURM and needs nothing."""
    if not args.slurm or parser.get_default("num_nodes") is None:
        return []
    return ["--devices", str(tasks_per_node(args)), "--num_nodes", str(args.nodes)]


def check_layout(args: argparse.Namespace, train_args: list[str], grid: dict[str, list[str]]) -> None:
    if not args.slurm and (args.nodes > 1 or args.tasks_per_node or args.gpus_per_node):
        raise SweepError("--nodes, --tasks_per_node and --gpus_per_node describe SLURM jobs: add --slurm")
    if not args.slurm:
        return
    if args.gpus_per_node and args.tasks_per_node not in (None, args.gpus_per_node):
        raise SweepError("--tasks_per_node must equal --gpus_per_node: one process per GPU")
    if args.gpus_per_task and args.nodes * tasks_per_node(args) > 1:
        # SLURM would bind one GPU to each process, and a rank would look for its GPU by LOCAL_RANK
        raise SweepError("--gpus_per_task is for a run of one process: use --gpus_per_node")
    given = [arg.partition("=")[0] for arg in train_args] + [f"--{name}" for name in grid]
    clash = sorted(set(given) & set(LAYOUT_OPTIONS))
    if clash:
        raise SweepError(
            f"with --slurm, {' and '.join(clash)} follow from --tasks_per_node and --nodes: leave them out"
        )


def sbatch_header(
    args: argparse.Namespace, name: str, tasks: int, layout: list[str], log_dir: Path
) -> list[str]:
    """The start of an array script of ``tasks`` tasks: its #SBATCH lines, then ``cd`` to the project.

    ``args`` holds the SLURM options both scripts take (--time, --cpus_per_task, --warning_seconds,
    --partition, --gpus_per_task, --mem); ``layout``, the processes and nodes of each task.
    """
    options = [f"--job-name={name}", f"--array=0-{tasks - 1}", f"--time={args.time}", *layout]
    options += [
        f"--cpus-per-task={args.cpus_per_task}",
        f"--signal=USR1@{args.warning_seconds}",
        "--requeue",
        "--open-mode=append",
        f"--output={log_dir}/%A_%a.out",
    ]
    options += [f"--partition={args.partition}"] * bool(args.partition)
    options += [f"--gpus-per-task={args.gpus_per_task}"] * bool(args.gpus_per_task)
    options += [f"--mem={args.mem}"] * bool(args.mem)
    return [
        "#!/bin/bash",
        *(f"#SBATCH {option}" for option in options),
        f"cd {shlex.quote(str(PROJECT_ROOT))}",
    ]


def array_script(args: argparse.Namespace, points: list[Point], log_dir: Path) -> str:
    """An sbatch script whose array task i runs point i: one ``srun`` of train.py, one process
    per task on every node. SLURM's warning signal goes to those processes (not to the
    script), and ``exec`` leaves no shell to outlive them.

    Every value on an #SBATCH line was checked by a pattern (build_parser, check_sbatch_path);
    every argument of a command is shell-quoted, so a value is one literal argument.
    """
    layout = [f"--nodes={args.nodes}", f"--ntasks-per-node={tasks_per_node(args)}"]
    layout += [f"--gpus-per-node={args.gpus_per_node}"] * bool(args.gpus_per_node)
    lines = sbatch_header(args, f"{args.task}-sweep", len(points), layout, log_dir)
    lines.append('case "$SLURM_ARRAY_TASK_ID" in')
    for index, point in enumerate(points):
        # srun no longer takes --cpus-per-task from the job (SLURM 22.05): say it again
        srun = ["srun", f"--cpus-per-task={args.cpus_per_task}", *command(args.task, point)]
        lines.append(f"  {index}) exec {shlex.join(srun)} ;;")
    lines.append("esac")
    return "\n".join(lines) + "\n"


def submit_array(args: argparse.Namespace, points: list[Point]) -> int:
    if not points:
        print("nothing to submit: every run has finished, failed or conflicts")
        return 0
    failed = failed_option(args)
    points = [Point([*point.args, *failed], point.name, point.run_dir, point.hparams) for point in points]
    log_dir = slurm_dir(args.task)
    script = log_dir / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    job = sbatch(script, array_script(args, points, log_dir))
    if job is None:
        return 1
    print(f"submitted job array {job} ({len(points)} runs): {script}")
    print(f"follow it with `squeue -j {job}` and `dlscaffold status`; logs go to {log_dir}")
    return 0


def sbatch(script: Path, text: str) -> str | None:
    """Write ``script`` and submit it: the job's id, or ``None`` once the problem is said."""
    try:
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
    except OSError as error:
        print(f"cannot write the sbatch script: {one_line(str(error))}", file=sys.stderr)
        return None
    try:
        result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    except FileNotFoundError:
        print(f"sbatch not found: submit from a SLURM login node. Script kept: {script}", file=sys.stderr)
        return None
    if result.returncode != 0:
        print(f"sbatch failed: {result.stderr.strip()}\nThe script is kept: {script}", file=sys.stderr)
        return None
    return result.stdout.strip().split(";")[0]


def summary(points: list[Point]) -> str:
    """A table of the runs. Flag and progress files may have been edited by hand or by another
    version of the code: what is not of the expected type shows as "-" or blank."""
    rows = [("RUN", "STATE", "METRIC", "REASON")]
    for point in points:
        state = run_state(point.run_dir) or "incomplete"
        flag = as_dict(read_json(point.run_dir / f"{state}.out"))
        progress = as_dict(read_json(point.run_dir / "progress.json"))
        reason = flag.get("reason")
        reason = one_line(reason) if isinstance(reason, str) else ""
        if config_differences(point.run_dir, point.hparams):
            state, reason = "conflict", "trained with other hyperparameters"
        rows.append((point.name, state, metric_text(flag, progress), reason))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def as_dict(content: Any) -> dict[str, Any]:
    return content if isinstance(content, dict) else {}


def metric_text(flag: dict[str, Any], progress: dict[str, Any]) -> str:
    """``val_acc=0.9123`` from the flag or else the progress file, or "-"."""
    name = progress.get("main_metric")
    metrics = flag.get("metrics") or progress.get("metrics")
    if not (isinstance(name, str) and isinstance(metrics, dict)):
        return "-"
    value = metrics.get(name)
    # floats only: a string, or an int too large for a float, has no :.4f
    return one_line(f"{name}={value:.4f}") if isinstance(value, float) else "-"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)  # after "--": options for train.py
    parser = build_parser()
    args = parser.parse_args(argv[:split])
    train_args = argv[split + 1 :]
    try:  # everything is checked before anything runs or is written
        train_args = [check_text(arg, "the train.py options after --") for arg in train_args]
        grid, extra = build_grid(args.grid, args.sweep_file)
        check_layout(args, [*extra, *train_args], grid)
        points = expand(args.task, grid, [*extra, *train_args], args)
        if args.slurm:
            check_sbatch_path(slurm_dir(args.task))
    except SweepError as error:
        parser.error(one_line(str(error)))
    if args.dry_run:
        for point in points:
            print(shlex.join(command(args.task, point)))
        return 0
    pending = to_run(points, failed_option(args))
    if args.slurm:
        return submit_array(args, pending)
    pool = ThreadPoolExecutor(max_workers=args.workers)
    try:
        list(pool.map(lambda point: run_point(args.task, point, failed_option(args)), pending))
    except KeyboardInterrupt:  # the runs in progress got the Ctrl-C too: they checkpoint and stop
        pool.shutdown(wait=True, cancel_futures=True)  # and none of the waiting ones starts
        print(f"\ninterrupted; relaunch the same command to resume.\n\n{summary(points)}")
        return 130
    pool.shutdown()
    print()
    print(summary(points))
    unfinished = [
        point
        for point in points
        if run_state(point.run_dir) != "finished" or config_differences(point.run_dir, point.hparams)
    ]
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
