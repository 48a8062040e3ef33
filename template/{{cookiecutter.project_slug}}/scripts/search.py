r"""Search hyperparameters with Optuna; relaunch it and the search goes on where it stopped.

    python scripts/search.py {{ cookiecutter.task_name }} --space space.json --trials 20 -- --epochs 5
    python scripts/search.py {{ cookiecutter.task_name }} --space space.json --trials 20 --workers 2
    python scripts/search.py {{ cookiecutter.task_name }} --space space.json --trials 20 --dry-run
    python scripts/search.py {{ cookiecutter.task_name }} --space space.json --trials 60 \
        --slurm --parallel 4 --time 4:00:00 --gpus_per_task 1 -- --epochs 30

The space is a JSON file of train.py hyperparameters and their ranges:

    {"learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": true},
     "hidden_size": {"type": "int", "low": 32, "high": 256, "step": 32},
     "depth": {"type": "categorical", "choices": [1, 2, 4]}}

Every trial is one train.py run, ``results/<study>-trial<n>/``, seen by
``dlscaffold status``, ``report``, ``eval.py --all`` and ``reproduce`` like any.
The study (Optuna's journal, the settings, a summary) is kept in
``experiments/<task>/searches/<study>/``; the study is named after the space
file unless ``--study`` names it. A search runs until ``--trials`` trials are
complete or pruned (pruned ones count: the pruner judged them).

Relaunch the same command after a Ctrl-C, a kill, a lost node or a preemption:
trials that finished are recorded, interrupted ones resume from their
checkpoints with the parameters they had, failed ones are reported
(``--resume_failed`` continues them, ``--retry_failed`` trains their parameters
again as new trials) and new trials are added until enough are done. Two
processes never train one trial, and a relaunch with other settings (space,
sampler, seed, pruner, metric, the hyperparameters fixed after ``--``, where the
runs go) is refused: start another study for those. Raise ``--trials`` to extend
a search; how to run (``--device``, ``--num_workers``) may change.

Each epoch's ``--metric`` reaches the pruner from the run protocol; a trial it
stops ends with ``pruned.out``. Every corner of the space (bounds, choices) is
checked by train.py's own options before anything runs, and each sampled point
again before it trains. The exit code is 0 once ``--trials`` trials are done.

With ``--slurm``, ``--parallel`` array tasks pull trials from the one study
until enough are done; each trial is a job step, warned by SIGUSR1 before the
time limit, checkpointed, requeued and resumed like any run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from sweep import (
    check_sbatch_path,
    memory,
    parse_point,
    partition,
    sbatch,
    sbatch_header,
    slurm_time,
    warning_seconds,
)

from protocol.errors import MetricMissing
from protocol.files import load_experiment_script, one_line, read_json, write_json
from protocol.grid import SweepError, check_text
from protocol.lock import claiming, live_owner
from protocol.naming import hyperparameter_defaults
from protocol.options import positive_int, seed
from protocol.pruning import TRIAL_VARIABLE
from protocol.rundir import flag_state
from protocol.space import Dimension, as_text, read_space, space_json

TASK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
STUDY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,59}")  # part of each trial's run name
POLL_S = 2.0  # how often a worker with nothing to start looks again
EXIT_REFUSED = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        usage="%(prog)s TASK --space FILE --trials N [options] [-- train.py options for every trial]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", help="the experiment to tune: experiments/<task>/train.py")
    parser.add_argument("--space", type=Path, required=True, help="JSON file: the hyperparameters' ranges")
    parser.add_argument(
        "--trials", type=positive_int, required=True, help="trials to complete (pruned ones count)"
    )
    parser.add_argument("--study", type=study_name, help="the study's name (default: the space file's)")
    parser.add_argument("--sampler", choices=["tpe", "random"], default="tpe", help="default: tpe")
    parser.add_argument("--seed", type=seed, default=0, help="seeds the sampler (default: 0)")
    parser.add_argument(
        "--pruner", choices=["median", "none"], default="median", help="stops trials behind the median"
    )
    parser.add_argument(
        "--startup_trials",
        type=positive_int,
        default=5,
        help="trials sampled at random and never pruned, before TPE and the pruner learn (default: 5)",
    )
    parser.add_argument("--metric", default="val_acc", help="the epoch metric to optimise (default: val_acc)")
    parser.add_argument("--direction", choices=["maximize", "minimize"], default="maximize")
    parser.add_argument("--workers", type=positive_int, default=1, help="trials trained at once here")
    parser.add_argument(
        "--max_failed",
        type=positive_int,
        default=5,
        help="stop adding trials once this many have failed, diverged ones included (default: 5)",
    )
    failed = parser.add_mutually_exclusive_group()
    failed.add_argument(
        "--retry_failed", action="store_true", help="train failed trials' parameters again, as new trials"
    )
    failed.add_argument(
        "--resume_failed", action="store_true", help="continue failed trials from their last checkpoints"
    )
    parser.add_argument("--dry-run", action="store_true", help="check everything and say what would run")
    slurm = parser.add_argument_group("SLURM (with --slurm: submit array tasks that pull trials)")
    slurm.add_argument("--slurm", action="store_true", help="submit the search as a SLURM job array")
    slurm.add_argument("--parallel", type=positive_int, help="array tasks, each one trial at a time")
    slurm.add_argument("--partition", type=partition, help="partition to submit to")
    slurm.add_argument("--time", type=slurm_time, default="4:00:00", help="each array task's time limit")
    slurm.add_argument("--gpus_per_task", type=int, default=0, help="GPUs for each trial")
    slurm.add_argument("--cpus_per_task", type=positive_int, default=1, help="CPUs for each trial")
    slurm.add_argument("--mem", type=memory, help="memory of each array task, e.g. 16G")
    slurm.add_argument(
        "--warning_seconds",
        type=warning_seconds,
        default=120,
        help="SIGUSR1 this long before the time limit: checkpoint and requeue (default: 120)",
    )
    slurm.add_argument("--srun", action="store_true", help=argparse.SUPPRESS)  # inside an array task
    return parser


def study_name(text: str) -> str:
    if not STUDY.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a study name: up to 60 letters, digits, '_' and '-', not starting with '-'"
        )
    return text


@dataclass
class Search:
    """One launch of a search: what it was asked, and what its workers share."""

    args: argparse.Namespace
    settings: Any  # protocol.study.Settings
    space: list[Dimension]
    study_dir: Path
    results_dir: Path
    parser: argparse.ArgumentParser
    train_args: list[str]  # the options after --, as given to this launch
    stop: threading.Event = field(default_factory=threading.Event)
    refused: str | None = None  # a reason the whole search stops: exit status 2
    failed: bool = False  # a worker met an error of its own (a full disk)
    working: int = 0  # workers not yet returned
    retry: set[int] = field(default_factory=set)  # failed trials to retry or resume in this launch
    children: set[subprocess.Popen[bytes]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Job:
    """A trial to train now, claimed by this process."""

    number: int
    run: str
    args: list[str]  # train.py's
    claim: int  # the claim's file descriptor
    what: str  # start, resume, retry


def prepare(args: argparse.Namespace, train_args: list[str]) -> Search:
    """Everything checked, nothing written: the space against train.py's own options, the study name."""
    from protocol.study import Settings  # here: --help works without Optuna installed

    if not TASK.fullmatch(args.task):
        raise SweepError(f"no task {args.task!r}: a task is a directory name under experiments/")
    if args.slurm != bool(args.parallel):
        raise SweepError("--slurm and --parallel go together: --parallel K array tasks pull the trials")
    if args.slurm and args.workers > 1:
        raise SweepError("--workers is for a search run here; with --slurm, --parallel sets the array tasks")
    train_args = [check_text(arg, "the train.py options after --") for arg in train_args]
    given = {arg.partition("=")[0] for arg in train_args}
    if "--run_name" in given:
        raise SweepError("--run_name has no place after --: each trial is named after the study")
    try:
        train = load_experiment_script(args.task, "train")
    except FileNotFoundError as error:
        raise SweepError(str(error)) from None
    parser = train.build_parser()
    hyperparameters = hyperparameter_defaults(train.hyperparameters())
    space = read_space(args.space)
    for dim in space:
        if dim.name not in hyperparameters:
            known = ", ".join(sorted(hyperparameters))
            raise SweepError(f"{args.space}: {dim.name} is not one of train.py's hyperparameters ({known})")
        if f"--{dim.name}" in given:
            raise SweepError(f"{dim.name} is both in the space and after --: one or the other")
        for value in dim.corners():
            point = [*train_args, f"--{dim.name}", as_text(value)]
            parse_point(parser, point, f"the space's {dim.name}={as_text(value)}")
    fixed = parse_point(parser, train_args, "the train.py options after --")
    results_dir = PROJECT_ROOT / fixed.results_dir  # train.py runs from the project root
    # what every trial shares and the search may not change: the hyperparameters the space leaves
    # alone (as train.py parses them: --epochs=2 is --epochs 2) and where the trials' runs go
    searched = {dim.name for dim in space}
    shared = {name: getattr(fixed, name) for name in sorted(hyperparameters) if name not in searched}
    shared["results_dir"] = str(relative_to_project(results_dir))
    name = args.study or args.space.stem
    if not STUDY.fullmatch(name):
        raise SweepError(f"the space file's name {name!r} cannot name a study: give --study NAME")
    settings = Settings(
        task=args.task,
        space=space_json(space),
        sampler=args.sampler,
        seed=args.seed,
        pruner=args.pruner,
        startup_trials=args.startup_trials,
        metric=check_text(args.metric, "--metric"),
        direction=args.direction,
        fixed=json.loads(json.dumps(shared, default=str)),  # as settings.json records it
    )
    study_dir = PROJECT_ROOT / "experiments" / args.task / "searches" / name
    search = Search(args, settings, space, study_dir, results_dir, parser, train_args)
    check_settings(search)
    if args.slurm:
        check_sbatch_path(study_dir)
    return search


