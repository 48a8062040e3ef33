"""Run protocol, rarely edited: this process's rank, the signals that stop it, SLURM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


def is_rank_zero() -> bool:
    """True outside distributed training and on its first process: the one that keeps the books.

    Read from the environment, so it holds before any process group exists:
    torchrun sets RANK; Lightning sets LOCAL_RANK and NODE_RANK on the processes
    it starts; a multi-task SLURM step numbers its tasks with SLURM_PROCID.
    """
    ranks = [os.environ.get(key, "0") for key in ("RANK", "LOCAL_RANK", "NODE_RANK")]
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        ranks.append(os.environ.get("SLURM_PROCID", "0"))
    return all(int(rank) == 0 for rank in ranks)


def srun_layout() -> None:
    """In a step ``srun`` started with several tasks, give each the variables torchrun would.

    One process per task, started by SLURM on every node: RANK, WORLD_SIZE and
    LOCAL_RANK come from SLURM_PROCID, SLURM_STEP_NUM_TASKS and SLURM_LOCALID;
    MASTER_ADDR is the step's first node and MASTER_PORT follows from the job id,
    so that two jobs sharing a node do not meet. Values set already (by the job
    script, or torchrun itself) are kept. Outside such a step: nothing.
    """
    if launched_by_torchrun() or not in_srun_step():
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_STEP_NUM_TASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ.setdefault("MASTER_ADDR", first_host(os.environ.get("SLURM_STEP_NODELIST", "")))
    os.environ.setdefault("MASTER_PORT", str(15000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 15000))


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[003-005,9],cpu1`` -> ``gpu003``."""
    match = re.match(r"([^,\[]*)(?:\[([^,\]-]*))?", nodelist)
    return "".join(match.groups("")) if match and match.group(1) else "localhost"


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def in_srun_step() -> bool:
    """Whether this is one of several tasks of an ``srun`` step (a job's batch script is none)."""
    return "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


def install_stop_handlers(on_stop: Callable[[str], None]) -> dict[int, Any]:
    """Turn SIGINT, SIGTERM and SIGUSR1 into ``on_stop(signal name)``: stop at the next safe point.

    A second Ctrl-C stops at once. Returns the previous handlers.
    """
    received: list[str] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)
        on_stop(received[-1])

    return {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}


def restore_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def signal_exit_code(signal_name: str | None) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended."""
    return 128 + int(getattr(signal, signal_name or "SIGTERM"))


def slurm_job_id() -> str:
    """This job's id as ``scontrol`` expects it: ``<array job>_<task>`` in an array."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID", "")


def slurm_ids() -> dict[str, str]:
    return {key: os.environ[key] for key in SLURM_VARIABLES if key in os.environ}


def requeue_if_slurm(signal_name: str | None) -> None:
    """On SLURM's pre-timeout or preemption signal, put this job back in the queue.

    The requeued job runs the same command, which finds ``interrupted.out`` and
    resumes from the checkpoint written when the signal arrived.
    """
    job = slurm_job_id()
    if signal_name != "SIGUSR1" or not job:
        return
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"SLURM job {job} requeue failed: {error}")
        return
    outcome = "requeued" if result.returncode == 0 else f"requeue failed: {result.stderr.strip()}"
    print(f"SLURM job {job} {outcome}")
