"""The run-directory protocol: every run knows whether it finished, stopped or failed.

A run lives in ``experiments/<task>/results/<run>/``::

    hparams.json      the resolved hyperparameters
    manifest.json     how to reproduce it: command, seed, git state, versions, history
    progress.json     epoch, step and metrics of the last completed epoch
    logs/             tracker output (TensorBoard by default)
    checkpoints/      last and best checkpoints
    run.lock          present while a process trains it: pid and host
    finished.out      completed: final metrics and duration      (at most one
    interrupted.out   stopped by a signal: resume it               of these three
    failed.out        an exception or a diverged loss: why         at a time)

The same command names the same directory, so relaunching a batch of
experiments runs only what still needs running: finished runs are skipped,
interrupted ones resume from their last checkpoint, failed ones are skipped
until ``--retry_failed``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from utils.utils import PROJECT_ROOT, read_json, write_json

FLAGS = ("finished.out", "interrupted.out", "failed.out")
LOCK = "run.lock"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
EXIT_FAILED = 1
EXIT_LOCKED = 3
MAX_RUN_NAME = 120
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


class RunInterrupted(Exception):
    """Raised by a trainer that stopped at a safe point because a signal asked it to."""


class RunDiverged(Exception):
    """Raised by a trainer whose loss stopped being a finite number."""


def add_run_arguments(parser: argparse.ArgumentParser, task_dir: Path) -> None:
    """The options that control a run without changing what it computes."""
    group = parser.add_argument_group("run control (does not change the run's name)")
    group.add_argument(
        "--run_name",
        help="name of the run directory (default: derived from the hyperparameters "
        "that differ from their defaults, and the seed)",
    )
    group.add_argument(
        "--results_dir",
        type=Path,
        default=task_dir / "results",
        help="where run directories go (default: %(default)s)",
    )
    group.add_argument(
        "--force",
        action="store_true",
        help="train again even if the run finished or failed; the old run is kept, renamed",
    )
    group.add_argument(
        "--retry_failed",
        action="store_true",
        help="train a failed run again from scratch; the failed attempt is kept, renamed",
    )


def hparam_names(parser: argparse.ArgumentParser) -> list[str]:
    """The options of the parser's "hyperparameters" group: they define a run."""
    for group in parser._action_groups:
        if group.title == "hyperparameters":
            return [action.dest for action in group._group_actions]
    raise ValueError("the parser has no 'hyperparameters' argument group")