def relative_to_project(path: Path) -> Path:
    """``path`` from the project's root when inside it: the project may move."""
    try:
        return path.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        return path.resolve()


def check_settings(search: Search) -> None:
    """A study keeps its settings; one that is new must not find trial runs of an earlier one."""
    from protocol.study import differences, read_settings

    if search.study_dir.exists() and not search.study_dir.is_dir():
        raise SweepError(f"{search.study_dir} is not a directory: move it away, or give --study NAME")
    journal = search.study_dir / "journal.log"
    if journal.exists() and not journal.is_file():  # a FIFO would hang the search
        raise SweepError(f"{journal} is not a regular file")
    if (search.study_dir / "settings.json").exists():
        lines = differences(read_settings(search.study_dir), search.settings)
        if lines:
            raise SweepError(
                f"the study {search.study_dir.name} was started with other settings: "
                + "; ".join(lines)
                + ". Relaunch with its settings, or start another study with --study NAME"
            )
        return
    leftovers = sorted(search.results_dir.glob(f"{search.study_dir.name}-trial*"))
    if leftovers:
        raise SweepError(
            f"{leftovers[0]} is the run of an earlier study named {search.study_dir.name}: "
            "move those runs away, or name this study otherwise with --study NAME"
        )


def start(search: Search) -> None:
    """Create the study's directory, settings and journal, or open them; note the failed trials to
    retry. Trials that ended while no search watched are recorded first."""
    from protocol import study

    search.study_dir.mkdir(parents=True, exist_ok=True)
    with claiming(search.study_dir):
        if (search.study_dir / "settings.json").exists():
            check_settings(search)  # again, under the lock: another launch may have just started it
        else:
            write_json(search.study_dir / "settings.json", search.settings.to_json())
        write_json(search.study_dir / "space.json", search.settings.space)  # what array tasks read
        study.repair_journal(search.study_dir)
        opened = study.open_study(search.study_dir, search.settings, create=True)
        for orphan in orphans(search, opened)[0]:
            os.close(orphan.claim)
        trials = opened.get_trials(deepcopy=False)
        if search.args.retry_failed or search.args.resume_failed:
            retried = {trial.user_attrs.get("retry_of") for trial in trials}
            failed = {trial.number for trial in trials if trial.state.name == "FAIL"}
            search.retry = failed - retried
        study.write_summary(search.study_dir, opened, search.settings, search.args.trials)


