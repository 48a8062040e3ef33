"""What a hyperparameter search adds per trial, over typing the same train.py commands by hand.

    python benchmarks/bench_search.py [--trials 6] [--repeats 2]

In a generated plain-PyTorch project, prints wall-clock seconds per trial:
  * by hand: each trial's train.py command run one after another, with the
    parameters the search chose (the baseline, timed in the same run);
  * the search: ``scripts/search.py`` with one worker and no pruner, which
    for each trial takes the study's lock, records finished trials, asks Optuna
    for a point (TPE), checks it with train.py's parser, starts train.py, and
    reports each epoch to the study from inside it;
  * the search's own start-up (``--dry-run``: Optuna, train.py's parser, the
    space checked), paid once per launch.
Both sides alternate, ``--repeats`` times, each on a study of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from dlscaffold.create import create_project  # noqa: E402

SPACE = {
    "learning_rate": {"type": "float", "low": 1e-3, "high": 0.05, "log": True},
    "hidden_size": {"type": "int", "low": 16, "high": 64, "step": 16},
}
TRAIN = ["--epochs", "2", "--batch_size", "128"]


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def search(root: Path, study: str, trials: int) -> float:
    options = ["--trials", str(trials), "--study", study, "--pruner", "none"]
    return timed(
        [sys.executable, "scripts/search.py", "task1", "--space", "space.json", *options, "--", *TRAIN], root
    )


def by_hand(root: Path, study: str, trials: int) -> float:
    """The search's trials again, each its own train.py, with the parameters it chose."""
    summary = json.loads((root / "experiments/task1/searches" / study / "trials.json").read_text())
    total = 0.0
    for trial in summary["trials"][:trials]:
        point = [arg for name, value in trial["params"].items() for arg in (f"--{name}", str(value))]
        name = f"{study}-by-hand{trial['number']:03d}"
        total += timed(
            [sys.executable, "experiments/task1/train.py", *TRAIN, *point, "--run_name", name], root
        )
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = create_project(
            {"project_name": "bench", "framework": "pytorch"}, Path(scratch), use_git=False
        ).root
        (root / "space.json").write_text(json.dumps(SPACE))
        dry = [
            sys.executable,
            "scripts/search.py",
            "task1",
            "--space",
            "space.json",
            "--trials",
            "1",
            "--dry-run",
        ]
        start_up = statistics.median(timed(dry, root) for _ in range(5))
        searched, manual = [], []
        for repeat in range(args.repeats):
            searched.append(search(root, f"bench{repeat}", args.trials) / args.trials)
            manual.append(by_hand(root, f"bench{repeat}", args.trials) / args.trials)
    ours, theirs = statistics.median(searched), statistics.median(manual)
    print(f"{args.trials} trials of `train.py {' '.join(TRAIN)}`, {args.repeats} repeats, medians:")
    print(f"{'per trial, by hand':<44}{theirs:>8.2f} s")
    print(f"{'per trial, in scripts/search.py':<44}{ours:>8.2f} s   ({ours / theirs:.2f}x)")
    print(f"{'added per trial, start-up shared':<44}{ours - theirs:>8.2f} s")
    print(f"{'search start-up (--dry-run), once a launch':<44}{start_up:>8.2f} s")


if __name__ == "__main__":
    main()
