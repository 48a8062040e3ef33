"""Run protocol, rarely edited: this process's rank, the signals that stop it, SLURM."""

from __future__ import annotations

import os
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