@dataclass
class Orphan:
    """A trial the study holds as running that no process trains: it resumes."""

    number: int
    run: str
    claim: int


def orphans(search: Search, opened: Any) -> tuple[list[Orphan], int]:
    """The study's running trials that no process trains and whose runs have not ended, claimed;
    and how many trials are in flight elsewhere. Runs that ended unseen are told to the study."""
    from protocol import study

    found, in_flight = [], 0
    for trial in opened.get_trials(deepcopy=False):
        if trial.state.name == "WAITING":
            in_flight += 1  # a retry enqueued by a search killed before it asked for it
        if trial.state.name != "RUNNING":
            continue
        claim = study.claim(search.study_dir, trial.number)
        if claim is None:
            in_flight += 1  # trained by another worker, of this search or another
            continue
        run = study.run_name(search.study_dir, trial)
        if live_owner(search.results_dir / run):  # its train.py, started by hand
            os.close(claim)
            in_flight += 1
        elif settle(search, opened, trial.number, run):
            found.append(Orphan(trial.number, run, claim))
        else:
            os.close(claim)
    return found, in_flight


def settle(search: Search, opened: Any, number: int, run: str, ran: bool = False) -> bool:
    """Tell the study how a trial's run ended, if it did; whether the trial still needs training.

    ``ran``: its train.py just ended. A failed.out left then is final, even the one it was to
    continue: train.py refused to resume it (a diverged loss, no checkpoint) and would again.
    """
    from protocol import study

    run_dir = search.results_dir / run
    state = flag_state(run_dir)
    if state == "finished":
        value = study.trial_value(run_dir, search.settings.metric, search.settings.direction)
        if value is None:
            study.fail(
                search.study_dir, opened, number, f"its epochs report no finite {search.settings.metric}"
            )
        else:
            opened.tell(number, value)
    elif state == "pruned":
        study.prune(opened, number)
    elif state == "failed" and (ran or not old_failure(opened, number, run_dir)):
        flag = read_json(run_dir / "failed.out")
        reason = flag.get("reason") if isinstance(flag, dict) else None
        reason = one_line(reason) if isinstance(reason, str) else "failed"
        study.fail(search.study_dir, opened, number, reason)
        refuse_missing_metric(search, reason)
    else:
        return True  # interrupted, killed before it could say, or a failed run to resume
    return False


