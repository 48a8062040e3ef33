"""What a run pays for being trustworthy: the code snapshot and the heartbeat, against baselines.

    python benchmarks/bench_protocol.py [--repeats 15]

In a generated project under git (torch is not needed: the protocol's manifest
module is torch-free), prints medians and ratios:
  * recording the git state with a snapshot of the code (a commit built with a
    temporary index, untracked files included) against recording it without one
    (``rev-parse``, ``status``, ``diff``: what the manifest did before), on a
    clean tree and on a tree with 50 changed and 50 untracked files: paid once
    per start or resume of a run;
  * one heartbeat (``os.utime`` of ``run.lock``, every 30 s while training)
    against an empty function call, and what it adds to a 10-second epoch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from dlscaffold.create import create_project  # noqa: E402


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def without_snapshot(root: Path) -> None:
    """The git state as recorded without a snapshot: commit, dirtiness, diff."""
    for command in (["rev-parse", "HEAD"], ["status", "--porcelain"], ["diff", "HEAD"]):
        subprocess.run(["git", *command], cwd=root, capture_output=True, check=True)


def row(label: str, ours: str, theirs: str, ratio: float) -> None:
    print(f"{label:<58}{ours:>12}{theirs:>12}{ratio:>8.2f}x")


def make_dirty(root: Path) -> None:
    for index in range(50):
        (root / "layers" / f"extra_{index}.py").write_text(f"VALUE = {index}\n")
    for path in sorted((root / "protocol").glob("*.py"))[:5]:
        path.write_text(path.read_text() + "\n# changed\n")
    for path in sorted(root.rglob("*.py"))[:45]:
        if "protocol" not in path.parts:
            path.write_text(path.read_text() + "\n# changed\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as scratch:
        root = create_project({"project_name": "bench", "framework": "pytorch"}, Path(scratch)).root
        sys.path.insert(0, str(root))
        manifest = importlib.import_module("protocol.manifest")
        print(f"{'measure':<58}{'dlscaffold':>12}{'baseline':>12}{'ratio':>9}")
        for label in ("clean tree", "50 changed + 50 untracked files"):
            if label != "clean tree":
                make_dirty(root)
            ours = median_seconds(manifest.git_state, repeats)
            theirs = median_seconds(lambda: without_snapshot(root), repeats)
            row(
                "git state with snapshot, " + label,
                f"{ours * 1e3:.1f}ms",
                f"{theirs * 1e3:.1f}ms",
                ours / theirs,
            )
        lock = root / "run.lock"
        lock.write_text("{}")
        beat = median_seconds(lambda: os.utime(lock), repeats * 100)
        nothing = median_seconds(lambda: None, repeats * 100)
        row(
            "one heartbeat (os.utime of run.lock)",
            f"{beat * 1e6:.1f}us",
            f"{nothing * 1e6:.2f}us",
            beat / nothing,
        )
        per_epoch = beat * (10 / 30) / 10
        print(f"heartbeat share of a 10-second epoch (a beat per 30 s): {per_epoch * 100:.6f}%")


if __name__ == "__main__":
    main()
