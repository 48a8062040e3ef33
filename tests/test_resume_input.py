"""Resuming from what is on disk: a bad checkpoint is one line; what is printed is what a relaunch does."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from dlscaffold.create import create_project

from conftest import FRAMEWORKS, run_python

pytestmark = pytest.mark.slow

TRAIN = ["experiments/task1/train.py", "--epochs", "2", "--hidden_size", "8", "--batch_size", "256"]
SUFFIX = {"lightning": "ckpt", "pytorch": "pt"}


def trained(tmp_path: Path, framework: str) -> tuple[Path, Path]:
    root = create_project({"project_name": "resumes", "framework": framework}, tmp_path, use_git=False).root
    result = run_python([*TRAIN, "--run_name", "r"], cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, root / "experiments" / "task1" / "results" / "r"


def foreign_checkpoint(path: Path, framework: str) -> None:
    import torch

    weights = {"not_this_model.weight": torch.zeros(3, 3)}
    torch.save({"state_dict": weights} if framework == "lightning" else {"model": weights}, path)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_bad_last_checkpoint_is_one_line_and_keeps_the_failure_reason(tmp_path: Path, framework: str):
    root, run = trained(tmp_path, framework)
    (run / "finished.out").unlink()
    failure = {"state": "failed", "time": "then", "reason": "ValueError: the first one", "diverged": False}
    last = run / "checkpoints" / f"last.{SUFFIX[framework]}"
    whole = last.read_bytes()
    damages = {  # garbage fails like a truncated file: the interrupted run below has some
        "truncated": lambda: last.write_bytes(whole[: len(whole) // 2]),
        "another model": lambda: foreign_checkpoint(last, framework),
    }
    for what, damage in damages.items():
        (run / "failed.out").write_text(json.dumps(failure))
        damage()
        result = run_python([*TRAIN, "--run_name", "r", "--resume_failed"], cwd=root)
        assert result.returncode == 1, what
        assert "Traceback" not in result.stdout + result.stderr, (what, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "cannot resume: " in lines[0], (what, result.stderr)
        assert "weights_only" not in lines[0]  # never advice to load it unsafely
        assert "failed.out keeps the reason it failed before; --retry_failed starts it over." in lines[0]
        assert json.loads((run / "failed.out").read_text()) == failure, what
        assert sorted(path.name for path in run.glob("*.out")) == ["failed.out"]

    # an interrupted run whose checkpoint is gone bad fails, saying why, and the relaunch says the same
    (run / "failed.out").rename(run / "interrupted.out")
    last.write_bytes(b"garbage")
    result = run_python([*TRAIN, "--run_name", "r"], cwd=root)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    reason = json.loads((run / "failed.out").read_text())["reason"]
    assert reason.startswith("cannot resume: ") and reason in result.stderr
    skipped = run_python([*TRAIN, "--run_name", "r"], cwd=root)
    assert skipped.returncode == 0 and f"failed before: {reason}" in skipped.stdout

    retried = run_python([*TRAIN, "--run_name", "r", "--retry_failed"], cwd=root)
    assert retried.returncode == 0 and (run / "finished.out").is_file(), retried.stdout + retried.stderr


FULL_DISK = """
import errno, os, runpy, sys
sys.path.insert(0, os.getcwd())
import protocol.launch, protocol.state
launch, state = sys.modules["protocol.launch"], sys.modules["protocol.state"]  # not the launch function

def no_space(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

saves, save, record = [], state.atomic_torch_save, launch.update_manifest
def filling(obj, path):  # the first checkpoint fits, then the disk is full
    saves.append(path)
    if len(saves) > 2:  # best.pt and last.pt of the first epoch
        raise no_space(path)
    save(obj, path)
def recording(run, event, *args, **kwargs):  # failed.out is small enough; the manifest is not
    if event == "failed":
        raise no_space(run.dir / "manifest.json")
    return record(run, event, *args, **kwargs)
state.atomic_torch_save, launch.update_manifest = filling, recording
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_full_disk_says_what_a_relaunch_will_do(tmp_path: Path) -> None:
    root = create_project({"project_name": "full", "framework": "pytorch"}, tmp_path, use_git=False).root
    result = run_python(["-c", textwrap.dedent(FULL_DISK), *TRAIN, "--run_name", "r"], cwd=root)
    assert result.returncode == 1, result.stdout + result.stderr
    run = root / "experiments" / "task1" / "results" / "r"
    assert (run / "failed.out").is_file()
    assert "relaunch with --resume_failed to continue from its last checkpoint" in result.stderr
    assert "the run resumes" not in result.stderr
    skipped = run_python([*TRAIN, "--run_name", "r"], cwd=root)
    assert skipped.returncode == 0 and "failed before" in skipped.stdout  # as it said: a plain relaunch skips
    resumed = run_python([*TRAIN, "--run_name", "r", "--resume_failed"], cwd=root)
    assert resumed.returncode == 0 and (run / "finished.out").is_file(), resumed.stdout + resumed.stderr
