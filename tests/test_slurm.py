"""Runs that span two nodes of a real SLURM cluster: preempted and resumed exactly, a dead rank named.

The tests start a private two-node cluster themselves with tests/slurm/start-slurm-2node.sh:
two slurmd, each in network, hostname and mount namespaces of its own (n1, n2, with
addresses only inside namespaces the script made), a slurmctld, a munged, a configuration
and state in a temporary directory. It installs SLURM from Debian's packages when missing,
so the tests need root (and apt-get unless SLURM is installed). Clients run through the
wrappers it writes, found first on PATH; stop-slurm-2node.sh removes every namespace,
link and process after. Both nodes have one CPU: a two-node job has the cluster to itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import FRAMEWORKS, run_cli, run_python

SLURM_SCRIPTS = Path(__file__).parent / "slurm"
TRAIN = ["--epochs", "8", "--batch_size", "16", "--hidden_size", "16", "--log_every_n_steps", "5"]

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("starting a SLURM cluster needs root (namespaces, the daemons, apt-get)")
    tools = [tool for tool in ("ip", "nsenter", "unshare") if shutil.which(tool) is None]
    if tools:
        pytest.skip(f"the two-node cluster needs {', '.join(tools)} (iproute2, util-linux)")
    probe = subprocess.run(["unshare", "--net", "--uts", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:  # a container without the capability: not a failure of the project
        pytest.skip(f"network namespaces are not allowed here: {probe.stderr.strip()}")
    # short, under /tmp: munged's socket path in it must stay under 108 bytes
    base = tempfile.mkdtemp(prefix="dls2n-", dir="/tmp")
    env = {
        **os.environ,
        "SLURM2N_BASE": base,
        "SLURM2N_PREFIX": f"t{random.randrange(16**6):06x}",  # namespaces and links of its own
        "SLURM2N_SUBNET": f"10.{random.randrange(232, 250)}.{random.randrange(256)}",
        "CRED_EXPIRE": "5",  # how long a requeued job waits before it starts again: SLURM's least
    }

    def script(name: str, timeout: float, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SLURM_SCRIPTS / name)],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    try:
        started = script("start-slurm-2node.sh", timeout=900)
        if started.returncode == 3:  # SLURM is missing and there is no apt-get to install it
            pytest.skip(started.stderr.strip())
        assert started.returncode == 0, started.stdout + started.stderr
        with pytest.MonkeyPatch.context() as patch:  # the tests' subprocesses and the jobs inherit both
            patch.setenv("SLURM_CONF", f"{base}/slurm.conf")
            patch.setenv("PATH", f"{base}/bin:{os.environ['PATH']}")
            yield
    finally:
        script("stop-slurm-2node.sh", timeout=180, PURGE="1")
        shutil.rmtree(base, ignore_errors=True)


def squeue(job: str) -> list[str]:
    result = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True)
    return result.stdout.split("\n") if result.stdout.strip() else []


def wait_for(condition: Callable[[], object], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def submit(root: Path, *args: str) -> str:
    """sweep.py --slurm over two nodes, one process on each; returns the job array's id."""
    command = ["scripts/sweep.py", "task1", "--slurm", "--nodes", "2", "--time", "10", *args]
    result = run_python(command, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split("submitted job array ")[1].split()[0]


def rank_record(run_dir: Path, rank: int) -> dict:
    path = run_dir / "ranks" / f"{rank}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def status_row(root: Path, run_dir: Path) -> str:
    result = run_cli("status", cwd=root)
    assert result.exit_code == 0, result.output
    return next(line for line in result.output.splitlines() if f" {run_dir.name} " in line)


def final_weights_differ(root: Path, framework: str, first: Path, second: Path) -> float:
    """The largest difference between two runs' final weights, read by the project's Python."""
    name, key = ("last.ckpt", "state_dict") if framework == "lightning" else ("last.pt", "model")
    code = (
        "import sys, torch\n"
        f"a, b = (torch.load(p, weights_only=True)[{key!r}] for p in sys.argv[1:])\n"
        "assert a.keys() == b.keys()\n"
        "print(max((a[k].double() - b[k].double()).abs().max().item() for k in a))\n"
    )
    paths = [str(run / "checkpoints" / name) for run in (first, second)]
    result = run_python(["-c", code, *paths], cwd=root)
    assert result.returncode == 0, result.stderr
    return float(result.stdout)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_two_node_run_preempted_requeues_and_resumes_exactly(
    slurm_cluster: None, new_project, framework: str
) -> None:
    root = new_project(f"nodes_{framework}", framework=framework).root
    # one run twice, in two results directories: array task 0 is preempted, task 1 is not
    preempted, reference = root / "experiments" / "task1" / "results", root / "reference"
    job = submit(root, "--grid", f"results_dir={preempted},{reference}", "--", *TRAIN)
    script = next((root / "experiments" / "task1" / "slurm").glob("sweep-*.sbatch")).read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --signal=USR1@" in script and " exec srun " in script
    run_dir = preempted / "batch_size-16_epochs-8_hidden_size-16_seed-0"

    wait_for(lambda: (run_dir / "progress.json").exists(), "the first epoch of the preempted run")
    row = status_row(root, run_dir)
    assert " running " in row and "n1, n2 (2 processes)" in row, row
    # what SLURM does before a time limit or a preemption: SIGUSR1 to every process of the job
    subprocess.run(["scancel", "--signal=USR1", f"{job}_0"], check=True)
    wait_for(lambda: not squeue(job), "the array to finish")

    for run in (run_dir, reference / run_dir.name):
        assert (run / "finished.out").exists(), sorted(path.name for path in run.iterdir())
    history = json.loads((run_dir / "manifest.json").read_text())["history"]
    assert [event["event"] for event in history] == ["start", "interrupted", "resume", "finished"]
    assert history[1]["signal"] == "SIGUSR1" and history[1]["step"] > 0
    assert history[2]["slurm"]["SLURM_RESTART_COUNT"] == "1"  # requeued once, by rank 0
    for event in history[0], history[2]:
        assert event["world_size"] == 2 and event["nodes"] == ["n1", "n2"] and event["ranks"] == ["n1", "n2"]
    assert all(rank_record(run_dir, rank)["ended"] == "finished" for rank in (0, 1))
    log = (root / "experiments" / "task1" / "slurm" / f"{job}_0.out").read_text()
    assert log.count("requeued") == 1 and "resumed from" in log
    # the same final weights as the run never stopped, on the same two ranks
    difference = final_weights_differ(root, framework, run_dir, reference / run_dir.name)
    assert difference <= (1e-6 if framework == "lightning" else 0.0), difference
    assert " finished " in status_row(root, run_dir)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_killed_rank_ends_the_job_with_failed_out_naming_it(
    slurm_cluster: None, new_project, framework: str
) -> None:
    root = new_project(f"killed_{framework}", framework=framework).root
    job = submit(root, "--", "--epochs", "400", "--batch_size", "16", "--hidden_size", "16")
    run_dir = root / "experiments" / "task1" / "results" / "batch_size-16_epochs-400_hidden_size-16_seed-0"
    wait_for(lambda: (run_dir / "progress.json").exists(), "the first epoch")
    # rank 1 dies under rank 0, which keeps the books; rank 0 dies under rank 1, which then does
    victim_rank, host = (1, "n2") if framework == "pytorch" else (0, "n1")
    victim = rank_record(run_dir, victim_rank)
    assert victim["host"] == host and rank_record(run_dir, 1 - victim_rank)["host"] != host
    lock = json.loads((run_dir / "run.lock").read_text())
    assert lock["world_size"] == 2 and lock["nodes"] == ["n1", "n2"] and lock["slurm_job_id"] == f"{job}_0"

    os.kill(victim["pid"], signal.SIGKILL)  # as the out-of-memory killer would
    killed = time.monotonic()
    wait_for(lambda: (run_dir / "failed.out").exists(), "failed.out", timeout=120)
    noticed = time.monotonic() - killed
    wait_for(lambda: not squeue(job), "the job to end", timeout=120)
    failed = json.loads((run_dir / "failed.out").read_text())
    named = f"rank {victim_rank} on {host} (pid {victim['pid']})"
    assert failed["reason"].startswith(named), failed["reason"]
    assert noticed < 60, noticed  # the rank's silence, not a collective's ten-minute timeout
    assert not (run_dir / "run.lock").exists()
    row = status_row(root, run_dir)
    assert " failed " in row and f"rank {victim_rank} on {host}" in row, row


def test_lightning_under_torchrun_in_an_allocation_keeps_torchrun_ranks(
    slurm_cluster: None, new_project
) -> None:
    """In a job of one task per node, Lightning would take torchrun's two processes for SLURM's one."""
    root = new_project("torchrun_lightning", framework="lightning").root
    train = ["--epochs", "2", "--batch_size", "16", "--hidden_size", "16", "--run_name", "elastic"]
    ddp = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["experiments/task1/train.py", *train, *ddp]
    log = root / "torchrun.out"
    wrap = f"cd {shlex.quote(str(root))} && exec {shlex.join(command)}"
    sbatch = ["sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=1", f"--output={log}", "--wrap", wrap]
    result = subprocess.run(sbatch, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: not squeue(result.stdout.strip()), "the job to end")
    run_dir = root / "experiments" / "task1" / "results" / "elastic"
    assert (run_dir / "finished.out").exists(), log.read_text()
    start = json.loads((run_dir / "manifest.json").read_text())["history"][0]
    assert start["world_size"] == 2 and start["ranks"] == ["n1", "n1"]
    assert [rank_record(run_dir, rank)["ended"] for rank in (0, 1)] == ["finished", "finished"]


def test_a_search_on_two_array_tasks_survives_a_preemption(slurm_cluster: None, new_project) -> None:
    """search.py --slurm --parallel 2: two array tasks, one per node, pull trials from one study;
    the trial preempted in task 0 is checkpointed, the task requeued, the trial resumed."""
    root = new_project("search_slurm", framework="pytorch").root
    space = {"learning_rate": {"type": "float", "low": 1e-3, "high": 0.05, "log": True}}
    (root / "space.json").write_text(json.dumps(space))
    command = ["scripts/search.py", "task1", "--space", "space.json", "--trials", "4", "--pruner", "none"]
    command += ["--slurm", "--parallel", "2", "--time", "10", "--", *TRAIN[2:], "--epochs", "3"]
    submitted = run_python(command, cwd=root)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = submitted.stdout.split("submitted job array ")[1].split(":")[0]
    results = root / "experiments" / "task1" / "results"

    def training_in_task_0() -> Path | None:
        for run in results.glob("space-trial*"):
            with contextlib.suppress(OSError, ValueError):
                lock = json.loads((run / "run.lock").read_text())
                if lock.get("slurm_job_id") == f"{job}_0" and (run / "progress.json").exists():
                    return run
        return None

    wait_for(training_in_task_0, "a trial of array task 0 past its first epoch")
    preempted = training_in_task_0()
    assert preempted is not None
    subprocess.run(["scancel", "--signal=USR1", f"{job}_0"], check=True)  # to the job step: train.py
    summary = root / "experiments" / "task1" / "searches" / "space" / "trials.json"

    def complete() -> bool:
        with contextlib.suppress(OSError, ValueError):
            trials = json.loads(summary.read_text())["trials"]
            return len(trials) == 4 and all(trial["state"] == "complete" for trial in trials)
        return False

    wait_for(lambda: complete() and not squeue(job), "four complete trials and the array's end")
    events = [entry["event"] for entry in json.loads((preempted / "manifest.json").read_text())["history"]]
    assert events == ["start", "interrupted", "resume", "finished"], events
    tasks = set()
    for run in sorted(results.glob("space-trial*")):
        assert (run / "finished.out").exists(), run
        history = json.loads((run / "manifest.json").read_text())["history"]
        tasks |= {entry["slurm"]["SLURM_ARRAY_TASK_ID"] for entry in history}
    assert tasks == {"0", "1"}  # both array tasks trained trials
    assert len(list(results.glob("space-trial*"))) == 4
    status = run_cli("status", cwd=root)
    line = next(line for line in status.output.splitlines() if line.split()[:2] == ["task1", "space"])
    assert line.split()[2:6] == ["4/4", "4", "0", "0"], status.output