def refuse_missing_metric(search: Search, reason: Any) -> None:
    """A trial failed for want of the search's metric: every trial would, so the search stops."""
    if isinstance(reason, str) and reason.startswith(MetricMissing.__name__):
        refuse(search, f"{reason.partition(': ')[2]}; start another study (--study) with another --metric")


def old_failure(opened: Any, number: int, run_dir: Path) -> bool:
    """Whether the run's failed.out is the one trial ``number`` was created to continue
    (``--resume_failed``), not a failure of its own."""
    flag = read_json(run_dir / "failed.out")
    when = flag.get("time") if isinstance(flag, dict) else None
    return when is not None and when == opened.get_trials(deepcopy=False)[number].user_attrs.get("failed_at")


def next_job(search: Search) -> Job | str:
    """Under the study's lock: record trials that ended unseen, then claim what to train next:
    an orphan to resume, a failed trial to retry, or a new trial. Else ``wait`` (trials are in
    flight, and one may come back unfinished) or ``done``."""
    from protocol import study

    with claiming(search.study_dir):
        opened = study.open_study(search.study_dir, search.settings)
        found, in_flight = orphans(search, opened)
        resume = found[0] if found and not search.stop.is_set() else None  # one at a time
        for orphan in found:
            if orphan is not resume:  # left for the next ask, here or in another process
                os.close(orphan.claim)
                in_flight += 1
        job: Job | None = None
        if resume is not None:
            job = trial_job(search, opened, resume.number, resume.run, resume.claim, "resume")
        elif not search.stop.is_set():
            job = retry_job(search, opened) or new_job(search, opened, in_flight)
        study.write_summary(search.study_dir, opened, search.settings, search.args.trials)
    if job is not None:
        return job
    return "wait" if in_flight else "done"


