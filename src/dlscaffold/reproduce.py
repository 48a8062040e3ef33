"""``dlscaffold reproduce``: train a run again from the code it recorded, and compare the results.

A generated project records, in each run's ``manifest.json``, the command that
trained it and a git commit of its code as it ran (untracked files included,
kept under ``refs/dlscaffold/snapshots/``). This module exports that commit
into a temporary directory, trains the recorded command there into a new run
beside the original, and compares the final metrics and weights. The original
run, the user's working tree, index and branches are never touched.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlscaffold import files, git
from dlscaffold.errors import ReproduceError
from dlscaffold.project import ProjectRecord

# options that say where and how a run is stored, not what it computes: the reproduction sets its own
RUN_CONTROL_VALUES = ("--run_name", "--results_dir")
RUN_CONTROL_FLAGS = ("--force", "--retry_failed", "--resume_failed")
MAX_RUN_NAME = 120

# run with the project's own Python (it has torch; dlscaffold does not import it): the largest
# difference between any two tensors of the same name in two checkpoints, and the names that differ
COMPARE = """
import json, sys, torch
def tensors(value, name=""):
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from tensors(item, f"{name}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from tensors(item, f"{name}/{index}")
def load(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return dict(tensors(state.get("state_dict", state)))
ours, theirs = load(sys.argv[1]), load(sys.argv[2])
differing = [k for k in ours if k in theirs and not torch.equal(ours[k], theirs[k])]
largest = max((float((ours[k].double() - theirs[k].double()).abs().max()) for k in differing), default=0.0)
missing = sorted(set(ours) ^ set(theirs))
print(json.dumps({"compared": len(ours), "differing": differing, "largest": largest, "missing": missing}))
"""


@dataclass
class Comparison:
    """What the reproduction gave, next to the original."""

    new_run: Path
    tolerance: float
    metrics: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics_match(self) -> bool:
        return all(_close(before, after, self.tolerance) for before, after in self.metrics.values())

    @property
    def weights_match(self) -> bool:
        return not self.weights["missing"] and self.weights["largest"] <= self.tolerance


def reproduce(
    project: ProjectRecord, run_dir: Path, tolerance: float, python: str | None = None
) -> Comparison:
    """Train ``run_dir`` again from its recorded code and command; compare metrics and weights."""
    run_dir = run_dir.resolve()
    manifest = _read(run_dir / "manifest.json", "its manifest")
    finished = _read(run_dir / "finished.out", "finished.out (only a finished run can be compared)")
    command, snapshot = manifest.get("command"), (manifest.get("git") or {}).get("snapshot")
    if not (isinstance(command, list) and len(command) >= 2 and all(isinstance(arg, str) for arg in command)):
        raise ReproduceError(f"{run_dir / 'manifest.json'} records no command")
    if not isinstance(snapshot, str):
        note = (manifest.get("git") or {}).get("note") or "it predates code snapshots"
        raise ReproduceError(
            f"{run_dir.name} recorded no snapshot of its code ({note}); nothing to rebuild from"
        )
    repository = git.repository_of(project.root)
    if repository is None:
        raise ReproduceError(f"{project.root} is not in a git repository: its snapshots are gone")
    script = _script(command[1], project.root)
    interpreter = python or (command[0] if Path(command[0]).exists() else sys.executable)
    name = _new_name(run_dir.name)
    with tempfile.TemporaryDirectory(prefix="dlscaffold-reproduce-") as scratch:
        code = Path(scratch) / "code"
        git.export(Path(repository), snapshot, code)
        root = code / project.root.resolve().relative_to(Path(repository).resolve())
        _share_data(root, project.root)
        args = [*_run_options_removed(command[2:]), "--run_name", name, "--results_dir", str(run_dir.parent)]
        print(f"reproducing {run_dir.name} from snapshot {snapshot[:12]} as {name}", flush=True)
        trained = subprocess.run([interpreter, str(root / script), *args], cwd=root, check=False)
    new_run = run_dir.parent / name
    if trained.returncode != 0 or not (new_run / "finished.out").is_file():
        raise ReproduceError(f"the reproduction did not finish (exit {trained.returncode}); see {new_run}")
    comparison = Comparison(new_run=new_run, tolerance=tolerance)
    again = _read(new_run / "finished.out", "the reproduction's finished.out")
    comparison.metrics = _metric_pairs(finished.get("metrics"), again.get("metrics"))
    comparison.weights = _compare_weights(interpreter, _last_checkpoint(run_dir), _last_checkpoint(new_run))
    return comparison


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        content = files.read_json(path)
    except files.UnreadableFile as error:
        raise ReproduceError(f"cannot read {what}: {error}") from error
    if not isinstance(content, dict):
        raise ReproduceError(f"{path} is malformed")
    return content


def _script(recorded: str, project_root: Path) -> Path:
    """The recorded train.py, relative to the project root (it ran from an absolute path there)."""
    path = Path(recorded)
    parts = path.parts
    if "experiments" not in parts or path.name != "train.py":
        raise ReproduceError(f"the recorded command does not run an experiments/<task>/train.py: {recorded}")
    index = len(parts) - 1 - parts[::-1].index("experiments")
    return Path(*parts[index:])


def _new_name(original: str) -> str:
    suffix = f"-reproduced-{time.strftime('%Y%m%d-%H%M%S')}"
    return original[: MAX_RUN_NAME - len(suffix)] + suffix


def _run_options_removed(args: list[str]) -> list[str]:
    """The recorded arguments without the options that name or place the run, or force it."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in RUN_CONTROL_VALUES:
            skip = True
        elif arg not in RUN_CONTROL_FLAGS and not arg.startswith(
            tuple(f"{name}=" for name in RUN_CONTROL_VALUES)
        ):
            kept.append(arg)
    return kept


def _share_data(code_root: Path, project_root: Path) -> None:
    """Let the exported code read the project's data (it is git-ignored, so not in the snapshot)."""
    data = code_root / "data"
    if data.is_dir() and not any(path.is_file() and path.name != ".gitkeep" for path in data.rglob("*")):
        shutil.rmtree(data)  # only the placeholders git keeps
    if not data.exists() and (project_root / "data").is_dir():
        data.symlink_to((project_root / "data").resolve(), target_is_directory=True)


def _metric_pairs(before: Any, after: Any) -> dict[str, tuple[float | None, float | None]]:
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    return {
        key: (files.finite_number(before.get(key)), files.finite_number(after.get(key)))
        for key in sorted(set(before) | set(after))
    }


def _close(before: float | None, after: float | None, tolerance: float) -> bool:
    if before is None or after is None:
        return before is after
    return math.isclose(before, after, rel_tol=tolerance, abs_tol=tolerance)


def _last_checkpoint(run_dir: Path) -> Path:
    for name in ("last.pt", "last.ckpt"):
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    raise ReproduceError(f"{run_dir} has no last checkpoint to compare")


def _compare_weights(interpreter: str, ours: Path, theirs: Path) -> dict[str, Any]:
    result = subprocess.run(
        [interpreter, "-c", COMPARE, str(ours), str(theirs)], capture_output=True, text=True, check=False
    )
    try:
        report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as error:
        raise ReproduceError(f"cannot compare the checkpoints: {result.stderr.strip()[-300:]}") from error
    return report
