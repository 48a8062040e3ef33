"""Changing a directory all at once: a lock, a staging directory, and recovery after a kill.

``new`` and ``add-task`` render into a staging directory (``.dlscaffold-staging-*``)
beside their destination and then move the files into place. While they do,
they hold an exclusive ``flock`` on the destination directory, so two commands
on one project run one after the other and never interleave. Before moving a
file they write a journal into the staging directory, naming each file and its
hash; a command killed half-way (even by SIGKILL) leaves that journal behind,
and the next command, once it holds the lock, undoes the moves it lists. A
staging directory that exists while nobody holds the lock is always such a
leftover: every command ignores them, and the next one removes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dlscaffold import files
from dlscaffold.errors import BusyError, RecoveryError

STAGING_PREFIX = ".dlscaffold-staging-"
JOURNAL = "journal.json"
ORIGINALS = ".dlscaffold-originals"  # in staging: files replaced or removed, until the change is done
DIRECTORY = "directory"  # the journal's digest of a directory moved in whole
LOCK_TIMEOUT_S = 60.0


@contextmanager
def locked(directory: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (an existing one) for the duration of the block.

    ``flock`` on the directory itself leaves no lock file to clean up or
    commit, and the kernel releases it when the process dies, however it dies.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BusyError(
                        f"another dlscaffold command has been changing {directory} for {timeout:.0f} s; "
                        "let it finish, then try again"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def staging_dirs(directory: Path) -> list[Path]:
    try:
        return [path for path in directory.iterdir() if path.name.startswith(STAGING_PREFIX)]
    except OSError:
        return []


def recover(directory: Path, committed: Callable[[dict[str, Any]], bool] = lambda _: False) -> None:
    """Undo what commands killed while working in ``directory`` left; call it holding the lock.

    ``committed(journal)`` says whether a journalled change had completed (for
    add-task: the record lists the task) and must be kept rather than undone.
    """
    for staging in staging_dirs(directory):
        if _tracked(staging):
            continue  # committed to git, so cloned or crafted, not left by a kill here: never acted on
        journal = _read_journal(staging / JOURNAL)
        if journal is not None and not _ours(journal, directory):
            raise RecoveryError(
                f"{staging} holds what a command killed half-way set aside, but it was written for "
                f"another directory ({journal['destination']}), so it was not undone here: look inside "
                "(.dlscaffold-originals holds the files it replaced), put back what you need, then "
                "remove it and run the command again"
            )
        if journal is not None and not committed(journal):
            _undo(journal, staging)
        shutil.rmtree(staging, ignore_errors=True)


def undo(staging: Path) -> None:
    """Take back the moves out of ``staging`` (a step after them failed); call it holding the lock."""
    journal = _read_journal(staging / JOURNAL)
    if journal is not None:
        _undo(journal, staging)
    done(staging)


def _ours(journal: dict[str, Any], directory: Path) -> bool:
    """Whether ``journal`` was written for ``directory`` by a command on it: its path then, or the
    same directory since moved or renamed (the same device and inode), never a copy or a plant.

    The path is compared as resolved text: a journal naming ``/proc/self/cwd`` or a
    symlink to the project is not one this machine's commands wrote for it.
    """
    try:
        if journal["destination"] == str(directory.resolve()):
            return True
        found = os.stat(directory)
    except OSError:
        return False
    identity = journal.get("identity")
    return isinstance(identity, list) and identity == [found.st_dev, found.st_ino]


def _tracked(staging: Path) -> bool:
    """Whether git tracks anything in ``staging`` (a kill leaves untracked directories only)."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z", "--", staging.name],
            cwd=staging.parent,
            capture_output=True,
            check=False,
        )
    except OSError:
        return False  # no git: nothing can have been committed
    return result.returncode == 0 and bool(result.stdout)


@contextmanager
def staging_dir(beside: Path) -> Iterator[Path]:
    """A scratch directory on the destination's file system, removed when the block ends.

    Rendering into it first means a failure half-way leaves nothing behind, and
    moving its content into place is a rename, not a copy. One exception: while
    it still holds a journal (a change that could not be taken back, because
    the file system refused even that), it holds the user's original files, so
    it stays for the next command's :func:`recover`.
    """
    path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=beside))
    try:
        yield path
    finally:
        if not (path / JOURNAL).exists():
            shutil.rmtree(path, ignore_errors=True)