def retry_job(search: Search, opened: Any) -> Job | None:
    """A failed trial's parameters as a new trial: its run continued (``--resume_failed``) or a new
    run (``--retry_failed``)."""
    from protocol import study

    while search.retry:
        number = min(search.retry)
        search.retry.discard(number)
        trials = opened.get_trials(deepcopy=False)
        if any(trial.user_attrs.get("retry_of") == number for trial in trials):
            continue  # another process retried it first
        failed = trials[number]
        attrs: dict[str, Any] = {"retry_of": number}
        if search.args.resume_failed:
            attrs["run"] = study.run_name(search.study_dir, failed)
            flag = read_json(search.results_dir / attrs["run"] / "failed.out")
            attrs["failed_at"] = flag.get("time") if isinstance(flag, dict) else None
        opened.enqueue_trial(failed.params, user_attrs=attrs)
        trial = opened.ask()
        claim = study.claim(search.study_dir, trial.number)
        assert claim is not None  # asked for under the study's lock: no one else knows it yet
        run = study.run_name(search.study_dir, opened.get_trials(deepcopy=False)[trial.number])
        what = "resume" if search.args.resume_failed else "retry"
        return trial_job(search, opened, trial.number, run, claim, what)
    return None


def new_job(search: Search, opened: Any, in_flight: int) -> Job | None:
    """A new trial, if the search needs one: sampled, claimed, checked by train.py's options."""
    from protocol import study

    trials = opened.get_trials(deepcopy=False)
    done = sum(trial.state.name in ("COMPLETE", "PRUNED") for trial in trials)
    retried = {trial.user_attrs.get("retry_of") for trial in trials}
    failed = sum(trial.state.name == "FAIL" and trial.number not in retried for trial in trials)
    if done + in_flight >= search.args.trials:
        return None
    if failed >= search.args.max_failed:
        if not search.stop.is_set():
            print(
                f"{failed} trials failed: no more are added (dlscaffold status shows why; "
                "--retry_failed, --resume_failed or a higher --max_failed go on)"
            )
        search.stop.set()
        return None
    trial = opened.ask()
    claim = study.claim(search.study_dir, trial.number)
    assert claim is not None  # asked for under the study's lock: no one else knows it yet
    run = study.run_name(search.study_dir, opened.get_trials(deepcopy=False)[trial.number])
    if (search.results_dir / run).exists():
        os.close(claim)
        study.fail(search.study_dir, opened, trial.number, f"{run} exists already")
        refuse(search, f"{search.results_dir / run} exists already, from an earlier study: move it away")
        return None
    return trial_job(search, opened, trial.number, run, claim, "start")


def trial_job(search: Search, opened: Any, number: int, run: str, claim: int, what: str) -> Job | None:
    """The train.py arguments of a trial: its parameters (sampled now if a kill cut sampling short),
    checked by train.py's own options."""
    from protocol import study

    opened.sampler = study.sampler(search.settings, number)  # draws of its own, whenever sampled
    params = study.suggest(study.trial_object(search.study_dir, opened, number), search.space)
    point = [arg for dim in search.space for arg in (f"--{dim.name}", value_text(dim, params[dim.name]))]
    args = [*search.train_args, *point, "--run_name", run]
    if flag_state(search.results_dir / run) == "failed":
        args.append("--resume_failed")  # a failed trial continued by a new one (--resume_failed)
    try:
        parse_point(search.parser, args, f"trial {number} ({shlex.join(point)})")
    except SweepError as error:
        os.close(claim)
        study.fail(search.study_dir, opened, number, str(error))
        refuse(search, str(error))
        return None
    return Job(number, run, args, claim, what)


