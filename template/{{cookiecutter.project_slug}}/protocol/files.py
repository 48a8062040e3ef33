"""Run protocol, rarely edited: atomic writes, tolerant reads, scripts loaded by path."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import stat
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
    """Atomically write ``data`` as indented, strict JSON (a NaN or infinite number becomes null)."""
    text = json.dumps(finite_values(data), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def finite_values(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # "NaN" is not JSON: strict readers (jq, browsers, dlscaffold) refuse the file
    if isinstance(value, dict):
        return {key: finite_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_values(item) for item in value]
    return value


MAX_READ_BYTES = 64 << 20  # a manifest with a large git diff is a few MB; nothing we write is larger


def read_json(path: Path) -> Any:
    """Read a JSON file, or ``None`` if it is missing, half-written or not a run's file at all.

    Never hangs or runs away: a FIFO, a device or a huge file is refused on its
    type and size before any read; NaN and Infinity, which no strict JSON reader
    accepts, count as malformed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of blocking
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_READ_BYTES:
        os.close(fd)  # checked before fdopen, which would raise on a directory
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            return json.loads(handle.read(MAX_READ_BYTES), parse_constant=_not_a_number)
        except (OSError, ValueError, RecursionError):
            return None


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def describe_os_error(error: OSError) -> str:
    """One line for a file-system error: which path, and what went wrong."""
    return f"{error.filename}: {error.strerror}" if error.filename else str(error)


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters written as escapes (``\\n``)."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


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
