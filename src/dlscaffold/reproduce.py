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
import os
import re
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
from dlscaffold.text import printable

# options that say where and how a run is stored, not what it computes: the reproduction sets its own
RUN_CONTROL_VALUES = ("--run_name", "--results_dir")
RUN_CONTROL_FLAGS = ("--force", "--retry_failed", "--resume_failed")
MAX_RUN_NAME = 120
SNAPSHOT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a commit id (SHA-1 or SHA-256), never an option

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
def gap(a, b):  # a NaN on either side is an infinite difference, never a small one
    d = (a.double() - b.double()).abs()
    return float("inf") if d.isnan().any() else float(d.max()) if d.numel() else 0.0
largest = max((gap(ours[k], theirs[k]) for k in differing), default=0.0)
missing = sorted(set(ours) ^ set(theirs))
print(json.dumps({"compared": len(ours), "differing": differing, "largest": largest, "missing": missing}))
"""


@dataclass(frozen=True)
class Interpreter:
    """The Python a reproduction trains with, and why that one."""

    path: str
    why: str


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


def choose_python(project_root: Path, python: str | None = None) -> Interpreter:
    """The interpreter to train with: ``python`` if given, else the active virtual environment's,
    else the project's ``.venv``, else the one running dlscaffold.

    Never the one a manifest names: a run directory is data anyone can hand over, and
    running the program it names would run anything on this machine.
    """
    if python is not None:
        found = shutil.which(python) if os.sep not in python else python
        if found is None or not (os.path.isfile(found) and os.access(found, os.X_OK)):
            raise ReproduceError(f"--python {python}: no such executable")
        return Interpreter(os.path.abspath(found), "--python")
    candidates = []
    if os.environ.get("VIRTUAL_ENV"):
        candidates.append(
            (Path(os.environ["VIRTUAL_ENV"], "bin", "python"), "the active virtual environment")
        )
    candidates.append((project_root / ".venv" / "bin" / "python", "the project's .venv"))
    for path, why in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return Interpreter(str(path), why)
    return Interpreter(sys.executable, "the Python running dlscaffold")


def reproduce(
    project: ProjectRecord, run_dir: Path, tolerance: float, python: Interpreter | None = None
) -> Comparison:
    """Train ``run_dir`` again from its recorded code and command; compare metrics and weights."""
    python = python or choose_python(project.root)
    run_dir = run_dir.absolute()  # not resolved: results/ may be a symlink to scratch storage
    manifest = _read(run_dir / "manifest.json", "its manifest")
    finished = _read(run_dir / "finished.out", "finished.out (only a finished run can be compared)")
    command, recorded = manifest.get("command"), manifest.get("git")
    if not (isinstance(command, list) and len(command) >= 2 and all(isinstance(arg, str) for arg in command)):
        raise ReproduceError(f"{run_dir / 'manifest.json'} records no command")
    recorded = recorded if isinstance(recorded, dict) else {}
    snapshot = _one_snapshot(manifest, recorded.get("snapshot"))
    if snapshot is None:
        note = recorded.get("note") or "it predates code snapshots"
        raise ReproduceError(
            f"{run_dir.name} recorded no snapshot of its code ({note}); nothing to rebuild from"
        )
    repository = git.repository_of(project.root)
    if repository is None:
        raise ReproduceError(f"{project.root} is not in a git repository: its snapshots are gone")
    script = _script(command[1], run_dir)
    interpreter = python.path
    new_run = run_dir.parent / _new_name(run_dir)
    with tempfile.TemporaryDirectory(prefix="dlscaffold-reproduce-") as scratch:
        code = Path(scratch) / "code"
        git.export(Path(repository), snapshot, code)
        root = code / project.root.resolve().relative_to(Path(repository).resolve())
        if not (root / script).resolve().is_relative_to(root.resolve()) or not (root / script).is_file():
            raise ReproduceError(f"the snapshot has no {script}: was the manifest's command edited?")
        _share_data(root, project.root)
        # --opt=value: a name or a path starting with '-' is never taken for an option
        args = [
            *_run_options_removed(command[2:]),
            f"--run_name={new_run.name}",
            f"--results_dir={run_dir.parent}",
        ]
        print(printable(f"reproducing {run_dir.name} from snapshot {snapshot[:12]} as {new_run.name}"))
        print(printable(f"  with {interpreter} ({python.why}; --python chooses another)"), flush=True)
        try:
            trained = subprocess.run([interpreter, str(root / script), *args], cwd=root, check=False)
        except KeyboardInterrupt:
            shutil.rmtree(new_run, ignore_errors=True)  # half a reproduction proves nothing: leave none
            raise
    if trained.returncode != 0 or not (new_run / "finished.out").is_file():
        where = f"; see {new_run}" if new_run.exists() else ""
        raise ReproduceError(
            f"the reproduction did not finish (exit {trained.returncode}, with {interpreter}){where}"
        )
    comparison = Comparison(new_run=new_run, tolerance=tolerance)
    again = _read(new_run / "finished.out", "the reproduction's finished.out")
    comparison.metrics = _metric_pairs(finished.get("metrics"), again.get("metrics"))
    comparison.weights = {"compared": 0, "differing": [], "largest": 0.0, "missing": []}
    for kind in ("last", "best"):  # the final weights, and those eval.py evaluates
        ours, theirs = _checkpoint(run_dir, kind), _checkpoint(new_run, kind)
        if ours is None and kind == "best":
            continue
        if ours is None or theirs is None:
            raise ReproduceError(f"{run_dir.name} or its reproduction has no {kind} checkpoint to compare")
        found = _compare_weights(interpreter, ours, theirs)
        comparison.weights["compared"] += found["compared"]
        comparison.weights["differing"] += [f"{kind}:{key}" for key in found["differing"]]
        comparison.weights["missing"] += [f"{kind}:{key}" for key in found["missing"]]
        comparison.weights["largest"] = max(comparison.weights["largest"], found["largest"])
    return comparison


def _one_snapshot(manifest: dict[str, Any], last: Any) -> str | None:
    """The snapshot the run trained with; refused when a resume ran other code than the start.

    Anything but a commit id is no snapshot (it is handed to git, where text
    starting with ``-`` would be an option).
    """
    recorded = manifest.get("history")
    history: list[Any] = recorded if isinstance(recorded, list) else []
    snapshots = [entry.get("snapshot") for entry in history if isinstance(entry, dict)]
    used = {snapshot for snapshot in snapshots if isinstance(snapshot, str) and snapshot}
    if any(not SNAPSHOT.fullmatch(snapshot) for snapshot in used) or not (
        last is None or (isinstance(last, str) and SNAPSHOT.fullmatch(last))
    ):
        raise ReproduceError("the manifest's snapshot is not a commit id: was it edited by hand?")
    if len(used) > 1:
        shown = ", ".join(sorted(str(snapshot)[:12] for snapshot in used))
        raise ReproduceError(
            f"the run was resumed under other code than it started with ({shown}): "
            "no one snapshot can reproduce it"
        )
    return used.pop() if used else last


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        content = files.read_json(path)
    except files.UnreadableFile as error:
        raise ReproduceError(f"cannot read {what}: {error}") from error
    if not isinstance(content, dict):
        raise ReproduceError(f"{path} is malformed")
    return content


def _script(recorded: str, run_dir: Path) -> Path:
    """The recorded train.py, relative to the project root: ``experiments/<task>/train.py``."""
    path = Path(recorded)
    if path.name != "train.py":
        raise ReproduceError(f"the recorded command does not run a train.py: {recorded}")
    parts = path.parts
    if "experiments" in parts:
        index = len(parts) - 1 - parts[::-1].index("experiments")
        return Path(*parts[index:])
    if run_dir.parent.name == "results":  # launched from inside the task's directory: `python train.py`
        return Path("experiments", run_dir.parent.parent.name, "train.py")
    raise ReproduceError(f"cannot tell which task's train.py {recorded} is")


def _new_name(run_dir: Path) -> str:
    """``<run>-reproduced-<time>``, unique beside ``run_dir``."""
    stem = f"{run_dir.name[: MAX_RUN_NAME - 32]}-reproduced-{time.strftime('%Y%m%d-%H%M%S')}"
    name, count = stem, 1
    while (run_dir.parent / name).exists():
        count += 1
        name = f"{stem}-{count}"
    return name


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


def _checkpoint(run_dir: Path, kind: str) -> Path | None:
    for suffix in (".pt", ".ckpt"):
        if (run_dir / "checkpoints" / f"{kind}{suffix}").is_file():
            return run_dir / "checkpoints" / f"{kind}{suffix}"
    return None


def _compare_weights(interpreter: str, ours: Path, theirs: Path) -> dict[str, Any]:
    # from an empty directory: `python -c` imports from its working directory first, and a
    # run directory (or wherever the user stands) may hold a json.py or a torch.py of anyone's
    with tempfile.TemporaryDirectory(prefix="dlscaffold-compare-") as empty:
        result = subprocess.run(
            [interpreter, "-c", COMPARE, str(ours), str(theirs)],
            cwd=empty,
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as error:
        raise ReproduceError(f"cannot compare the checkpoints: {result.stderr.strip()[-300:]}") from error
    return report
