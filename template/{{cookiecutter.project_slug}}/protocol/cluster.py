"""Run protocol, rarely edited: this process's rank, the signals that stop it, SLURM."""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
# How long a rank waits in a collective (or for the others to join) before it gives up: a rank
# that died, or a node gone, then ends the run instead of hanging it. Longer than the slowest
# checkpoint save, which the other ranks wait for at a barrier.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


def is_rank_zero() -> bool:
    """True outside distributed training and on its first process: the one that keeps the books.

    Read from the environment, so it holds before any process group exists:
    torchrun sets RANK; Lightning sets LOCAL_RANK and NODE_RANK on the processes
    it starts; a multi-task SLURM step numbers its tasks with SLURM_PROCID.
    """
    ranks = [env_int(key, 0) for key in ("RANK", "LOCAL_RANK", "NODE_RANK")]
    if env_int("SLURM_NTASKS", 1) > 1:
        ranks.append(env_int("SLURM_PROCID", 0))
    return all(rank == 0 for rank in ranks)


def env_int(name: str, default: int) -> int:
    """An integer from the environment; ``default`` when unset or not a number."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdecimal() else default


def srun_layout() -> None:
    """In a step ``srun`` started with several tasks, give each the variables torchrun would.

    One process per task, started by SLURM on every node: RANK, WORLD_SIZE and
    LOCAL_RANK come from SLURM_PROCID, SLURM_STEP_NUM_TASKS and SLURM_LOCALID;
    MASTER_ADDR is the step's first node and MASTER_PORT follows from the job id,
    so that two jobs sharing a node do not meet. SLURM's values win over any the
    environment holds already (sbatch passes on the login shell's). Under torchrun
    and outside such a step: nothing.
    """
    if launched_by_torchrun() or not in_srun_step():
        return
    nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "")
    os.environ["RANK"] = str(env_int("SLURM_PROCID", 0))
    os.environ["WORLD_SIZE"] = str(env_int("SLURM_STEP_NUM_TASKS", 1))
    os.environ["LOCAL_RANK"] = str(env_int("SLURM_LOCALID", 0))
    os.environ["MASTER_ADDR"] = first_host(nodes)
    os.environ["MASTER_PORT"] = str(15000 + env_int("SLURM_JOB_ID", 0) % 15000)


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[003-005,9],cpu1`` -> ``gpu003``,
    ``rack[1-2]-node[01-04]`` -> ``rack1-node01``."""
    depth, end = 0, len(nodelist)
    for index, char in enumerate(nodelist):  # the first host's pattern ends at a comma outside []
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            end = index
            break
    first = re.sub(r"\[([^]]*)\]", lambda match: re.split("[,-]", match.group(1))[0], nodelist[:end])
    return first or "localhost"


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ


def in_srun_step() -> bool:
    """Whether this is one of several tasks of an ``srun`` step (a job's batch script is none)."""
    return "SLURM_STEP_ID" in os.environ and env_int("SLURM_STEP_NUM_TASKS", 1) > 1


def cancel_srun_step() -> None:
    """End every task of this ``srun`` step, this one included, once a rank is gone: the ranks
    still waiting on it in a collective would otherwise wait out their timeout."""
    if not in_srun_step():
        return  # torchrun ends its other workers itself when one fails
    step = f"{os.environ.get('SLURM_JOB_ID', '')}.{os.environ.get('SLURM_STEP_ID', '')}"
    try:
        subprocess.run(["scancel", step], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass  # the collectives' timeout ends them instead


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
