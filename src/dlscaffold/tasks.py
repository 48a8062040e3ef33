"""``dlscaffold add-task``: a new task rendered from the same template files as the first.

The template holds one copy of every task-shaped file (paths containing
``{{cookiecutter.task_name}}``). ``new`` renders them for the first task; this
module renders just them, with the project's recorded answers and the new
name, so a task added later is the first task under another name. They come
from the template kept in the project (the one it was generated from or last
updated to), not from the installed dlscaffold's, so a project's tasks always
share one template and ``update`` can tell the template's changes from yours.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from dlscaffold import baseline, names, render, transaction
from dlscaffold.bounded import run_bounded
from dlscaffold.errors import NotAProjectError, TargetExistsError
from dlscaffold.project import ProjectRecord, read_project
from dlscaffold.render import RenderedFile
from dlscaffold.template import TASK_VARIABLE, Template, bundled_template_dir


@dataclass
class NewTask:
    """What ``add-task`` wrote (or, in a dry run, would write)."""

    name: str
    project: ProjectRecord
    files: list[Path]


RENDERING = "rendering the task with the project's kept template"


def is_task_file(template_path: PurePosixPath) -> bool:
    return TASK_VARIABLE in str(template_path)


def add_task(project_root: Path, task: str, *, dry_run: bool = False) -> NewTask:
    """Render ``task`` into the project at ``project_root``, or refuse, changing nothing.

    The project's lock is held throughout and the record is read under it, so
    two add-task commands at once both land, one after the other, and the
    record always lists exactly the tasks on disk.
    """
    names.check_task_name(task)
    with transaction.locked(project_root), contextlib.ExitStack() as stack:
        if not dry_run:
            transaction.recover(project_root, committed=lambda journal: recorded(project_root, journal))
        project = read_project(project_root)
        template = stack.enter_context(template_of(project))
        if dry_run:  # rendered all the same, so that a dry run fails where the real one would
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dlscaffold-dry-run-")))
            paths = run_bounded(lambda: _render(project, task, template, scratch), RENDERING)
        else:
            with transaction.staging_dir(project_root) as staging:
                paths = run_bounded(lambda: _render(project, task, template, staging), RENDERING)
                transaction.move_into(staging, project_root, paths, task=task)
                try:
                    project.add_task(task)  # the commit point: from here on a kill keeps the task
                except BaseException:  # a full disk, a Ctrl-C: the files go, as if never added
                    transaction.undo(staging)
                    raise
                transaction.done(staging)
    return NewTask(name=task, project=project, files=paths)


def _render(project: ProjectRecord, task: str, template: Template, staging: Path) -> list[Path]:
    """The task's files, rendered into ``staging``; run in a bounded child, so the directory
    is the parent's to remove, whenever the child is stopped."""
    files, context = _plan(project, task, template)
    render.write(files, context, staging)
    return [file.local_path for file in files]


def _plan(project: ProjectRecord, task: str, template: Template) -> tuple[list[RenderedFile], dict[str, Any]]:
    if task in project.tasks:
        raise TargetExistsError(f"the project already has a task named {task!r}")
    answers = {key: value for key, value in project.answers.items() if key in template.questions()}
    if "framework" not in answers:
        raise NotAProjectError(f"the project record in {project.root} does not say which framework it uses")
    context = template.context({**answers, "task_name": task})
    files = template.plan(context, include=is_task_file)
    clashes = [file.local_path for file in files if os.path.lexists(project.root / file.local_path)]
    clashes += _blocked_directories(project.root, [file.local_path for file in files])
    if clashes:
        shown = ", ".join(sorted({str(path) for path in clashes}))
        raise TargetExistsError(
            f"task {task!r} would overwrite {shown}; move them away or choose another name"
        )
    return files, context


def _blocked_directories(root: Path, paths: list[Path]) -> list[Path]:
    """Parents of new files that are files or symlinks: writing there would fail, or leave the project."""
    parents = {parent for path in paths for parent in path.parents[:-1]}
    return [
        parent
        for parent in parents
        if os.path.lexists(root / parent) and ((root / parent).is_symlink() or not (root / parent).is_dir())
    ]


@contextlib.contextmanager
def template_of(project: ProjectRecord) -> Iterator[Template]:
    """The template the project keeps, laid out for rendering; the bundled one if it keeps none."""
    digest = project.template_digest
    if digest is None:  # made by plain cookiecutter, or before projects kept their template
        yield Template(bundled_template_dir())
        return
    with baseline.laid_out(baseline.stored(project.root, digest)) as template:
        yield template


def recorded(project_root: Path, journal: dict[str, Any]) -> bool:
    """Whether the add-task that wrote ``journal`` got as far as recording its task (update's
    journals name no task: whatever they left is always undone)."""
    try:
        return journal.get("task") in read_project(project_root).tasks
    except NotAProjectError:
        return False
