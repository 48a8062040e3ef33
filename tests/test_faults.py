"""Commands under faults: concurrent commands, kills at any instant, file-system errors, hostile files.

Whatever happens, a command ends with one line saying what went wrong and a
non-zero exit, the project record matches the disk, and nothing is left
half-written.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlscaffold import render, transaction
from dlscaffold.create import create_project

STAGING = transaction.STAGING_PREFIX + "*"


def dlscaffold(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """Start the ``dlscaffold`` command in its own process, as a user's shell would."""
    return subprocess.Popen(
        [sys.executable, "-m", "dlscaffold", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = process.communicate(timeout=120)
    assert "Traceback" not in out + err, out + err
    return process.returncode, out + err


def record(root: Path) -> dict:
    return json.loads((root / ".dlscaffold.json").read_text())


def assert_record_matches_disk(root: Path) -> None:
    tasks = record(root)["tasks"]
    on_disk = sorted(path.name for path in (root / "experiments").iterdir() if path.is_dir())
    assert sorted(tasks) == on_disk
    for task in tasks:
        for path in (f"trainers/{task}_trainer.py", f"trainers/{task}_data.py", f"tests/test_{task}.py"):
            assert (root / path).is_file(), path
    trainers = sorted(path.name for path in (root / "trainers").glob("*_trainer.py"))
    assert trainers == sorted(["base_trainer.py", *(f"{task}_trainer.py" for task in tasks)])
    assert not list(root.glob(STAGING))


# --- concurrency -----------------------------------------------------------------------------


def test_add_task_commands_at_once_all_land(new_project) -> None:
    root = new_project().root
    processes = [dlscaffold("add-task", f"task{n}", cwd=root) for n in range(2, 6)]
    results = [finish(process) for process in processes]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    assert sorted(record(root)["tasks"]) == ["task1", "task2", "task3", "task4", "task5"]
    assert_record_matches_disk(root)


def test_the_same_task_added_twice_at_once_lands_once(new_project) -> None:
    root = new_project().root
    processes = [dlscaffold("add-task", "again", cwd=root), dlscaffold("add-task", "again", cwd=root)]
    results = [finish(process) for process in processes]
    assert sorted(code for code, _ in results) == [0, 1], results
    assert any("already has a task named 'again'" in output for _, output in results)
    assert record(root)["tasks"] == ["task1", "again"]
    assert_record_matches_disk(root)


def test_new_commands_for_one_name_at_once_one_wins_unmerged(tmp_path: Path) -> None:
    frameworks = ["lightning", "pytorch", "lightning", "pytorch"]
    processes = [
        dlscaffold("new", "race", "--no-input", "--no-git", "--framework", framework, cwd=tmp_path)
        for framework in frameworks
    ]
    results = [finish(process) for process in processes]
    codes = [code for code, _ in results]
    assert sorted(codes) == [0, 1, 1, 1], results
    for code, output in results:
        if code:
            assert "already exists" in output
    winner = frameworks[codes.index(0)]
    root = tmp_path / "race"
    assert record(root)["answers"]["framework"] == winner
    # one flavour only: the losers wrote nothing into the winner's project
    assert (root / "protocol" / "state.py").exists() == (winner == "pytorch")
    assert (root / "protocol" / "lightning.py").exists() == (winner == "lightning")
    assert not list(tmp_path.glob(STAGING))


# --- kills at any instant --------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.28, 0.34, 0.4, 0.5, 0.7])
def test_new_killed_at_any_instant_leaves_all_or_nothing(tmp_path: Path, delay: float) -> None:
    process = dlscaffold("new", "victim", "--no-input", cwd=tmp_path)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    root = tmp_path / "victim"
    if root.exists():  # the project appeared: it is whole, git repository and first commit included
        assert (root / ".dlscaffold.json").is_file()
        log = subprocess.run(["git", "log", "--oneline"], cwd=root, capture_output=True, text=True)
        assert log.returncode == 0 and log.stdout.strip(), log.stderr
    code, output = finish(dlscaffold("new", "victim", "--no-input", cwd=tmp_path))
    assert code == (1 if "already exists" in output else 0), output
    assert not list(tmp_path.glob(STAGING))  # whatever the kill left is cleaned up
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
    assert status.stdout == ""


# `add-task doomed`, SIGKILLed by itself just before call number argv[1] (from 0) of a function,
# or just after it when argv[2] is "after"
KILL_AT = """
import os, signal, sys
from dlscaffold import {module}
from dlscaffold.cli import main
real, calls = {function}, []
def dying(*args, **kwargs):
    calls.append(args)
    last = len(calls) > int(sys.argv[1])
    if last and sys.argv[2] == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    if last:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
{function} = dying
main(["add-task", "doomed"])
"""


def killed_add_task(root: Path, function: str, calls: int, when: str) -> None:
    """``add-task doomed`` in ``root``, SIGKILLed at call ``calls`` of ``function`` (``module.name``)."""
    code = KILL_AT.format(module=function.split(".")[0], function=function)
    killed = subprocess.run([sys.executable, "-c", code, str(calls), when], cwd=root, capture_output=True)
    assert killed.returncode == -signal.SIGKILL


@pytest.mark.parametrize("moves", [0, 1, 2, 4])
def test_add_task_killed_between_moves_is_undone_by_the_next_command(new_project, cli, moves: int) -> None:
    root = new_project().root
    killed_add_task(root, "transaction.os.rename", moves, "before")
    assert list(root.glob(STAGING)), "the kill should leave its staging directory"
    assert cli("status", str(root)).exit_code == 0  # ignored by every command

    result = cli("add-task", "other", "--project", str(root))
    assert result.exit_code == 0, result.output
    assert record(root)["tasks"] == ["task1", "other"]
    assert not (root / "experiments" / "doomed").exists()
    assert_record_matches_disk(root)
    assert cli("add-task", "doomed", "--project", str(root)).exit_code == 0  # nothing in the way


def test_add_task_killed_then_the_project_renamed_is_undone_where_it_now_is(new_project, cli) -> None:
    root = new_project().root
    killed_add_task(root, "transaction.os.rename", 2, "before")
    assert (root / "experiments" / "doomed").is_dir()  # half added
    renamed = root.with_name("renamed")
    root.rename(renamed)
    result = cli("add-task", "doomed", "--project", str(renamed))  # the half-added task is undone first
    assert result.exit_code == 0, result.output
    assert record(renamed)["tasks"] == ["task1", "doomed"]
    assert_record_matches_disk(renamed)


def test_new_force_over_a_project_keeps_a_task_a_killed_add_task_had_recorded(new_project, cli) -> None:
    root = new_project().root
    killed_add_task(root, "files.os.replace", 0, "after")
    result = cli("new", root.name, "--no-input", "--no-git", "--force", "--output-dir", str(root.parent))
    assert result.exit_code == 0, result.output
    assert record(root)["tasks"] == ["task1", "doomed"]
    assert_record_matches_disk(root)


def test_add_task_killed_after_recording_keeps_the_task(new_project, cli) -> None:
    root = new_project().root
    killed_add_task(root, "files.os.replace", 0, "after")
    assert cli("add-task", "other", "--project", str(root)).exit_code == 0
    assert record(root)["tasks"] == ["task1", "doomed", "other"]
    assert_record_matches_disk(root)


# --- file-system errors ----------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_leaves_nothing(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))

    monkeypatch.setattr(render, "write", full)
    result = cli("new", "demo", "--no-input", "--output-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "disk is full" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_directory_it_may_not_write_is_one_line(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: object, **kwargs: object) -> str:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))

    monkeypatch.setattr(transaction.tempfile, "mkdtemp", denied)
    result = cli("new", "demo", "--no-input", "--output-dir", str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path}: Permission denied; check its permissions" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_a_directory_is_expected(cli, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    result = cli("new", "demo", "--no-input", "--output-dir", str(tmp_path / "afile" / "sub"))
    assert result.exit_code == 1
    assert "Not a directory; a file is where a directory is expected" in result.output
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_dangling_symlink_is_never_replaced(cli, tmp_path: Path) -> None:
    (tmp_path / "demo").symlink_to(tmp_path / "nowhere")
    result = cli("new", "demo", "--no-input", "--force", "--output-dir", str(tmp_path))
    assert result.exit_code == 1 and "dangling symlink" in result.output
    assert (tmp_path / "demo").is_symlink() and not (tmp_path / "nowhere").exists()


def test_force_keeps_symlinks_and_never_writes_through_them(cli, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.md").write_text("my notes")
    root = tmp_path / "demo"
    root.mkdir()
    (root / "README.md").symlink_to(outside / "notes.md")
    (root / "data").symlink_to(outside)
    result = cli("new", "demo", "--no-input", "--no-git", "--force", "--output-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (root / "README.md").is_symlink() and (outside / "notes.md").read_text() == "my notes"
    assert (root / "data").is_symlink()
    assert sorted(path.name for path in outside.iterdir()) == ["notes.md"]  # nothing written through
    assert "kept your existing README.md" in result.output and "kept your existing data" in result.output
    assert (root / "experiments" / "task1" / "train.py").is_file()


@pytest.mark.parametrize("entry", ["utils", "protocol", "experiments", "layers"])
@pytest.mark.parametrize("kind", ["file", "symlink to a directory"])
def test_force_refuses_a_file_where_the_project_needs_a_package(
    cli, tmp_path: Path, entry: str, kind: str
) -> None:
    root = tmp_path / "demo"
    root.mkdir()
    if kind == "file":
        (root / entry).write_text("mine")
    else:
        (tmp_path / "elsewhere").mkdir()
        (root / entry).symlink_to(tmp_path / "elsewhere")
    result = cli("new", "demo", "--no-input", "--no-git", "--force", "--output-dir", str(tmp_path))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert f"where the project needs the directory {entry}/ (for {entry}/" in result.output
    assert sorted(path.name for path in root.iterdir()) == [entry]  # nothing written
    if kind != "file":
        assert not list((tmp_path / "elsewhere").iterdir())  # never written through


def test_add_task_refuses_what_is_in_its_way(new_project, cli, tmp_path: Path) -> None:
    root = new_project().root
    (root / "experiments" / "clash").write_text("a file, not a directory")
    result = cli("add-task", "clash", "--project", str(root))
    assert result.exit_code == 1 and "would overwrite experiments/clash" in result.output
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "tests").rename(tmp_path / "tests-moved")
    (root / "tests").symlink_to(outside)
    result = cli("add-task", "linked", "--project", str(root))
    assert result.exit_code == 1 and "would overwrite tests" in result.output
    assert list(outside.iterdir()) == [] and record(root)["tasks"] == ["task1"]
    assert not (root / "experiments" / "linked").exists()


# --- hostile project records -----------------------------------------------------------------

MALFORMED_RECORDS = {
    "not an object": "[]",
    "answers not an object": '{"answers": []}',
    "tasks not a list": '{"answers": {"framework": "pytorch"}, "tasks": "task1"}',
    "a task twice": '{"answers": {"framework": "pytorch"}, "tasks": ["a", "a"]}',
    "NaN": '{"answers": {"framework": "pytorch"}, "tasks": [], "x": NaN}',
    "duplicate keys": '{"answers": {"framework": "pytorch"}, "answers": {}}',
    "a 5000-digit number": '{"answers": {}, "n": ' + "9" * 5000 + "}",
    "not UTF-8": b'{"answers": {"author": "\xff"}}',
    "half-written": '{"answers": {"frame',
    "huge": '{"answers": {}, "pad": "' + "x" * (2 << 20) + '"}',
}


@pytest.mark.parametrize("content", MALFORMED_RECORDS.values(), ids=MALFORMED_RECORDS.keys())
def test_a_malformed_record_is_reported_not_trusted(new_project, cli, content: str | bytes) -> None:
    root = new_project().root
    path = root / ".dlscaffold.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for command in (["add-task", "task2", "--project", str(root)], ["status", str(root)]):
        result = cli(*command)
        assert result.exit_code == 1, result.output
        assert "project record" in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (root / "experiments" / "task2").exists()


def test_a_record_that_is_a_fifo_does_not_hang(new_project, cli) -> None:
    root = new_project().root
    (root / ".dlscaffold.json").unlink()
    os.mkfifo(root / ".dlscaffold.json")
    result = cli("add-task", "task2", "--project", str(root))
    assert result.exit_code == 1 and "not a regular file" in result.output


def test_staging_directories_are_never_committed(tmp_path: Path) -> None:
    root = create_project({"project_name": "demo"}, tmp_path, use_git=False).root
    (root / f"{transaction.STAGING_PREFIX}abc").mkdir()
    (root / f"{transaction.STAGING_PREFIX}abc" / "file.py").write_text("x = 1\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    listed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=root, capture_output=True, text=True
    )
    assert transaction.STAGING_PREFIX not in listed.stdout


# --- found by an adversarial pass ------------------------------------------------------------


def test_recovery_never_touches_another_directory_of_the_same_name(tmp_path: Path) -> None:
    from conftest import tree_digest

    (tmp_path / "A" / "proj").mkdir(parents=True)
    (tmp_path / "B").mkdir()
    other = create_project({"project_name": "proj"}, tmp_path / "B").root
    before = tree_digest(other)
    code = KILL_AT.replace('main(["add-task", "doomed"])', 'main(["new", "proj", "--no-input"])').format(
        module="transaction", function="transaction.os.rename"
    )
    killed = subprocess.run(
        [sys.executable, "-c", code, "5", "before"], cwd=tmp_path / "A", capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL  # half-way through moving files into A/proj
    finish(dlscaffold("new", "proj", "--no-input", "--force", cwd=tmp_path / "B"))  # recovers in B
    finish(dlscaffold("add-task", "t2", "--project", str(tmp_path / "A" / "proj"), cwd=tmp_path / "B"))
    assert tree_digest(other) == before and (other / ".git").is_dir()


def test_add_task_whose_record_cannot_be_written_leaves_no_files(
    new_project, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlscaffold import files

    root = new_project().root

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / ".dlscaffold.json"))

    monkeypatch.setattr(files, "write_text_atomic", full)
    result = cli("add-task", "t2", "--project", str(root))
    assert result.exit_code == 1 and "disk is full" in result.output
    monkeypatch.undo()
    assert record(root)["tasks"] == ["task1"]
    assert_record_matches_disk(root)
    assert cli("add-task", "t2", "--project", str(root)).exit_code == 0  # nothing left in its way


def test_force_into_a_directory_with_files_makes_no_repository(cli, tmp_path: Path) -> None:
    root = tmp_path / "demo"
    root.mkdir()
    os.mkfifo(root / "pipe")  # git add would block on it forever
    result = cli("new", "demo", "--no-input", "--force", "--output-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert not (root / ".git").exists() and "run `git init`" in result.output


def test_a_deleted_current_directory_is_said_so(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    code = "import os, sys; os.rmdir(os.getcwd()); from dlscaffold.cli import main; main(sys.argv[1:])"
    for command in (["status"], ["new", "x", "--no-input"], ["add-task", "t"]):
        gone.mkdir(exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-c", code, *command], cwd=gone, capture_output=True, text=True
        )
        assert result.returncode == 1, result.stderr
        assert "the current directory no longer exists" in result.stderr and "Traceback" not in result.stderr
