"""``dlscaffold reproduce``: a run trained again from the code it recorded, untracked files included."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import FRAMEWORKS, run_cli, run_python

pytestmark = pytest.mark.slow

TRAIN = ["experiments/task1/train.py", "--epochs", "2", "--hidden_size", "16", "--batch_size", "64"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def repository_state(root: Path) -> dict[str, str]:
    """What a user would notice changing: files, index, branches, stash."""
    return {
        "status": git(root, "status", "--porcelain", "--untracked-files=all"),
        "index": git(root, "diff", "--cached"),
        "branches": git(root, "branch", "-av"),
        "stash": git(root, "stash", "list"),
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_run_with_untracked_code_reproduces_from_its_snapshot(tmp_path: Path, framework: str) -> None:
    from dlscaffold.create import create_project

    root = create_project({"project_name": "again", "framework": framework}, tmp_path).root
    # code the run depends on that git does not have: a new untracked module, an uncommitted edit
    (root / "layers" / "offset.py").write_text("SEED_OFFSET = 5\n")
    trainer = root / "trainers" / "task1_trainer.py"
    committed = trainer.read_text()
    assert "    seed_everything(args.seed)" in committed
    edited = committed.replace(
        "    seed_everything(args.seed)", "    seed_everything(args.seed + SEED_OFFSET)", 1
    )
    trainer.write_text(
        edited.replace("import argparse\n", "import argparse\n\nfrom layers.offset import SEED_OFFSET\n", 1)
    )
    trained = run_python(TRAIN, cwd=root)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    run_dir = next(path for path in (root / "experiments" / "task1" / "results").iterdir() if path.is_dir())
    planted = tmp_path / "planted-ran"  # a handed-over run directory's modules never run
    for module in ("json.py", "torch.py"):
        (run_dir / module).write_text(f"open({str(planted)!r}, 'w').write('ran')\n")
    before = repository_state(root)

    # the working tree moves on: the module is gone, the edit reverted
    (root / "layers" / "offset.py").unlink()
    trainer.write_text(committed)
    moved_on = repository_state(root)
    flags_before = sorted(path.name for path in run_dir.iterdir())

    result = run_cli("reproduce", ".", cwd=run_dir)  # from inside it, where `python -c` would look
    assert result.exit_code == 0, result.output
    assert "the run reproduces." in result.output and not planted.exists()
    assert ", 0 differ (largest difference 0)" in result.output or framework == "lightning"
    reproduced = [path for path in run_dir.parent.iterdir() if "-reproduced-" in path.name]
    assert len(reproduced) == 1 and (reproduced[0] / "finished.out").is_file()
    assert sorted(path.name for path in run_dir.iterdir()) == flags_before  # the original is untouched
    assert repository_state(root) == moved_on and before["branches"] == moved_on["branches"]
    assert git(root, "for-each-ref", "refs/dlscaffold/snapshots").strip()  # the snapshot is kept by a ref


def test_reproduce_refuses_a_run_it_cannot_rebuild(tmp_path: Path) -> None:
    from dlscaffold.create import create_project

    root = create_project({"project_name": "nogit", "framework": "pytorch"}, tmp_path, use_git=False).root
    trained = run_python([*TRAIN, "--epochs", "1"], cwd=root)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    run_dir = next(path for path in (root / "experiments" / "task1" / "results").iterdir() if path.is_dir())
    result = run_cli("reproduce", str(run_dir))
    assert result.exit_code == 1
    assert "recorded no snapshot of its code (not a git repository" in result.output


def test_a_run_started_inside_its_task_directory_and_a_tampered_best_checkpoint(tmp_path: Path) -> None:
    import shutil

    import torch

    from dlscaffold.create import create_project

    root = create_project({"project_name": "tamper", "framework": "pytorch"}, tmp_path).root
    trained = run_python(["train.py", *TRAIN[1:], "--epochs", "2"], cwd=root / "experiments" / "task1")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    run_dir = next(path for path in (root / "experiments" / "task1" / "results").iterdir() if path.is_dir())
    honest = run_cli("reproduce", str(run_dir))
    assert honest.exit_code == 0 and "the run reproduces." in honest.output, honest.output

    tampered = run_dir.with_name("tampered")
    shutil.copytree(run_dir, tampered)
    best = tampered / "checkpoints" / "best.pt"
    state = torch.load(best, weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first].clone().fill_(float("nan"))  # NaN hides no difference
    torch.save(state, best)
    caught = run_cli("reproduce", str(tampered))
    assert caught.exit_code == 1 and "does NOT reproduce" in caught.output, caught.output
    assert "largest difference inf" in caught.output

    (tampered / "manifest.json").write_text('{"command": ["python", "train.py"], "git": "not an object"}')
    malformed = run_cli("reproduce", str(tampered))
    assert malformed.exit_code == 1 and "recorded no snapshot" in malformed.output
