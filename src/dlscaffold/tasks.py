"""``dlscaffold add-task``: a new task rendered from the same template files as the first.

The template holds one copy of every task-shaped file (paths containing
``{{cookiecutter.task_name}}``). ``new`` renders them for the first task; this
module renders just them, with the project's recorded answers and the new
name, so a task added later is the first task under another name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dlscaffold import names, render
from dlscaffold.errors import NotAProjectError, TargetExistsError
from dlscaffold.project import ProjectRecord
from dlscaffold.template import TASK_VARIABLE, Template, bundled_template_dir


@dataclass
class NewTask:
    """What ``add-task`` wrote (or, in a dry run, would write)."""

    name: str
    project: ProjectRecord
    files: list[Path]


def is_task_file(template_path: PurePosixPath) -> bool:
    return TASK_VARIABLE in str(template_path)


def add_task(
    project: ProjectRecord, task: str, *, dry_run: bool = False, template: Template | None = None
) -> NewTask:
    """Render ``task`` into ``project``; refuse, changing nothing, if anything is in the way."""
    names.check_task_name(task)
    if task in project.tasks:
        raise TargetExistsError(f"the project already has a task named {task!r}")
    template = template or Template(bundled_template_dir())
    answers = {key: value for key, value in project.answers.items() if key in template.questions()}
    if "framework" not in answers:
        raise NotAProjectError(f"the project record {project.root} does not say which framework it uses")
    context = template.context({**answers, "task_name": task})
    files = template.plan(context, include=is_task_file)
    paths = [file.local_path for file in files]
    clashes = [path for path in paths if (project.root / path).exists()]
    if clashes:
        raise TargetExistsError(
            f"task {task!r} would overwrite {', '.join(map(str, clashes))}; choose another name"
        )
    if not dry_run:
        with render.staging_dir(project.root) as staging:
            render.write(files, context, staging)
            render.move_into(staging, project.root, paths)
        project.add_task(task)
    return NewTask(name=task, project=project, files=paths)
