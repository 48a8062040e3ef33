"""The rendering engine: a template tree rendered with Jinja into a staging directory.

It reproduces what cookiecutter does to a tree (paths and file contents are
Jinja templates, binary files and ``_copy_without_render`` globs are copied,
file modes are kept) with jinja2 alone, which is several times faster than
importing cookiecutter. It writes into a staging directory; moving the result
into place is :mod:`dlscaffold.transaction`'s job.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from dlscaffold.errors import TemplateError

SKIPPED_NAMES = frozenset({"__pycache__", ".DS_Store"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
# what rendering a template can raise: Jinja's errors (the sandbox's SecurityError among
# them) and whatever a crafted template provokes (1 / 0, '%d' % 'x', huge or deeply nested
# values): all of it is the template's fault, never a reason for a traceback
RENDER_ERRORS = (Exception,)
MAX_RENDERED_FILE_BYTES = 8 * 1024 * 1024  # the largest template file renders to about 20 KB
MAX_RENDERED_BYTES = 256 * 1024 * 1024  # a whole project with a few hundred tasks


class _NoOtherFiles(jinja2.BaseLoader):
    """Each file renders on its own: ``{% include %}``, ``{% import %}``, ``{% extends %}`` find nothing."""

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, None]:
        raise jinja2.TemplateNotFound(
            f"{template!r}: a template file cannot include, import or extend another"
        )


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # Sandboxed: a project's kept copy of its template is a file anyone with commit
    # rights could have crafted, and an ordinary environment would run its code.
    return SandboxedEnvironment(
        loader=_NoOtherFiles(),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


@lru_cache(maxsize=1024)
def _compiled(source: str) -> jinja2.Template:
    """Compiling is most of a render's cost; a task's files are compiled once, not once per task."""
    return _environment().from_string(source)


def render_string(source: str, context: dict[str, Any]) -> str:
    """Render one Jinja string with ``cookiecutter`` bound to ``context``."""
    if "{" not in source:
        return source  # most path parts: nothing to render
    try:
        return _compiled(source).render(cookiecutter=context)
    except RENDER_ERRORS as error:
        raise TemplateError(f"cannot render {source[:60]!r}: {_described(error)}") from error


def _described(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def render_part(source: str, context: dict[str, Any]) -> str:
    """One rendered component of a path: a plain name, never a way out of the destination."""
    part = render_string(source, context)
    if part in ("", ".", "..") or "/" in part or "\\" in part or "\0" in part:
        raise TemplateError(f"the template path part {source[:60]!r} renders to {part[:60]!r}, not a name")
    if part.casefold() == ".git":  # hooks written there would run at the user's next git command
        raise TemplateError(f"the template path part {source[:60]!r} renders to .git, git's own directory")
    if part.startswith(".dlscaffold-staging-"):  # what recovery reads: never the template's to write
        raise TemplateError(f"the template path part {source[:60]!r} renders to a staging directory's name")
    return part


@dataclass(frozen=True)
class RenderedFile:
    """One file of the output: its path relative to the project root, and its source."""

    path: PurePosixPath
    source: Path

    @property
    def local_path(self) -> Path:
        """The relative path in this system's form, for joining to a destination."""
        return Path(*self.path.parts)


def plan(
    project_template: Path,
    context: dict[str, Any],
    include: Callable[[PurePosixPath], bool] = lambda _: True,
    flavours: Collection[str] = (),
    chosen: Collection[str] = (),
) -> list[RenderedFile]:
    """The files a render would write, with rendered paths, in a stable order.

    ``include`` sees each file's *template* path (with its Jinja), which is how
    add-task selects the files that belong to a task. ``flavours`` are the
    choices of the template's flavour variables and ``chosen`` the project's
    values of them: a file such as ``name.pytorch.csv.ext`` is written as
    ``name.ext`` when all its flavours are chosen and left out otherwise (see
    :func:`flavoured`). Two files that would land on one path are a template bug.
    """
    files = []
    origins: dict[PurePosixPath, PurePosixPath] = {}
    for source in sorted(_walk(project_template)):
        template_path = PurePosixPath(source.relative_to(project_template).as_posix())
        if not include(template_path):
            continue
        kept = flavoured(template_path, flavours, chosen)
        if kept is None:
            continue
        if kept in origins:
            raise TemplateError(
                f"the template files {origins[kept]} and {template_path} both become {kept} "
                f"for {', '.join(chosen)}; rename one so that each choice has one file per path"
            )
        origins[kept] = template_path
        rendered = PurePosixPath(*(render_part(part, context) for part in kept.parts))
        files.append(RenderedFile(rendered, source))
    return files


def flavoured(
    path: PurePosixPath, flavours: Collection[str], chosen: Collection[str]
) -> PurePosixPath | None:
    """``x.pytorch.csv.py`` is ``x.py`` in a pytorch project tracked with csv, absent from the others.

    The flavour parts are the run of ``flavours`` right before the extension,
    after the stem, in any order: the file is kept, without them, when every
    one is in ``chosen``, and dropped otherwise. Other paths (``x.py``,
    ``x.name.py``) stay as they are. One template file per flavour where the
    flavours differ keeps large Jinja blocks out of the generated code; the
    template's post-generation hook applies the same rule for plain cookiecutter.
    """
    parts = path.name.split(".")
    end = start = len(parts) - 1  # parts[start:end] are the flavour parts; parts[0] is always the stem
    while start > 1 and parts[start - 1] in flavours:
        start -= 1
    if start == end:
        return path
    if any(part not in chosen for part in parts[start:end]):
        return None
    return path.with_name(".".join([*parts[:start], parts[-1]]))


def _walk(root: Path) -> Iterator[Path]:
    for directory, subdirs, filenames in os.walk(root):
        subdirs[:] = [name for name in subdirs if name not in SKIPPED_NAMES]
        for name in filenames:
            if name not in SKIPPED_NAMES and not name.endswith(SKIPPED_SUFFIXES):
                yield Path(directory, name)


class Budget:
    """The bytes a render may still write: a crafted template cannot fill the disk."""

    def __init__(self, total: int = MAX_RENDERED_BYTES) -> None:
        self.left = total

    def spend(self, data: bytes, path: PurePosixPath) -> None:
        self.left -= len(data)
        if len(data) > MAX_RENDERED_FILE_BYTES or self.left < 0:
            raise TemplateError(f"{path} renders to more than any real template writes; not rendered")


def write(
    files: list[RenderedFile], context: dict[str, Any], destination: Path, budget: Budget | None = None
) -> None:
    """Render ``files`` under ``destination``, keeping each source's permission bits."""
    budget = budget or Budget()
    verbatim = context.get("_copy_without_render", [])
    if not isinstance(verbatim, list) or not all(isinstance(pattern, str) for pattern in verbatim):
        raise TemplateError("the template's _copy_without_render is not a list of patterns")
    for file in files:
        target = destination / file.local_path
        target.parent.mkdir(parents=True, exist_ok=True)
        data = file.source.read_bytes()
        if b"\0" not in data[:8192] and not _matches(file.path, verbatim):
            try:
                text = _compiled(data.decode("utf-8")).render(cookiecutter=context)
            except RENDER_ERRORS as error:  # UnicodeDecodeError among them
                raise TemplateError(f"cannot render {file.path}: {_described(error)}") from error
            data = text.encode("utf-8")
        budget.spend(data, file.path)
        target.write_bytes(data)
        shutil.copymode(file.source, target)


def _matches(path: PurePosixPath, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(str(path), pattern) for pattern in patterns)
