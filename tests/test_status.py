"""``dlscaffold status`` reads run directories as the generated projects write them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def write(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def progress(epoch: int, value: float) -> dict[str, object]:
    return {"epoch": epoch, "step": epoch * 10, "metrics": {"val_acc": value}, "main_metric": "val_acc"}


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def project(new_project) -> Path:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    write(results / "done" / "progress.json", progress(20, 0.93))
    write(
        results / "done" / "finished.out",
        {"state": "finished", "metrics": {"val_acc": 0.93}, **progress(20, 0.93)},
    )
    write(
        results / "broken" / "failed.out",
        {"state": "failed", "reason": "RunDiverged: loss became nan at step 7"},
    )
    write(results / "stopped" / "progress.json", progress(3, 0.7))
    write(results / "stopped" / "interrupted.out", {"state": "interrupted", "reason": "SIGTERM: at step 31"})
    alive = {"pid": os.getpid(), "host": socket.gethostname()}
    write(results / "alive" / "run.lock", alive)
    write(results / "alive" / "progress.json", progress(2, 0.6))
    write(results / "killed" / "run.lock", {"pid": dead_pid(), "host": socket.gethostname()})
    write(results / "killed" / "hparams.json", {})
    (results / "empty").mkdir()
    write(results / "garbled" / "finished.out", "{not json")
    write(results / "garbled" / "progress.json", '{"epoch": ')
    write(root / "experiments" / "other" / "results" / "run" / "finished.out", {"state": "finished"})
    return root


def test_json_lists_every_run_with_its_state(cli, project: Path) -> None:
    result = cli("status", str(project), "--json")
    assert result.exit_code == 0, result.output
    runs = {(run["task"], run["run"]): run for run in json.loads(result.output)}
    states = {key[1]: run["state"] for key, run in runs.items() if key[0] == "task1"}
    assert states == {
        "alive": "running",
        "broken": "failed",
        "done": "finished",
        "empty": "incomplete",
        "garbled": "finished",
        "killed": "interrupted",
        "stopped": "interrupted",
    }
    assert runs["other", "run"]["state"] == "finished"
    assert runs["task1", "done"]["metric"] == pytest.approx(0.93)
    assert runs["task1", "done"]["epoch"] == 20
    assert runs["task1", "broken"]["reason"] == "RunDiverged: loss became nan at step 7"
    assert "malformed" in runs["task1", "garbled"]["reason"]
    assert "died" in runs["task1", "killed"]["reason"]


def test_table_shows_progress_metric_and_reason(cli, project: Path) -> None:
    result = cli("status", cwd=project / "experiments")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["TASK", "RUN", "STATE", "EPOCH", "STEP", "METRIC", "UPDATED", "REASON"]
    done = next(line for line in lines if " done " in line)
    assert "finished" in done and "20" in done and "val_acc=0.9300" in done
    assert "loss became nan" in next(line for line in lines if " broken " in line)


def test_task_filter(cli, project: Path) -> None:
    runs = json.loads(cli("status", str(project), "--task", "other", "--json").output)
    assert [(run["task"], run["run"]) for run in runs] == [("other", "run")]


def test_no_runs_yet(cli, new_project) -> None:
    result = cli("status", str(new_project().root))
    assert result.exit_code == 0 and "No runs yet" in result.output


def test_outside_a_project(cli, tmp_path: Path) -> None:
    result = cli("status", str(tmp_path))
    assert result.exit_code != 0 and "not inside a dlscaffold project" in result.output


def test_status_never_imports_torch(project: Path) -> None:
    code = (
        "import sys; from dlscaffold.cli import main\n"
        "try:\n    main(['status', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code, str(project)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_runs_that_differ_only_by_seed_are_summarised(cli, new_project) -> None:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    for seed, value in ((0, 0.90), (1, 0.92), (2, 0.94)):
        flag = {"state": "finished", **progress(20, value)}
        write(results / f"learning_rate-0.01_seed-{seed}" / "finished.out", flag)
    write(results / "learning_rate-0.1_seed-0" / "finished.out", {"state": "finished", **progress(20, 0.5)})

    runs = json.loads(cli("status", str(root), "--json").output)
    grouped = [run for run in runs if run["group"] == "learning_rate-0.01"]
    assert len(grouped) == 3
    assert all(run["group_size"] == 3 for run in grouped)
    assert grouped[0]["group_mean"] == pytest.approx(0.92)
    assert grouped[0]["group_std"] == pytest.approx(0.02)
    alone = next(run for run in runs if run["run"] == "learning_rate-0.1_seed-0")
    assert alone["group_size"] == 1 and alone["group_std"] is None

    table = cli("status", str(root)).output
    assert "differ only by seed" in table
    assert "val_acc=0.9200 ± 0.0200" in table


def strict_json(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} in the output")

    return json.loads(text, parse_constant=refuse)


def test_hostile_run_files_are_reported_and_never_hang(cli, new_project) -> None:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    write(
        results / "nan" / "finished.out",
        '{"state": "finished", "epoch": 3, "metrics": {"acc": NaN}, "main_metric": "acc"}',
    )
    write(
        results / "huge-int" / "progress.json",
        {"epoch": 10**400, "metrics": {"acc": 10**400}, "main_metric": "acc"},
    )
    write(results / "wrong-types" / "failed.out", '["a list", "not an object"]')
    write(results / "wrong-types" / "progress.json", {"epoch": "3", "metrics": "acc", "main_metric": ["acc"]})
    write(results / "fifo" / "hparams.json", "{}")
    os.mkfifo(results / "fifo" / "progress.json")
    os.mkfifo(results / "fifo" / "interrupted.out")
    write(results / "device" / "hparams.json", "{}")
    (results / "device" / "progress.json").symlink_to("/dev/zero")
    (results / "dangling").mkdir()
    (results / "dangling" / "finished.out").symlink_to(results / "nowhere")
    write(results / "big" / "progress.json", '{"epoch": 1, "pad": "' + "x" * (2 << 20) + '"}')
    write(results / "bad-locks" / "run.lock", {"pid": 0, "host": socket.gethostname()})
    write(results / "pid-true" / "run.lock", {"pid": True, "host": socket.gethostname()})
    write(results / "pid-huge" / "run.lock", {"pid": 10**30, "host": socket.gethostname()})
    write(
        results / "reason\x1b[2Jescape" / "failed.out",
        {"state": "failed", "reason": "line one\nline two\x07"},
    )
    (results / os.fsdecode(b"undecodable-\xff")).mkdir()

    table = cli("status", str(root))
    assert table.exit_code == 0, table.output
    assert "Traceback" not in table.output and "\x1b" not in table.output and "\x07" not in table.output
    rows = {line.split()[1]: line for line in table.output.splitlines()[1:] if line.strip()}
    assert "finished.out is malformed" in rows["dangling"]
    assert "failed.out is malformed" in rows["wrong-types"]
    assert "interrupted" in rows["fifo"]
    assert "undecodable-\ufffd" in rows

    runs = {run["run"]: run for run in strict_json(cli("status", str(root), "--json").output)}
    assert runs["nan"]["state"] == "finished" and runs["nan"]["reason"] == "finished.out is malformed"
    assert runs["huge-int"]["epoch"] is None and runs["huge-int"]["metric"] is None
    assert runs["big"]["epoch"] is None
    for name in ("bad-locks", "pid-true", "pid-huge"):
        assert runs[name]["state"] != "running", name
    assert runs["reason\\x1b[2Jescape"]["reason"] == "line one\\nline two\\x07"


def test_unknown_task_is_named(cli, project: Path) -> None:
    result = cli("status", str(project), "--task", "nosuch")
    assert result.exit_code == 2
    assert "no task 'nosuch' (its tasks: other, task1)" in result.output


def test_liveness_of_locks_from_this_host_other_hosts_and_slurm(
    cli, new_project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    here = socket.gethostname()
    write(results / "reused-pid" / "run.lock", {"pid": os.getpid(), "process_start": 1, "host": here})
    write(results / "pid-1" / "run.lock", {"pid": 1, "process_start": 1, "host": here})
    write(results / "fresh-elsewhere" / "run.lock", {"pid": 5, "host": "node-7"})
    write(results / "silent-elsewhere" / "run.lock", {"pid": 5, "host": "node-7"})
    ten_minutes_ago = time.time() - 600
    os.utime(results / "silent-elsewhere" / "run.lock", (ten_minutes_ago, ten_minutes_ago))
    write(results / "slurm-running" / "run.lock", {"pid": 5, "host": "node-8", "slurm_job_id": "77"})
    write(results / "slurm-gone" / "run.lock", {"pid": 5, "host": "node-8", "slurm_job_id": "78"})
    array_task = {"pid": 5, "host": "n1", "slurm_job_id": "80_1", "world_size": 8, "nodes": ["n1", "n2"]}
    write(results / "slurm-array-task" / "run.lock", array_task)
    # rank 0 still beats, rank 1 stopped without saying it ended: its node died
    write(results / "rank-silent" / "run.lock", {"pid": 5, "host": "node-7", "world_size": 2})
    write(results / "rank-silent" / "ranks" / "1.json", {"rank": 1, "host": "node-9", "ended": None})
    os.utime(results / "rank-silent" / "ranks" / "1.json", (ten_minutes_ago, ten_minutes_ago))
    (results / "rank-silent" / "ranks" / "2.json").mkdir()  # not a file: passed over
    os.mkfifo(results / "rank-silent" / "ranks" / "3.json")  # would block a reader
    write(results / "rank-silent" / "ranks" / "4.json", "[" * 100_000)  # would overflow a parser's stack
    bin_dir = tmp_path / "bin"
    # job id, as the job calls itself (an array task: array_task), state
    jobs = ["77 77 RUNNING", "79 79 PENDING", "81 80_1 RUNNING"]
    write(bin_dir / "squeue", "#!/bin/sh\n" + "".join(f"echo '{job}'\n" for job in jobs))
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    runs = {run["run"]: run for run in json.loads(cli("status", str(root), "--json").output)}
    assert runs["reused-pid"]["state"] == "interrupted" and "another program" in runs["reused-pid"]["reason"]
    assert runs["pid-1"]["state"] == "interrupted"
    assert runs["fresh-elsewhere"]["state"] == "running"
    assert runs["silent-elsewhere"]["state"] == "interrupted"
    assert runs["silent-elsewhere"]["reason"] == "no heartbeat from pid 5 on node-7 for 10 min"
    assert runs["slurm-running"]["state"] == "running"
    assert runs["slurm-gone"]["state"] == "interrupted"
    assert runs["slurm-gone"]["reason"] == "SLURM job 78 ended (gone) without a flag"
    assert runs["slurm-array-task"]["state"] == "running"
    assert runs["rank-silent"]["state"] == "running"
    assert runs["rank-silent"]["reason"].startswith("pid 5 on node-7; rank 1 on node-9 silent for 6")
    assert runs["slurm-array-task"]["reason"] == "SLURM job 80_1 on n1, n2 (8 processes)"


def test_directories_in_place_of_files_and_huge_metrics_are_reported(cli, new_project) -> None:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    (results / "dir-progress" / "progress.json").mkdir(parents=True)
    (results / "dir-flag" / "finished.out").mkdir(parents=True)
    for seed, value in ((0, 1.7e308), (1, -1.7e308), (2, 1.7e308)):
        write(results / f"huge_seed-{seed}" / "finished.out", {"state": "finished", **progress(1, value)})
    result = cli("status", str(root), "--json")
    assert result.exit_code == 0, result.output
    runs = {run["run"]: run for run in strict_json(result.output)}
    assert runs["dir-progress"]["reason"] == "progress.json is malformed"
    assert runs["huge_seed-0"]["group_size"] == 3 and runs["huge_seed-0"]["group_mean"] is None
    assert cli("status", str(root)).exit_code == 0


def test_runs_named_alike_with_other_hyperparameters_are_not_grouped(cli, new_project) -> None:
    root = new_project().root
    results = root / "experiments" / "task1" / "results"
    for name, rate, value in (("foo_seed-0", 0.1, 0.5), ("foo_seed-1", 0.1, 0.7), ("foo_seed-2", 0.01, 0.9)):
        write(results / name / "finished.out", {"state": "finished", **progress(1, value)})
        write(results / name / "hparams.json", {"learning_rate": rate, "seed": int(name[-1])})
    runs = {run["run"]: run for run in json.loads(cli("status", str(root), "--json").output)}
    assert runs["foo_seed-0"]["group_size"] == 2 and runs["foo_seed-0"]["group_mean"] == pytest.approx(0.6)
    assert (
        runs["foo_seed-2"]["group_size"] == 1 and runs["foo_seed-2"]["group"] != runs["foo_seed-0"]["group"]
    )


def test_studies_are_shown_from_their_summary_hostile_entries_passed_over(cli, new_project) -> None:
    """A search's trials.json, as scripts/search.py writes it, read without Optuna or torch."""
    root = new_project().root
    task = root / "experiments" / "task1"
    results = task / "results"
    trials = [
        {"number": 0, "state": "complete", "value": 0.81, "params": {"lr": 0.01}, "run": "s-trial000"},
        {"number": 1, "state": "pruned", "value": None, "params": {"lr": 1e-6}, "run": "s-trial001"},
        {"number": 2, "state": "failed", "value": None, "params": {}, "run": "s-trial002", "reason": "OOM"},
        {"number": 3, "state": "running", "value": None, "params": {}, "run": "s-trial003"},
        {"number": 4, "state": "running", "value": None, "params": {}, "run": "s-trial004"},
        {"number": 5, "state": "complete", "value": 0.93, "params": {"lr": "\x1b[31m"}, "run": "s-trial005"},
        {"number": "6", "state": "complete", "value": 9.9, "run": "not counted: the number is text"},
        {"number": 7, "state": "complete", "value": float("nan"), "params": [], "run": "s-trial007"},
        "not an object",
    ]
    summary = {"metric": "val_acc", "direction": "maximize", "trials_wanted": 10, "trials": trials}
    write(task / "searches" / "s" / "trials.json", json.dumps(summary).replace("NaN", '"NaN"'))
    write(results / "s-trial003" / "run.lock", {"pid": os.getpid(), "host": socket.gethostname()})
    write(results / "s-trial004" / "interrupted.out", {"state": "interrupted", "reason": "SIGTERM"})
    write(
        results / "s-trial001" / "pruned.out",
        {"state": "pruned", "reason": "pruned by the search after epoch 1"},
    )
    write(task / "searches" / "broken" / "trials.json", "{not json")
    write(task / "searches" / "fifo-free" / "trials.json", {"trials": "many"})
    result = cli("status", str(root))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert next(row for row in rows if "s-trial001" in row)[:3] == ["task1", "s-trial001", "pruned"]
    study = next(row for row in rows if row[:2] == ["task1", "s"])
    # done 4 of 10: complete 0, 5, 7 (its value unreadable) and pruned 1; running 3; 4 to resume
    assert study[2:9] == ["4/10", "3", "1", "1", "1", "(+1", "to"], study
    assert "val_acc=0.9300 (trial 5, s-trial005)" in " ".join(study)
    assert not any(row[:2] in (["task1", "broken"], ["task1", "fifo-free"]) for row in rows)
    code = (
        "import sys; from dlscaffold.cli import main\n"
        "try:\n    main(['status', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
        "assert not {'torch', 'optuna'} & set(sys.modules), 'imported'"
    )
    shown = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True)
    assert shown.returncode == 0 and "Searches" in shown.stdout, shown.stderr
