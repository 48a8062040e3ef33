"""Run protocol, rarely edited: atomic writes, tolerant reads, scripts loaded by path."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# New files get the mode the user's umask allows (0644 under 022), like any file they create:
# mkstemp alone would make them 0600 and hide a run from a colleague's `dlscaffold status`.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through ``write(handle)`` so that readers see the old content or the new, never a mix.

    The data goes to a temporary file beside the target, is flushed to disk
    (fsync: it survives a crash of the machine too), and then replaces the
    target in one rename.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_UMASK)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; some file systems refuse, which is harmless here."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: Path) -> Any:
    """Read a JSON file, or ``None`` if it is missing, unreadable or half-written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def now() -> str:
    """The local time, as flags and manifests record it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def load_experiment_script(task: str, name: str) -> ModuleType:
    """Import ``experiments/<task>/<name>.py`` as a module (scripts are run by path, not as a package)."""
    path = PROJECT_ROOT / "experiments" / task / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no task {task!r}: {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"{task}_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
