"""The ranks of a run on a cluster: SLURM's tasks become DDP ranks, and a dead rank is named."""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from protocol import ranks as ranks_module
from protocol.cluster import first_host, is_rank_zero, srun_layout
from protocol.files import write_json
from protocol.launch import _train_and_record  # how a run's end is recorded, without a process group
from protocol.ranks import Ranks, lost_ranks
from protocol.rundir import Run

LAYOUT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@pytest.fixture
def srun_task(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The variables srun gives task 5 of 8 (the second on its node), and none of torchrun's."""
    for name in LAYOUT:  # set, then unset: what srun_layout sets is undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
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


def test_slurm_wins_over_the_login_shell_and_torchrun_over_slurm(srun_task: pytest.MonkeyPatch) -> None:
    srun_task.setenv("MASTER_ADDR", "login7")  # sbatch passes on the shell's environment
    srun_task.delenv("SLURM_STEP_NODELIST")
    srun_task.setenv("SLURM_JOB_NODELIST", "n[4-5]")
    srun_layout()
    assert os.environ["MASTER_ADDR"] == "n4"
    for name in LAYOUT[:5]:
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
    [
        ("n[1-2]", "n1"),
        ("gpu[003-005,9],cpu1", "gpu003"),
        ("rack[1-2]-node[01-04],login", "rack1-node01"),
        ("a,b", "a"),
        ("alone", "alone"),
    ],
)
def test_the_first_host_of_a_node_list(nodes: str, first: str) -> None:
    assert first_host(nodes) == first


def test_lost_ranks_are_named_with_their_host_and_what_became_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranks_module, "SILENT_S", 0.5)
    here = socket.gethostname()
    ranks = Ranks(rank=0, hosts=[here, here, here, "n7", "n8"], launch="this")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has any more
    records = {
        1: {"host": here, "pid": os.getpid(), "ended": None},  # alive here, and beating
        2: {"host": here, "pid": dead.pid, "ended": None},  # killed
        3: {"host": "n7", "pid": 70, "ended": "OutOfMemoryError: CUDA out of memory"},
        4: {"host": "n8", "pid": 80, "ended": None},  # on another host, and silent
    }
    for rank, record in records.items():
        write_json(ranks.path(tmp_path, rank), {"rank": rank, "launch": "this", **record})
    with ThreadPoolExecutor() as pool:
        waiting = pool.submit(lost_ranks, tmp_path, ranks, wait=2.0)
        while not waiting.done():
            os.utime(ranks.path(tmp_path, 1))
            time.sleep(0.1)
        gone, failed = waiting.result()
    assert gone == {
        2: f"rank 2 on {here} (pid {dead.pid}) was killed (SIGKILL, out of memory?)",
        4: "rank 4 on n8 (pid 80) fell silent: killed, hung, or its node was lost",
    }
    assert failed == {3: "rank 3 on n7 failed: OutOfMemoryError: CUDA out of memory"}


def test_a_rank_that_beats_lives_whatever_its_clock_says(tmp_path: Path) -> None:
    ranks = Ranks(rank=0, hosts=["n1", "n2"], launch="this")
    path = ranks.path(tmp_path, 1)
    write_json(path, {"rank": 1, "launch": "this", "host": "n2", "pid": 5, "ended": None})
    os.utime(path, (0, 0))  # dated 1970: a host whose clock is far off
    with ThreadPoolExecutor() as pool:
        waiting = pool.submit(lost_ranks, tmp_path, ranks)
        time.sleep(0.2)
        os.utime(path)  # a beat
        assert waiting.result() == ({}, {})
    # a file of an earlier launch tells nothing of this one
    write_json(path, {"rank": 1, "launch": "before", "host": "n2", "pid": 5, "ended": "x"})
    assert lost_ranks(tmp_path, ranks, wait=0.5) == ({}, {})


def test_the_watcher_names_a_rank_silent_too_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranks_module, "BEAT_S", 0.05)
    monkeypatch.setattr(ranks_module, "GIVE_UP_S", 0.5)
    watcher = Ranks(rank=0, hosts=["n1", "n2"], launch="this")
    silent = {"rank": 1, "launch": "this", "host": "n2", "pid": 5, "ended": None}
    write_json(watcher.path(tmp_path, 1), silent)
    told: queue.Queue[dict[int, str]] = queue.Queue()
    ranks_module.start_beating(tmp_path, watcher, told.put)
    try:
        gone = told.get(timeout=10)
        assert gone == {1: "rank 1 on n2 (pid 5) fell silent: killed, hung, or its node was lost"}
    finally:
        watcher.stop.set()
    assert json.loads(watcher.path(tmp_path, 0).read_text())["ended"] is None  # it still beat


@pytest.mark.parametrize(
    "theirs, ours, reason",
    [
        (  # rank 1's own error, then the launcher's SIGTERM and a broken collective here
            "RuntimeError: CUDA error: an illegal memory access was encountered",
            RuntimeError("Connection closed by peer"),
            "rank 1 on n2 failed: RuntimeError: CUDA error: an illegal memory access was encountered; "
            "then rank 0 on n1: RuntimeError: Connection closed by peer",
        ),
        ("ValueError: a bug in the loop", ValueError("a bug in the loop"), "ValueError: a bug in the loop"),
    ],
)
def test_a_rank_that_failed_first_is_the_reason_even_after_a_sigterm(
    tmp_path: Path, theirs: str, ours: Exception, reason: str
) -> None:
    ranks = Ranks(rank=0, hosts=["n1", "n2"], launch="this")
    run = Run(task="t", name="r", dir=tmp_path / "r", args=argparse.Namespace(), hparams={}, ranks=ranks)
    write_json(ranks.path(run.dir, 1), {"rank": 1, "launch": "this", "host": "n2", "pid": 5, "ended": theirs})

    def train(run: Run) -> dict[str, float]:
        run.request_stop("SIGTERM")  # what torchrun or srun sends the ranks left
        raise ours

    assert _train_and_record(run, train) == 1
    assert sorted(path.name for path in run.dir.glob("*.out")) == ["failed.out"]
    assert json.loads((run.dir / "failed.out").read_text())["reason"] == reason
