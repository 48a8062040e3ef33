"""``dlscaffold new``: a whole project from the template, written all at once or not at all."""

from __future__ import annotations

import filecmp
import os
from dataclasses import dataclass, field
from pathlib import Path

from dlscaffold import git, names, render
from dlscaffold.errors import TargetExistsError
from dlscaffold.template import Template, bundled_template_dir

FIRST_COMMIT_MESSAGE = "Start the project from the dlscaffold template"


@dataclass
class NewProject:
    """What ``new`` did, for the CLI to report."""

    root: Path
    files: list[Path]
    answers: dict[str, str]  # every answer the project was rendered with, defaults included
    kept: list[Path] = field(default_factory=list)  # existing files left as they were (--force)
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
    force: bool = False,
    use_git: bool = True,
    template: Template | None = None,
) -> NewProject:
    """Render the project for ``answers`` into ``output_dir/<project_slug>``.

    Without ``force`` an existing target is refused. With it, the template's
    files are added to the existing directory and any file already there is
    kept as it is: a user's file is never overwritten or deleted.
    """
    template = template or Template(bundled_template_dir())
    context = validate_answers(answers, template)
    target = output_dir / str(context["project_slug"])
    if target.exists() and not force:
        raise TargetExistsError(
            f"{target} already exists; choose another name or --output-dir, "
            "or pass --force to add the template's files to it (existing files are kept)"
        )
    if target.exists() and not target.is_dir():
        raise TargetExistsError(f"{target} exists and is not a directory")
    files = template.plan(context)
    paths = [file.local_path for file in files]
    want_git = use_git and not (output_dir.exists() and git.inside_repository(output_dir))
    with render.staging_dir(output_dir) as staging:
        project = staging / "project"
        render.write(files, context, project)
        if target.exists():
            kept = _merge(project, target, paths)
            want_git = want_git and not (target / ".git").exists()
        else:
            os.rename(project, target)
            kept = []
    answers = {key: str(context[key]) for key in template.questions()}
    result = NewProject(root=target, files=paths, answers=answers, kept=kept)
    if want_git:
        result.git_problem = git.init_with_first_commit(target, FIRST_COMMIT_MESSAGE)
        result.git_initialised = result.git_problem is None
    return result


def _merge(staging: Path, target: Path, files: list[Path]) -> list[Path]:
    """Move rendered files into an existing project directory, keeping whatever is there."""
    kept = [path for path in files if (target / path).exists()]
    render.move_into(staging, target, [path for path in files if path not in kept])
    return [path for path in kept if not filecmp.cmp(staging / path, target / path, shallow=False)]