def value_text(dim: Dimension, value: Any) -> str:
    """A sampled value as train.py reads it; a float on a step without its rounding error
    (0.30000000000000004 is 0.3)."""
    return as_text(round(value, 12) if dim.kind == "float" and dim.step else value)


def refuse(search: Search, reason: str) -> None:
    search.refused = one_line(reason)
    search.stop.set()


def run_trial(search: Search, job: Job) -> None:
    """Train one trial (its output to ``<run>/stdout.log``), then tell the study how it ended."""
    from protocol import study

    run_dir = search.results_dir / job.run
    command = [sys.executable, str(PROJECT_ROOT / "experiments" / search.args.task / "train.py"), *job.args]
    if search.args.srun:  # a job step: SLURM's warning signal reaches train.py itself
        command = ["srun", "--ntasks=1", f"--cpus-per-task={search.args.cpus_per_task}", *command]
    environment = {**os.environ, TRIAL_VARIABLE: f"{search.study_dir}#{job.number}"}
    print(f"{job.what:<8} trial {job.number}: {shlex.join(job.args[len(search.train_args) :])}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with (run_dir / "stdout.log").open("ab") as log:
            # the claim goes with train.py: if this process dies, the trial stays claimed until it ends
            child = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                env=environment,
                pass_fds=(job.claim,),
            )
    except OSError as error:
        os.close(job.claim)
        print(f"could not launch trial {job.number}: {one_line(str(error))}", file=sys.stderr)
        search.stop.set()
        return
    with search.lock:
        search.children.add(child)
        if search.stop.is_set():  # a stop signal came while it was starting
            child.send_signal(signal.SIGTERM)
    code = child.wait()
    with search.lock:
        search.children.discard(child)
    try:
        with claiming(search.study_dir):
            opened = study.open_study(search.study_dir, search.settings)
            unfinished = settle(search, opened, job.number, job.run, ran=True)
            study.write_summary(search.study_dir, opened, search.settings, search.args.trials)
    finally:
        os.close(job.claim)  # after the study knows: no one resumes a trial that ended
    print(outcome(search, job, code if unfinished else None))
    if unfinished and code != EXIT_LOCKED:
        search.stop.set()  # stopped by a signal, or killed: the search stops too; relaunch it


EXIT_LOCKED = 3  # train.py's: another process trains the run


def outcome(search: Search, job: Job, code: int | None) -> str:
    """One line: how the trial ended."""
    run_dir = search.results_dir / job.run
    if code is None:
        summary = read_json(search.study_dir / "trials.json")
        rows = summary.get("trials", []) if isinstance(summary, dict) else []
        row = next((row for row in rows if isinstance(row, dict) and row.get("number") == job.number), {})
        state, value, reason = row.get("state"), row.get("value"), row.get("reason")
        if isinstance(value, float):
            shown = f"{search.settings.metric}={value:.4f}"
        else:
            flag = read_json(run_dir / f"{flag_state(run_dir)}.out")
            shown = reason or (flag.get("reason") if isinstance(flag, dict) else None) or ""
        return f"{state:<8} trial {job.number}: {one_line(str(shown))} ({job.run})"
    if code == EXIT_LOCKED:
        return f"busy     trial {job.number}: {job.run} is trained by another process"
    state = flag_state(run_dir) or "stopped"
    return f"{state:<8} trial {job.number}: exit status {code}; relaunch the search to resume it ({job.run})"


