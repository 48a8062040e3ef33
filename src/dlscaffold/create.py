"""``dlscaffold new``: a whole project from the template, written all at once or not at all."""

from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dlscaffold import baseline, git, names, render, transaction
from dlscaffold.errors import InvalidValueError, TargetExistsError
from dlscaffold.tasks import recorded
from dlscaffold.template import Template, bundled_template_dir

FIRST_COMMIT_MESSAGE = "Start the project from the dlscaffold template"


@dataclass
class NewProject:
    """What ``new`` did, for the CLI to report."""

    root: Path
    files: list[Path]
    answers: dict[str, str]  # every answer the project was rendered with, defaults included
    kept: list[Path] = field(default_factory=list)  # existing entries left as they were (--force)
    git_problem: str | None = None  # why no first commit was made, if one was wanted
    git_initialised: bool = False


def validate_answers(answers: dict[str, str], template: Template) -> dict[str, object]:
    """Check every answer and return the full rendering context; nothing is written."""
    names.check_project_name(answers["project_name"])
    if "task_name" in answers:
        names.check_task_name(answers["task_name"])
    for key in ("author", "description"):
        if key in answers:
            names.check_text(answers[key], key)
    context = template.context(answers)
    names.check_slug(str(context["project_slug"]))
    return context


def create_project(
    answers: dict[str, str],
    output_dir: Path,
    *,
    here: bool = False,
    force: bool = False,
    use_git: bool = True,
    template: Template | None = None,
) -> NewProject:
    """Render the project for ``answers`` into ``output_dir/<project_slug>`` (``output_dir`` if ``here``).

    The target may be missing or an empty directory. Without ``force`` any
    other target is refused; with it, the template's files are added to the
    existing directory and whatever is already there (a file, a symlink, a
    directory's worth of files) is kept as it is: a user's entry is never
    overwritten, replaced or written through.
    """
    template = template or Template(bundled_template_dir())
    context = validate_answers(answers, template)
    target = output_dir.absolute() if here else output_dir / str(context["project_slug"])
    _check_target(target, force)
    files = template.plan(context)
    _check_unique(files, str(context["task_name"]))
    paths = [file.local_path for file in files] + [Path(baseline.ARCHIVE_NAME)]
    tree = baseline.read_tree(template.root)
    parent = target.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    repository = git.repository_of(parent)
    result = NewProject(
        root=target, files=paths, answers={key: str(context[key]) for key in template.questions()}
    )
    if use_git and repository is not None:
        result.git_problem = (
            f"{parent} is inside the git repository {repository}, so no repository of "
            "its own was made (its runs will record that repository's commits); use --output-dir "
            "elsewhere for one"
        )
    want_git = use_git and repository is None
    if not target.exists():
        with transaction.locked(parent):  # two `new` commands for one name: one wins, one is refused
            transaction.recover(parent, committed=lambda journal: recorded(parent, journal))
            _check_target(target, force)
            if not target.exists():
                with transaction.staging_dir(parent) as staging:
                    render.write(files, context, staging / "project")
                    baseline.stamp(staging / "project", tree)
                    if want_git:
                        _first_commit(staging / "project", target, result)
                    os.rename(staging / "project", target)  # the whole project appears at once
                return result
    with transaction.locked(target):
        transaction.recover(target, committed=lambda journal: recorded(target, journal))
        _check_target(target, force)
        _check_needed_directories(target, paths)
        empty = not _entries(target)
        with transaction.staging_dir(target) as staging:
            render.write(files, context, staging)
            baseline.stamp(staging, tree)
            if want_git and empty:
                _first_commit(staging, target, result)  # moved in with the files: no half repository
                paths = [*paths, Path(".git")] if result.git_initialised else paths
            result.kept = _merge(staging, target, paths)
    if want_git and not empty and not os.path.lexists(target / ".git"):
        result.git_problem = (
            f"{target} already held files, which dlscaffold does not commit for you; "
            "run `git init` and commit what you want there"
        )
    return result


def _check_unique(files: list[render.RenderedFile], task: str) -> None:
    """Refuse a task name whose files land on the template's own (``loader``: tests/test_loader.py)."""
    seen: set[PurePosixPath] = set()
    for file in files:
        if file.path in seen:
            raise InvalidValueError(
                f"the task name {task!r} would make {file.path}, which the project already has "
                "for itself; choose another name"
            )
        seen.add(file.path)


def _check_target(target: Path, force: bool) -> None:
    if target.is_symlink() and not target.exists():
        raise TargetExistsError(f"{target} is a dangling symlink; remove it or choose another name")
    if not target.exists():
        return
    if not target.is_dir():
        raise TargetExistsError(
            f"{target} exists and is not a directory; choose another name or --output-dir"
        )
    if _entries(target) and not force:
        raise TargetExistsError(
            f"{target} already exists and is not empty; choose another name or --output-dir, "
            "or pass --force to add the template's files to it (existing files are kept)"
        )


def _check_needed_directories(target: Path, paths: list[Path]) -> None:
    """Refuse, before writing, a user's entry where the project needs a directory of its code.

    A file there, or a symlink to one, leaves the project without that package; a symlink
    to a directory is kept (``data -> /big/disk``), unless the template puts code inside,
    which dlscaffold never writes through a symlink.
    """
    needed: dict[Path, list[Path]] = {}
    for path in paths:
        blocked = _in_the_way(target, path)
        if blocked is not None and blocked != path:
            needed.setdefault(blocked, []).append(path)
    for entry, inside in sorted(needed.items()):
        code = [path for path in inside if path.suffix == ".py"]
        if not (target / entry).is_dir() or code:
            shown = ", ".join(str(path) for path in (code or inside)[:3])
            raise TargetExistsError(
                f"{target / entry} is {'a symlink' if (target / entry).is_symlink() else 'a file'} where "
                f"the project needs the directory {entry}/ (for {shown}); move it away and run again"
            )


def _entries(directory: Path) -> list[Path]:
    """What a directory holds, apart from staging directories left by a killed command."""
    return [path for path in directory.iterdir() if not path.name.startswith(transaction.STAGING_PREFIX)]


def _first_commit(root: Path, target: Path, result: NewProject) -> None:
    """``git init`` and commit in the staging directory ``root``; on failure, no half repository is left."""
    problem = git.init_with_first_commit(root, FIRST_COMMIT_MESSAGE)
    if problem is not None:
        shutil.rmtree(root / ".git", ignore_errors=True)
        result.git_problem = problem.replace(str(root), str(target))  # name where the user will look
    result.git_initialised = problem is None


def _merge(staging: Path, target: Path, files: list[Path]) -> list[Path]:
    """Move rendered files into an existing directory, keeping whatever is in their way."""
    blocked = {path: _in_the_way(target, path) for path in files}
    transaction.move_into(staging, target, [path for path in files if blocked[path] is None])
    transaction.done(staging)
    kept = set()
    for path, entry in blocked.items():
        same = (
            entry == path and (target / path).is_file() and filecmp.cmp(staging / path, target / path, False)
        )
        if entry is not None and not same:
            kept.add(entry)
    return sorted(kept)


def _in_the_way(target: Path, path: Path) -> Path | None:
    """The user's entry that keeps ``path`` from being written: the file itself, or a parent of it
    that is a file or a symlink (writing through a symlink would write outside the project)."""
    for parent in reversed(path.parents[:-1]):  # experiments, experiments/task1, ...
        entry = target / parent
        if os.path.lexists(entry) and (entry.is_symlink() or not entry.is_dir()):
            return parent
    return path if os.path.lexists(target / path) else None