def move_into(
    staging: Path, destination: Path, paths: list[Path], removes: list[Path] | None = None, **note: str
) -> None:
    """Move rendered files from ``staging`` into ``destination``, and take ``removes`` out: all, or none.

    Each move is a rename on one file system. A file already at a destination
    (``update`` rewriting a project's file) is first linked into ``staging``
    and then replaced in one rename, so it is never missing, not even for an
    instant (the record a command needs to find the project is such a file); a
    file removed is moved there. Nothing is lost until the caller calls
    :func:`done`. If a move fails, everything is put back; if the process is
    killed, the journal lets :func:`recover` do the same later. ``note`` is
    kept in the journal for the ``committed`` test of :func:`recover`.
    """
    removes = removes or []
    new_dirs = sorted(
        {parent for path in paths for parent in path.parents[:-1] if not (destination / parent).exists()}
    )
    found = os.stat(destination)
    journal: dict[str, Any] = {
        "destination": str(destination.resolve()),
        "identity": [found.st_dev, found.st_ino],  # recognised after a move or rename
        "files": {str(path): _digest(staging / path) for path in paths},
        "dirs": [str(directory) for directory in new_dirs],  # relative, like every path below
        "originals": [str(path) for path in [*paths, *removes] if os.path.lexists(destination / path)],
        "removes": [str(path) for path in removes],
        **note,
    }
    _write_journal(staging / JOURNAL, journal)
    try:
        for directory in new_dirs:
            (destination / directory).mkdir(exist_ok=True)
        for name in journal["originals"]:
            aside = staging / ORIGINALS / name
            aside.parent.mkdir(parents=True, exist_ok=True)
            if name in journal["removes"]:
                os.rename(destination / name, aside)
            else:
                _link_or_copy(destination / name, aside)
        for path in paths:
            try:
                os.rename(staging / path, destination / path)
            except OSError as error:  # named by where the user will look, not the staging copy
                raise OSError(error.errno, error.strerror, str(destination / path)) from error
    except BaseException:
        _undo(journal, staging)
        done(staging)
        raise


def done(staging: Path) -> None:
    """Mark the moves out of ``staging`` as complete: a kill from now on undoes nothing."""
    (staging / JOURNAL).unlink(missing_ok=True)


def _undo(journal: dict[str, Any], staging: Path) -> None:
    """Take back the files a command moved in, if still exactly as it wrote them, putting back
    the originals it set aside. Every step is tried; the first failure is raised at the end,
    and the journal stays, so that a later :func:`recover` can finish.

    The staging directory always sits in the directory it changes, so that is where
    its paths lead, wherever the project has moved since."""
    destination = staging.parent
    originals = set(journal.get("originals", []))
    failures: list[OSError] = []
    for name in [*journal["files"], *journal.get("removes", [])]:
        path, aside = destination / name, staging / ORIGINALS / name
        digest = journal["files"].get(name)
        original = name in originals and os.path.lexists(aside)
        try:
            if any(parent.is_symlink() for parent in [path, *path.parents] if destination in parent.parents):
                continue  # not something this command wrote, nor a way it would write
            if digest == DIRECTORY and path.is_dir():
                shutil.rmtree(path)
            elif digest is not None and path.is_file() and _digest(path) == digest:
                if original:
                    os.rename(aside, path)  # the original comes back in one step
                else:
                    path.unlink()
            elif original and not os.path.lexists(path):
                os.rename(aside, path)
        except OSError as error:
            failures.append(error)
    _remove_empty([destination / directory for directory in journal["dirs"] if _inside(directory)])
    if failures:
        raise failures[0]


def _link_or_copy(source: Path, target: Path) -> None:
    """A second name for ``source`` (a copy where the file system has no hard links)."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def _remove_empty(directories: list[Path]) -> None:
    for directory in sorted(directories, key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty (the user put something there), or already gone
            directory.rmdir()


def _digest(path: Path) -> str:
    if path.is_dir():
        return DIRECTORY  # moved whole: the .git of a project made in an empty directory
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_journal(path: Path, journal: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(journal, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _read_journal(path: Path) -> dict[str, Any] | None:
    try:
        journal = files.read_json(path)
    except files.UnreadableFile:
        return None  # no journal: the kill came before any move, or it is not ours
    valid = (
        isinstance(journal, dict)
        and isinstance(journal.get("destination"), str)
        and isinstance(journal.get("files"), dict)
        and all(isinstance(value, str) for value in journal["files"].values())
        and all(
            _inside(name) or (name == ".git" and digest == DIRECTORY)
            for name, digest in journal["files"].items()
        )
        and isinstance(journal.get("dirs"), list)
        and all(isinstance(value, str) for value in journal["dirs"])  # absolute ones (older) are skipped
        and isinstance(journal.get("originals", []), list)
        and all(_inside(value) for value in journal.get("originals", []))
        and isinstance(journal.get("removes", []), list)
        and all(_inside(value) for value in journal.get("removes", []))
    )
    return journal if valid else None


def _inside(name: Any) -> bool:
    """A relative path that stays below the directory it is joined to, outside git's own directory.

    The one ``.git`` a journal may name is the whole repository ``new`` moved
    into an empty directory (checked by the caller).
    """
    if not isinstance(name, str) or Path(name).is_absolute():
        return False
    parts = [part.casefold() for part in Path(name).parts]
    return bool(parts) and ".." not in parts and ".git" not in parts