def default_run_name(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """A readable name from the hyperparameters that differ from their defaults, plus the seed.

    The same command always yields the same name: that is what lets a relaunch
    find, skip or resume the run instead of starting a new one.
    """
    parts = []
    for name in sorted(hparam_names(parser)):
        value = getattr(args, name)
        if name == "seed" or value != parser.get_default(name):
            parts.append(f"{name}-{_format_value(value)}")
    run_name = "_".join(parts) or "default"
    if len(run_name) > MAX_RUN_NAME:
        digest = hashlib.sha1(run_name.encode()).hexdigest()[:10]
        run_name = f"{run_name[: MAX_RUN_NAME - 11]}~{digest}"
    return run_name


def _format_value(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


@dataclass
class Run:
    """One run directory, as seen by the process that trains it."""

    task: str
    name: str
    dir: Path
    args: argparse.Namespace
    hparams: dict[str, Any]
    resuming: bool = False
    stop_signal: str | None = field(default=None, repr=False)

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def seed(self) -> int:
        return int(self.hparams["seed"])

    @property
    def stop_requested(self) -> bool:
        """True once SIGINT, SIGTERM or SIGUSR1 arrived: stop at the next safe point."""
        return self.stop_signal is not None

    def record_progress(self, epoch: int, step: int, metrics: dict[str, float], main_metric: str) -> None:
        """Write what the last completed epoch achieved, for ``dlscaffold status`` and sweeps."""
        write_json(
            self.dir / "progress.json",
            {"epoch": epoch, "step": step, "metrics": metrics, "main_metric": main_metric, "time": _now()},
        )


def launch(
    task_dir: Path,
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    train: Callable[[Run], dict[str, float]],
) -> int:
    """Run ``train`` under the protocol and return the process exit code.

    0: finished, or skipped because it had finished or failed before;
    1: failed; 3: another live process owns the run; 128+N: stopped by signal N.
    Under torchrun, rank 0 decides and keeps the books; every rank follows.
    """
    hparams = {name: getattr(args, name) for name in hparam_names(parser)}
    name = args.run_name or default_run_name(args, parser)
    run = Run(task=task_dir.name, name=name, dir=args.results_dir / name, args=args, hparams=hparams)

    decision = claim(run) if is_rank_zero() else None
    decision = share_from_rank_zero(decision)
    if decision is None:  # a rank that Lightning started itself, after rank 0 claimed the run
        decision = "resume" if any(run.checkpoints.glob("last.*")) else "start"
    if isinstance(decision, int):
        return decision
    run.resuming = decision == "resume"
    if not is_rank_zero():
        return _train_on_other_rank(run, train)
    try:
        return _train_under_protocol(run, train)
    finally:
        (run.dir / LOCK).unlink(missing_ok=True)


def claim(run: Run) -> str | int:
    """Decide what to do with the run and take its lock: ``start``, ``resume`` or an exit code."""
    args = run.args
    owner = live_owner(run.dir)
    if owner:
        print(f"[{run.name}] is being trained by {owner}; refusing to start a second copy.")
        return EXIT_LOCKED
    state = flag_state(run.dir)
    if state == "finished" and not args.force:
        print(f"[{run.name}] finished already; skipping (--force trains it again). {run.dir}")
        return 0
    if state == "failed" and not (args.retry_failed or args.force):
        reason = (read_json(run.dir / "failed.out") or {}).get("reason", "see failed.out")
        print(f"[{run.name}] failed before: {reason}\n  skipping (--retry_failed tries again).")
        return 0
    if state in ("finished", "failed"):
        archived = archive(run.dir)
        print(f"[{run.name}] previous {state} run kept as {archived.name}")
    if not acquire_lock(run.dir):
        print(f"[{run.name}] another process took the run first; refusing to start a second copy.")
        return EXIT_LOCKED
    # a run with a checkpoint resumes: interrupted, or killed before it could say so
    return "resume" if state == "interrupted" or any(run.checkpoints.glob("last.*")) else "start"


def share_from_rank_zero(decision: str | int | None) -> str | int | None:
    """Under torchrun every rank must act on rank 0's decision, or the others would hang."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return decision
    shared = [decision]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def _train_on_other_rank(run: Run, train: Callable[[Run], dict[str, float]]) -> int:
    previous_handlers = install_stop_handlers(run)
    try:
        train(run)
    except RunInterrupted:
        return signal_exit_code(run)
    finally:
        restore_handlers(previous_handlers)
    return 0


def _train_under_protocol(run: Run, train: Callable[[Run], dict[str, float]]) -> int:
    clear_flags(run.dir)
    write_json(run.dir / "hparams.json", run.hparams)
    manifest = update_manifest(run, "resume" if run.resuming else "start")
    verb = "resuming" if run.resuming else "training"
    print(f"[{run.name}] {verb} in {run.dir}")

    started = time.monotonic()
    previous_handlers = install_stop_handlers(run)
    try:
        metrics = train(run)
    except BaseException as error:  # whatever ends the run must leave its reason behind
        if run.stop_signal is not None and not isinstance(error, RunDiverged):
            # RunInterrupted from our trainers, or a framework's own exit on the same signal
            return _record_interruption(run, manifest, error)
        return _record_failure(run, manifest, error)
    finally:
        restore_handlers(previous_handlers)
    duration = round(time.monotonic() - started, 3)
    write_flag(run, "finished.out", metrics=metrics, duration_s=duration, **_progress_summary(run))
    update_manifest(run, "finished", manifest, metrics=metrics)
    shown = ", ".join(f"{key}={value:.4f}" for key, value in sorted(metrics.items()))
    print(f"[{run.name}] finished in {duration:.1f}s: {shown}")
    return 0


def _record_interruption(run: Run, manifest: dict[str, Any], stop: BaseException) -> int:
    where = _progress_summary(run)
    detail = str(stop) or type(stop).__name__
    write_flag(run, "interrupted.out", reason=f"{run.stop_signal}: {detail}", **where)
    update_manifest(run, "interrupted", manifest, signal=run.stop_signal, **where)
    print(f"[{run.name}] interrupted by {run.stop_signal} ({detail}); relaunch to resume.")
    requeue_if_slurm(run.stop_signal)
    return signal_exit_code(run)


def signal_exit_code(run: Run) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended."""
    return 128 + int(getattr(signal, run.stop_signal or "SIGTERM"))


def _record_failure(run: Run, manifest: dict[str, Any], error: BaseException) -> int:
    reason = f"{type(error).__name__}: {error}"
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    write_flag(
        run,
        "failed.out",
        reason=reason,
        traceback="".join(lines).splitlines(),
        **_progress_summary(run),
    )
    update_manifest(run, "failed", manifest, reason=reason)
    print(f"[{run.name}] failed: {reason}", file=sys.stderr)
    print("".join(lines), file=sys.stderr)
    return EXIT_FAILED


# ---------------------------------------------------------------- flags -----


def flag_state(run_dir: Path) -> str | None:
    """``finished``, ``interrupted``, ``failed`` or ``None``, from the flag file present."""
    for flag in FLAGS:
        if (run_dir / flag).exists():
            return flag.removesuffix(".out")
    return None


def clear_flags(run_dir: Path) -> None:
    for flag in FLAGS:
        (run_dir / flag).unlink(missing_ok=True)


def write_flag(run: Run, flag: str, **content: Any) -> None:
    """Replace any flag with ``flag``: a run has at most one at any instant."""
    clear_flags(run.dir)
    write_json(run.dir / flag, {"state": flag.removesuffix(".out"), "time": _now(), **content})


def _progress_summary(run: Run) -> dict[str, Any]:
    progress = read_json(run.dir / "progress.json") or {}
    return {key: progress.get(key) for key in ("epoch", "step", "main_metric")}


def archive(run_dir: Path) -> Path:
    """Move a finished or failed run aside, so a new attempt never destroys its results."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.{stamp}")
    suffix = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.{stamp}-{suffix}")
        suffix += 1
    run_dir.rename(target)
    return target


# ----------------------------------------------------------------- lock -----


def acquire_lock(run_dir: Path) -> bool:
    """Create ``run.lock`` atomically; clear a lock whose owner is gone first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    owner = json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job_id": slurm_job_id(), "time": _now()}
    )
    draft = run_dir / f".{LOCK}.{os.getpid()}"
    draft.write_text(owner + "\n", encoding="utf-8")
    try:
        for _ in range(2):
            try:
                os.link(draft, lock)  # atomic, and fails if the lock exists: never half-written
                return True
            except FileExistsError:
                if live_owner(run_dir):
                    return False
                lock.unlink(missing_ok=True)  # left by a killed process: the run resumes
    finally:
        draft.unlink(missing_ok=True)
    return False


def live_owner(run_dir: Path) -> str | None:
    """Describe the live process holding the run's lock, or ``None``.

    A lock from this host whose process is gone, or from an earlier attempt of
    the same SLURM job (a requeue), is stale: the run was killed and resumes.
    A lock from another host cannot be checked and is taken as live.
    """
    lock = read_json(run_dir / LOCK)
    if not isinstance(lock, dict):
        return None
    pid, host = lock.get("pid"), lock.get("host")
    if lock.get("slurm_job_id") and lock.get("slurm_job_id") == slurm_job_id():
        return None
    if host == socket.gethostname():
        if not isinstance(pid, int) or not _pid_alive(pid):
            return None
    return f"pid {pid} on {host}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -------------------------------------------------------------- signals -----


def install_stop_handlers(run: Run) -> dict[int, Any]:
    """Turn SIGINT, SIGTERM and SIGUSR1 into a request to stop at the next safe point.

    The first signal only sets ``run.stop_signal``; the trainer checkpoints and
    raises :class:`RunInterrupted`. A second Ctrl-C stops at once.
    """

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if run.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        run.stop_signal = signal.Signals(signum).name
        print(f"\n[{run.name}] {run.stop_signal} received: stopping at the next safe point.")

    previous = {}
    for signum in STOP_SIGNALS:
        previous[signum] = signal.signal(signum, request_stop)
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def requeue_if_slurm(signal_name: str | None) -> None:
    """On SLURM's pre-timeout or preemption signal, put this job back in the queue.

    The requeued job runs the same command, which finds ``interrupted.out`` and
    resumes; the time it loses is one partial epoch at most.
    """
    job = slurm_job_id()
    if signal_name != "SIGUSR1" or not job:
        return
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    outcome = "requeued" if result.returncode == 0 else f"requeue failed: {result.stderr.strip()}"
    print(f"SLURM job {job} {outcome}")


# -------------------------------------------------------- environment -----


def is_rank_zero() -> bool:
    """True outside distributed training and on its first process.

    torchrun sets RANK; Lightning sets LOCAL_RANK and NODE_RANK on the processes
    it starts; a multi-task SLURM step numbers its tasks with SLURM_PROCID.
    """
    ranks = [os.environ.get(key, "0") for key in ("RANK", "LOCAL_RANK", "NODE_RANK")]
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        ranks.append(os.environ.get("SLURM_PROCID", "0"))
    return all(int(rank) == 0 for rank in ranks)


def slurm_job_id() -> str:
    """This job's id as ``scontrol`` expects it: ``<array job>_<task>`` in an array."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID", "")


def update_manifest(
    run: Run, event: str, manifest: dict[str, Any] | None = None, **details: Any
) -> dict[str, Any]:
    """Record how to reproduce the run, and append ``event`` to its history."""
    if manifest is None:
        manifest = read_json(run.dir / "manifest.json") or {}
        manifest.update(
            command=[sys.executable, *sys.argv],
            hparams=run.hparams,
            seed=run.seed,
            git=git_state(),
            versions=package_versions(),
            host=socket.gethostname(),
            slurm={key: os.environ[key] for key in SLURM_VARIABLES if key in os.environ},
        )
        manifest.setdefault("history", [])
    slurm = {key: os.environ[key] for key in SLURM_VARIABLES if key in os.environ}
    entry = {"event": event, "time": _now(), "pid": os.getpid(), "host": socket.gethostname()}
    manifest["history"].append({**entry, **({"slurm": slurm} if slurm else {}), **details})
    write_json(run.dir / "manifest.json", manifest)
    return manifest


def git_state(max_diff_bytes: int = 100_000) -> dict[str, Any]:
    """Commit, dirtiness and (when small) the diff of the project's git tree."""

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        diff = git("diff", "HEAD")
        status = git("status", "--porcelain")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None}
    state: dict[str, Any] = {"commit": commit, "dirty": bool(status.strip())}
    if diff and len(diff) <= max_diff_bytes:
        state["diff"] = diff
    return state


def package_versions() -> dict[str, str]:
    import platform

    import numpy
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    lightning = sys.modules.get("pytorch_lightning")
    if lightning is not None:
        versions["pytorch_lightning"] = lightning.__version__
    return versions


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