def work(search: Search) -> None:
    """One worker: train trials one after another until the search has enough, or stops."""
    try:
        while not search.stop.is_set():
            job = next_job(search)
            if job == "done":
                return
            if job == "wait":
                if search.args.srun:
                    return  # an array task leaves its allocation: trials in flight resume in theirs
                search.stop.wait(POLL_S)  # trials in flight: one may come back unfinished
                continue
            assert isinstance(job, Job)
            run_trial(search, job)
    except Exception as error:  # a full disk, an unreadable journal: this search stops, cleanly
        print(f"the search stops: {type(error).__name__}: {one_line(str(error))}", file=sys.stderr)
        search.failed = True
        search.stop.set()
    finally:
        with search.lock:
            search.working -= 1


def wait_for_workers(search: Search) -> None:
    """Sleep until every worker has returned. Not Thread.join: before Python 3.13, a Ctrl-C
    during a join can leave the thread taken for finished while it still waits for its trial."""
    while search.working:
        time.sleep(0.2)


def forward(search: Search, signum: int) -> None:
    """A stop signal for the search: every trial in progress checkpoints and stops too."""
    search.stop.set()
    with search.lock:
        for child in search.children:
            if child.poll() is None:
                child.send_signal(signum)


def run_here(search: Search) -> int:
    workers = [threading.Thread(target=work, args=(search,), daemon=True) for _ in range(search.args.workers)]
    previous = {
        signum: signal.signal(signum, lambda signum, frame: forward(search, signum))
        for signum in (signal.SIGTERM, signal.SIGUSR1)
    }
    search.working = len(workers)
    for worker in workers:
        worker.start()
    interrupted = False
    try:
        wait_for_workers(search)
    except KeyboardInterrupt:  # the trials got the Ctrl-C too (one process group); SIGTERM for
        interrupted = True  # those that did not (kill -INT): a second SIGINT would stop them at once
        forward(search, signal.SIGTERM)
        try:
            wait_for_workers(search)
        except KeyboardInterrupt:  # a second Ctrl-C: leave now, the trials stop at once too
            print("\nstopped at once; relaunch the same command to go on.")
            return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print()
    print(summary(search))
    if interrupted:
        print("interrupted; relaunch the same command to go on.")
        return 130
    if search.refused:
        print(f"refused: {search.refused}", file=sys.stderr)
        return EXIT_REFUSED
    return 0 if done(search) >= search.args.trials else 1


def progress(search: Search) -> str:
    """``7 of 12 trials done``; ``15 trials done (12 asked for)`` once --trials was lowered."""
    count, wanted = done(search), search.args.trials
    return (
        f"{count} of {wanted} trials done" if count <= wanted else f"{count} trials done ({wanted} asked for)"
    )


def done(search: Search) -> int:
    content = read_json(search.study_dir / "trials.json")
    rows = content.get("trials", []) if isinstance(content, dict) else []
    return sum(isinstance(row, dict) and row.get("state") in ("complete", "pruned") for row in rows)


