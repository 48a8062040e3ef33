"""A sweep submitted to a real (one-node, loopback) SLURM cluster survives preemption.

The tests start a private cluster themselves with tests/slurm/start-slurm.sh, which
installs SLURM from Debian's packages when missing (so they need root, and apt-get
unless SLURM is installed). It runs from a configuration of its own in a temporary
directory, with its own munged and free ports, and writes nothing outside it; the tests,
sbatch, squeue, scancel and the jobs find it through SLURM_CONF. stop-slurm.sh then stops
what was started and the directory is deleted.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import FRAMEWORKS, run_python

SLURM_SCRIPTS = Path(__file__).parent / "slurm"

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, for the cluster's slurmctld and slurmd (not the system's 6817/6818)."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("starting a SLURM cluster needs root (the daemons, apt-get)")
    # short, under /tmp: munged's socket path in it must stay under 108 bytes
    base = tempfile.mkdtemp(prefix="dls-slurm-", dir="/tmp")
    env = {**os.environ, "SLURM_BASE": base}
    env["SLURMCTLD_PORT"], env["SLURMD_PORT"] = map(str, free_ports(2))

    def script(name: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SLURM_SCRIPTS / name)], env=env, capture_output=True, text=True, timeout=timeout
        )

    try:
        started = script("start-slurm.sh", timeout=900)
        if started.returncode == 3:  # SLURM is missing and there is no apt-get to install it
            pytest.skip(started.stderr.strip())
        assert started.returncode == 0, started.stdout + started.stderr
        # its last line is `export SLURM_CONF=...`; the subprocesses of the tests inherit it
        name, _, conf = shlex.split(started.stdout.strip().splitlines()[-1])[-1].partition("=")
        assert name == "SLURM_CONF" and Path(conf).is_file(), started.stdout
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SLURM_CONF", conf)
            yield
    finally:
        script("stop-slurm.sh", timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def squeue(job: str) -> list[str]:
    result = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True)
    return result.stdout.split("\n") if result.stdout.strip() else []


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_preempted_array_task_requeues_and_resumes(slurm_cluster: None, new_project, framework: str) -> None:
    root = new_project(f"slurm_{framework}", framework=framework).root
    train_args = ["--epochs", "24", "--batch_size", "16", "--hidden_size", "16"]
    submit = run_python(
        ["scripts/sweep.py", "task1", "--grid", "seed=0,1", "--slurm", "--time", "10", "--", *train_args],
        cwd=root,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    job = submit.stdout.split("submitted job array ")[1].split()[0]
    script = next((root / "experiments" / "task1" / "slurm").glob("sweep-*.sbatch")).read_text()
    assert "#SBATCH --array=0-1" in script and "#SBATCH --signal=B:USR1@" in script

    results = root / "experiments" / "task1" / "results"
    preempted = results / "batch_size-16_epochs-24_hidden_size-16_seed-0"
    checkpoint = preempted / "checkpoints" / ("last.ckpt" if framework == "lightning" else "last.pt")
    wait_for(checkpoint.exists, "the first checkpoint of array task 0")
    # what SLURM does before a time limit or a preemption, as the notes on these machines verified
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job}_0"], check=True)
    wait_for(lambda: not squeue(job), "the array to finish")

    for seed in (0, 1):
        run_dir = results / f"batch_size-16_epochs-24_hidden_size-16_seed-{seed}"
        assert (run_dir / "finished.out").exists(), sorted(path.name for path in run_dir.iterdir())
    history = json.loads((preempted / "manifest.json").read_text())["history"]
    assert [event["event"] for event in history] == ["start", "interrupted", "resume", "finished"]
    assert history[1]["signal"] == "SIGUSR1"
    assert history[2]["slurm"]["SLURM_RESTART_COUNT"] == "1"
    assert history[2]["slurm"]["SLURM_ARRAY_TASK_ID"] == "0"
    assert history[1]["step"] > 0  # resumed from where it stopped, not from scratch
    log = (root / "experiments" / "task1" / "slurm" / f"{job}_0.out").read_text()
    assert "requeued" in log and "resuming" in log
    assert "resumed from" in log
