"""The ranks of a run on a cluster: SLURM's tasks become DDP ranks, and a dead rank is named."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from protocol.cluster import first_host, is_rank_zero, srun_layout
from protocol.files import write_json
from protocol.ranks import Ranks, lost_ranks

LAYOUT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@pytest.fixture
def srun_task(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The variables srun gives task 5 of 8 (the second on its node), and none of torchrun's."""
    for name in LAYOUT:
        monkeypatch.delenv(name, raising=False)
    tasks = {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "8", "SLURM_PROCID": "5"}
    tasks |= {"SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "gpu[003-006]", "SLURM_JOB_ID": "123456"}
    for name, value in tasks.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_an_srun_task_is_a_ddp_rank(srun_task: pytest.MonkeyPatch) -> None:
    srun_layout()
    assert [os.environ[name] for name in LAYOUT[:4]] == ["5", "8", "1", "gpu003"]
    assert os.environ["MASTER_PORT"] == str(15000 + 123456 % 15000)  # another job, another port
    assert not is_rank_zero()


def test_what_the_job_script_or_torchrun_set_is_kept(srun_task: pytest.MonkeyPatch) -> None:
    srun_task.setenv("MASTER_PORT", "29555")
    srun_layout()
    assert os.environ["MASTER_PORT"] == "29555"
    for name in LAYOUT[:4]:
        srun_task.delenv(name)
    srun_task.setenv("TORCHELASTIC_RUN_ID", "x")  # torchrun inside the step numbers its own workers
    srun_layout()
    assert "RANK" not in os.environ
    srun_task.delenv("TORCHELASTIC_RUN_ID")
    srun_task.delenv("SLURM_STEP_ID")  # the job's batch script, outside any srun
    srun_layout()
    assert "RANK" not in os.environ


@pytest.mark.parametrize(
    "nodes, first",
    [("n[1-2]", "n1"), ("gpu[003-005,9],cpu1", "gpu003"), ("a,b", "a"), ("alone", "alone")],
)
def test_the_first_host_of_a_node_list(nodes: str, first: str) -> None:
    assert first_host(nodes) == first


def test_lost_ranks_are_named_with_their_host_and_what_became_of_them(tmp_path: Path) -> None:
    here = socket.gethostname()
    ranks = Ranks(rank=0, hosts=[here, here, here, "n7", "n8"], launch="this")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has any more
    records = {
        1: {"host": here, "pid": os.getpid(), "ended": None},  # alive, here
        2: {"host": here, "pid": dead.pid, "ended": None},  # killed
        3: {"host": "n7", "pid": 70, "ended": "OutOfMemoryError: CUDA out of memory"},
        4: {"host": "n8", "pid": 80, "ended": None},  # silent for a minute: its node is gone
    }
    for rank, record in records.items():
        write_json(tmp_path / "ranks" / f"{rank}.json", {"rank": rank, "launch": "this", **record})
    minute_ago = time.time() - 60
    os.utime(tmp_path / "ranks" / "4.json", (minute_ago, minute_ago))
    lost = lost_ranks(tmp_path, ranks, wait=0)
    assert sorted(lost) == [2, 3, 4]
    assert lost[2] == f"rank 2 on {here} (pid {dead.pid}) was killed (SIGKILL, out of memory?)"
    assert lost[3] == "rank 3 on n7 failed: OutOfMemoryError: CUDA out of memory"
    assert lost[4].startswith("rank 4 on n8 (pid 80) fell silent")
    # a file of an earlier launch tells nothing of this one
    write_json(tmp_path / "ranks" / "3.json", {"rank": 3, "launch": "before", "host": "n7", "ended": "x"})
    assert sorted(lost_ranks(tmp_path, ranks, wait=0)) == [2, 4]
