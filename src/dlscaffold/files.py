"""Reading and writing files that anyone may have tampered with.

Every file dlscaffold reads (a project record, a run's flags) may be missing,
half-written, huge, a FIFO, a symlink to a device or not JSON at all; every
file it writes must appear whole or not at all. These helpers are the only way
the other modules touch such files.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

MAX_READ_BYTES = 1 << 20  # a record or a flag is a few KB; anything larger is not one


class UnreadableFile(Exception):
    """A file that is not a small, regular, UTF-8 JSON document; the message says what it is."""


def read_bytes(path: Path, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a small regular file, without ever blocking or reading without end.

    Opening with O_NONBLOCK makes a FIFO return at once instead of waiting for
    a writer; the type and size are checked on the open descriptor, so a
    symlink swapped in between cannot fool the check.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise UnreadableFile(describe_os_error(error, path)) from error
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)  # checked before fdopen, which refuses a directory with an error naming the fd
        what = "is not a regular file" if not stat.S_ISREG(info.st_mode) else f"is larger than {limit} bytes"
        raise UnreadableFile(f"{path} {what}")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise UnreadableFile(describe_os_error(error, path)) from error
    if len(data) > limit:
        raise UnreadableFile(f"{path} is larger than {limit} bytes")
    return data


def read_text(path: Path, limit: int = MAX_READ_BYTES) -> str:
    """The UTF-8 text of a small regular file, read with :func:`read_bytes`; a leading byte-order
    mark (an editor's on Windows) is not part of it."""
    try:
        return read_bytes(path, limit).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UnreadableFile(f"{path} is not UTF-8 text") from error


def read_json(path: Path) -> Any:
    """A JSON document read with :func:`read_text`; NaN, Infinity and duplicate keys are refused."""
    text = read_text(path)
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as error:  # ValueError covers JSONDecodeError and 5000-digit ints
        raise UnreadableFile(f"{path} is not valid JSON ({error})") from error


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        keys = [key for key, _ in pairs]
        raise ValueError(f"duplicate key {next(key for key in keys if keys.count(key) > 1)!r}")
    return result


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` for anything else (bools, NaN, 400-digit ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one rename, after the data is on disk."""
    write_bytes_atomic(path, text.encode("utf-8"))


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename, after the data is on disk."""
    fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            # as any file the user creates, not mkstemp's 0600
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(draft, path)
    except BaseException:
        Path(draft).unlink(missing_ok=True)
        raise


_ADVICE = {
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EROFS: "the file system is read-only; work on a writable one",
    errno.ENOSPC: "the disk is full; free some space and run the command again",
    errno.EDQUOT: "your disk quota is exceeded; free some space and run the command again",
    errno.ENOTDIR: "a file is where a directory is expected; move it away",
    errno.EISDIR: "a directory is where a file is expected; move it away",
    errno.EEXIST: "something is already there; move it away",
    errno.ENOENT: "it does not exist (a dangling symlink?)",
    errno.ELOOP: "it is a loop of symlinks",
    errno.ENAMETOOLONG: "the name is too long for the file system",
}


def describe_os_error(error: OSError, path: Path | str | None = None) -> str:
    """One line for an operating-system error: the path, what happened, and what to do."""
    where = error.filename if error.filename is not None else path
    what = error.strerror or str(error)
    advice = _ADVICE.get(error.errno or 0)
    line = f"{where}: {what}" if where is not None else what
    return f"{line}; {advice}" if advice else line
