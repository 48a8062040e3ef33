"""Work on untrusted input in a child process with a deadline and a memory cap.

A project's kept template is a file anyone with commit rights can craft. The
Jinja sandbox stops it from reaching the machine, but not from looping: a few
nested ``range`` loops render for ever, and a string multiplied into gigabytes
takes the memory. So ``add-task`` and ``update`` render in a forked child
(forking copies the loaded modules: no start-up cost) that is killed at its
deadline, with its address space and CPU time capped and a signal to end it
when its parent dies; the parent turns any of it into one line. The child's
errors come back as they were raised, so a full disk in the child reads like
a full disk in the parent. What the child writes goes into directories the
parent made and removes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import time
from collections.abc import Callable
from typing import TypeVar

from dlscaffold.errors import DlscaffoldError, TemplateError

T = TypeVar("T")

DEFAULT_SECONDS = 60.0  # a 50-task project renders in about 2 s on a slow laptop
TIMEOUT_VARIABLE = "DLSCAFFOLD_RENDER_TIMEOUT"
MAX_SECONDS = 86400.0
MEMORY_HEADROOM = 2 * 1024**3  # bytes the child may map beyond what it inherits
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def deadline_s() -> float:
    """The render deadline: ``$DLSCAFFOLD_RENDER_TIMEOUT`` seconds if set to a positive number."""
    try:
        seconds = float(os.environ.get(TIMEOUT_VARIABLE, DEFAULT_SECONDS))
    except ValueError:
        raise DlscaffoldError(f"{TIMEOUT_VARIABLE} must be a number of seconds") from None
    if not 0 < seconds <= MAX_SECONDS:
        raise DlscaffoldError(f"{TIMEOUT_VARIABLE} must be a number of seconds from 0 to {MAX_SECONDS:g}")
    return seconds


def run_bounded(function: Callable[[], T], what: str, seconds: float | None = None) -> T:
    """``function()``, run in a child process; its result, or its error raised here.

    ``what`` names the work in messages ("rendering the project's kept template").
    """
    if not hasattr(os, "fork"):
        return function()  # no fork (Windows): no bound, as before
    seconds = deadline_s() if seconds is None else seconds
    reader, writer = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(reader)
        _child(function, writer, what, parent, seconds)
    os.close(writer)
    try:
        data = _read_until(reader, time.monotonic() + seconds)
    except BaseException:  # the deadline, or a Ctrl-C: the child goes with it
        _kill(pid)
        raise
    finally:
        os.close(reader)
    if data is None:
        _kill(pid)
        raise TemplateError(
            f"{what} took longer than {seconds:g} s, so it was stopped: the template loops, or is "
            f"far larger than any real one (set {TIMEOUT_VARIABLE} to allow more time)"
        )
    _, status = os.waitpid(pid, 0)
    if not data:
        died = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
        raise TemplateError(f"{what} failed: the process doing it died ({died}), out of memory?")
    ok, value = pickle.loads(data)  # written by our own child, below
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _child(function: Callable[[], object], writer: int, what: str, parent: int, seconds: float) -> None:
    status = 0
    try:
        _die_with(parent, seconds)
        _cap_memory()
        try:
            outcome: tuple[bool, object] = (True, function())
        except (DlscaffoldError, OSError, KeyboardInterrupt) as error:
            outcome = (False, error)
        except MemoryError:
            outcome = (False, TemplateError(f"{what} needs more memory than any real template"))
        except Exception as error:  # whatever a crafted template provokes is the template's fault
            outcome = (False, TemplateError(f"{what} failed: {type(error).__name__}: {error}"))
        try:
            data = pickle.dumps(outcome)
        except Exception as error:
            data = pickle.dumps((False, TemplateError(f"{what} failed: {error}")))
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(data)
    except BaseException:
        status = 1
    finally:
        os._exit(status)  # no atexit handlers, no flushing of the parent's buffers twice


def _die_with(parent: int, seconds: float) -> None:
    """End the child if its parent dies (a kill -9 of the command), and after ``seconds`` of CPU
    whatever happens: a child left spinning would hold the project's lock for ever."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # Linux; elsewhere, the CPU limit
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    try:
        import resource

        used = resource.getrusage(resource.RUSAGE_SELF)
        limit = int(used.ru_utime + used.ru_stime + seconds) + 2
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard == resource.RLIM_INFINITY or limit < hard:
            resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))  # SIGXCPU ends it
    except (ImportError, OSError, ValueError):
        pass


def _cap_memory() -> None:
    try:
        import resource
    except ImportError:
        return
    mapped = _mapped_bytes()
    if mapped is None:
        return
    limit = mapped + MEMORY_HEADROOM
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _mapped_bytes() -> int | None:
    """This process's virtual memory size (Linux), or ``None`` where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything written to ``fd`` until its writer closes it; ``None`` if that is after ``deadline``."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
