"""A run's lock is alive while it beats, whatever the clocks of the hosts that read it say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlscaffold.create import create_project

from conftest import run_cli, run_python

ANOTHER_HOST = {"pid": 4242, "host": "node-with-a-fast-clock", "process_start": 1, "time": "later"}
AN_HOUR = 3600


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    root = create_project({"project_name": "skew", "framework": "pytorch"}, tmp_path, use_git=False).root
    run = root / "experiments" / "task1" / "results" / "skewed"
    run.mkdir(parents=True)
    (run / "run.lock").write_text(json.dumps(ANOTHER_HOST))
    return run


def date(lock: Path, offset: float) -> None:
    os.utime(lock, (time.time() + offset, time.time() + offset))


def beater(lock: Path) -> subprocess.Popen[bytes]:
    """The heartbeat of a host whose clock is an hour ahead: it touches the lock, dated in the future."""
    code = (
        "import os, sys, time\n"
        "while True:\n"
        f"    os.utime(sys.argv[1], (time.time() + {AN_HOUR}, time.time() + {AN_HOUR}))\n"
        "    time.sleep(0.3)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(lock)])


def test_status_shows_a_lock_dated_in_the_future_as_running(run_dir: Path) -> None:
    date(run_dir / "run.lock", AN_HOUR)
    result = run_cli("status", str(run_dir.parents[3]), "--json")
    (run,) = json.loads(result.output)
    assert run["state"] == "running" and "dated ahead of this clock" in run["reason"]


def test_a_beating_lock_dated_in_the_future_keeps_a_second_process_out(run_dir: Path) -> None:
    beating = beater(run_dir / "run.lock")
    try:
        root = run_dir.parents[3]
        result = run_python(["experiments/task1/train.py", "--run_name", "skewed", "--epochs", "1"], cwd=root)
    finally:
        beating.kill()
        beating.wait()
    assert result.returncode == 3, result.stdout + result.stderr
    assert "is being trained by pid 4242 on node-with-a-fast-clock" in result.stdout
    assert json.loads((run_dir / "run.lock").read_text()) == ANOTHER_HOST  # never taken over


LIVE_OWNER = """
import sys
from pathlib import Path
sys.path.insert(0, ".")
import protocol.lock as lock
lock.HEARTBEAT_S = 0.5
print(lock.live_owner(Path(sys.argv[1])))
"""


@pytest.mark.parametrize("offset", [AN_HOUR, -AN_HOUR])
def test_a_lock_far_off_this_clock_is_watched_alive_if_it_beats_and_dead_if_not(
    run_dir: Path, offset: float
) -> None:
    root = run_dir.parents[3]
    date(run_dir / "run.lock", offset)
    silent = run_python(["-c", LIVE_OWNER, str(run_dir)], cwd=root)
    assert silent.stdout.strip().splitlines()[-1] == "None", silent.stdout + silent.stderr
    beating = beater(run_dir / "run.lock")
    try:
        alive = run_python(["-c", LIVE_OWNER, str(run_dir)], cwd=root)
    finally:
        beating.kill()
        beating.wait()
    assert alive.stdout.strip().splitlines()[-1] == "pid 4242 on node-with-a-fast-clock"


CLAIM = """
import argparse, sys
from pathlib import Path
sys.path.insert(0, ".")
import protocol.lock
from protocol.launch import claim
from protocol.rundir import Run
protocol.lock.HEARTBEAT_S = float(sys.argv[2])
args = argparse.Namespace(force=False, resume_failed=False, retry_failed=False)
run_dir = Path(sys.argv[1])
print(claim(Run(task="task1", name=run_dir.name, dir=run_dir, args=args, hparams={})), flush=True)
"""


def test_watching_one_silent_lock_holds_up_no_other_run(run_dir: Path) -> None:
    root = run_dir.parents[3]
    date(run_dir / "run.lock", -AN_HOUR)  # silent for an hour, or a host whose clock is behind
    watcher = subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(run_dir), "6"], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert "watching whether it still beats" in watcher.stdout.readline()
        other = run_python(["-c", CLAIM, str(run_dir.with_name("another")), "6"], cwd=root)
        assert other.stdout.strip() == "start", other.stdout + other.stderr
        assert watcher.poll() is None  # the other run was claimed while this lock was still watched
    finally:
        watcher.kill()
        watcher.wait()


def test_a_lock_naming_its_host_with_terminal_escapes_is_printed_escaped(run_dir: Path) -> None:
    (run_dir / "run.lock").write_text(json.dumps({**ANOTHER_HOST, "host": "node7\u001b[2J\u001b[31mEVIL"}))
    date(run_dir / "run.lock", -AN_HOUR)
    result = run_python(["-c", LIVE_OWNER, str(run_dir)], cwd=run_dir.parents[3])
    assert "\x1b" not in result.stdout and "node7\\x1b[2J" in result.stdout, result.stdout