def summary(search: Search) -> str:
    """The study's trials as a table, and the best so far."""
    content = read_json(search.study_dir / "trials.json")
    rows = (
        [row for row in content.get("trials", []) if isinstance(row, dict)]
        if isinstance(content, dict)
        else []
    )
    table = [("TRIAL", "STATE", search.settings.metric.upper(), "RUN", "PARAMETERS")]
    for row in rows:
        if row.get("state") == "running" and isinstance(row.get("run"), str):  # or stopped mid-way?
            row["state"] = flag_state(search.results_dir / row["run"]) or "running"
        value = row.get("value")
        params = row.get("params") if isinstance(row.get("params"), dict) else {}
        shown = " ".join(f"{key}={as_text(item)}" for key, item in params.items())
        table.append(
            (
                str(row.get("number")),
                str(row.get("state")),
                f"{value:.4f}" if isinstance(value, float) else "-",
                str(row.get("run")),
                shown,
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    best = content.get("best") if isinstance(content, dict) else None
    best_row = next((row for row in rows if row.get("number") == best), None)
    if best_row:
        value = best_row.get("value")
        lines.append(f"best: trial {best} ({best_row.get('run')}), {search.settings.metric}={value:.4f}")
    lines.append(f"{progress(search)}; the study: {search.study_dir}")
    return "\n".join(lines)


def worker_command(search: Search) -> list[str]:
    """What each array task runs: this search, one trial at a time, each trial a job step."""
    args = search.args
    settings = search.settings
    command = [sys.executable, str(Path(__file__).resolve()), args.task]
    command += ["--space", str(search.study_dir / "space.json"), "--study", search.study_dir.name]
    command += ["--trials", str(args.trials), "--sampler", settings.sampler, "--seed", str(settings.seed)]
    command += ["--pruner", settings.pruner, "--startup_trials", str(settings.startup_trials)]
    command += ["--metric", settings.metric, "--direction", settings.direction]
    command += ["--max_failed", str(args.max_failed), "--cpus_per_task", str(args.cpus_per_task), "--srun"]
    command += ["--retry_failed"] * args.retry_failed + ["--resume_failed"] * args.resume_failed
    return [*command, "--", *search.train_args]


def array_script(search: Search, log_dir: Path) -> str:
    """An sbatch script of ``--parallel`` array tasks, each this search pulling trials.

    Every #SBATCH value was checked by a pattern; every argument is shell-quoted.
    SIGUSR1 goes to job steps only: the trials, which checkpoint and requeue the task.
    """
    args = search.args
    lines = sbatch_header(args, f"{args.task}-search", args.parallel, ["--ntasks=1"], log_dir)
    lines.append(f"exec {shlex.join(worker_command(search))}")
    return "\n".join(lines) + "\n"


def submit(search: Search) -> int:
    log_dir = search.study_dir / "slurm"
    script = log_dir / f"search-{time.strftime('%Y%m%d-%H%M%S')}.sbatch"
    job = sbatch(script, array_script(search, log_dir))
    if job is None:
        return 1
    print(f"submitted job array {job}: {search.args.parallel} tasks pull trials from {search.study_dir}")
    print(f"follow it with `dlscaffold status`; logs go to {log_dir}")
    return 0


def dry_run(search: Search) -> int:
    """Say what the search would do; write nothing."""
    print(f"study {search.study_dir}")
    if (search.study_dir / "trials.json").exists():
        print(f"  {progress(search)} so far")
    else:
        print("  new: nothing is written until it starts")
    for name, spec in search.settings.space.items():
        print(f"  {name}: {spec}")
    train = PROJECT_ROOT / "experiments" / search.args.task / "train.py"
    point = [arg for dim in search.space for arg in (f"--{dim.name}", f"<{dim.name}>")]
    run = f"{search.study_dir.name}-trial<n>"
    print(shlex.join([sys.executable, str(train), *search.train_args, *point, "--run_name", run]))
    if search.args.slurm:
        print(array_script(search, search.study_dir / "slurm"), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)  # after "--": options for train.py
    parser = build_parser()
    args = parser.parse_args(argv[:split])
    try:  # everything is checked before anything runs or is written
        search = prepare(args, argv[split + 1 :])
    except SweepError as error:
        parser.error(one_line(str(error)))
    except ModuleNotFoundError as error:
        parser.error(f"{error.name} is not installed: pip install -r requirements.txt")
    if args.dry_run:
        return dry_run(search)
    try:
        start(search)
    except SweepError as error:
        parser.error(one_line(str(error)))
    except Exception as error:  # a full disk, a journal that is not Optuna's: one line, no traceback
        what = f"{type(error).__name__}: {one_line(str(error))}"
        print(f"cannot open the study {search.study_dir}: {what}", file=sys.stderr)
        return 1
    if args.slurm:
        return submit(search)
    code = run_here(search)
    return 1 if code == 0 and search.failed else code


if __name__ == "__main__":
    sys.exit(main())
