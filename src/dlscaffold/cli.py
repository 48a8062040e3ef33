"""The ``dlscaffold`` command line: parse, call the library, print.

Only click is imported at start-up; each command imports what it needs when it
runs, so ``dlscaffold --help`` answers at once. torch and Lightning are never
imported here: they belong to the generated projects.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dlscaffold import __version__
from dlscaffold.errors import DlscaffoldError
from dlscaffold.template import Template, bundled_template_dir

if TYPE_CHECKING:
    from dlscaffold.create import NewProject

TEMPLATE = Template(bundled_template_dir())
QUESTIONS = TEMPLATE.questions()


class _Group(click.Group):
    """Turns the errors a user can cause into one clean line and exit code 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DlscaffoldError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlscaffold")
def main() -> None:
    """Generate deep-learning research projects that train, resume and reproduce.

    \b
      dlscaffold new myproject                    # PyTorch Lightning, TensorBoard
      dlscaffold new myproject --framework pytorch
      cd myproject && dlscaffold add-task task2   # another experiment, same conventions
      dlscaffold status                           # every run: finished, interrupted, failed
    """


def _choice(key: str) -> click.Choice[str]:
    return click.Choice(QUESTIONS[key])


@main.command()
@click.argument("name")
@click.option("--framework", type=_choice("framework"), help="Training framework  [default: lightning]")
@click.option("--task", "task_name", help="Name of the first task  [default: task1]")
@click.option("--tracker", type=_choice("tracker"), help="Experiment tracker  [default: tensorboard]")
@click.option("--author", help="Author, for the project metadata.")
@click.option("--description", help="One-line description of the project.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory in which the project directory is created.",
)
@click.option("--no-input", is_flag=True, help="Take defaults for everything not given; never prompt.")
@click.option(
    "--force",
    is_flag=True,
    help="Add the template's files to an existing directory; files already there are kept.",
)
@click.option("--no-git", is_flag=True, help="Do not initialise a git repository.")
def new(
    name: str,
    output_dir: Path,
    no_input: bool,
    force: bool,
    no_git: bool,
    **options: str | None,
) -> None:
    """Create the project NAME in a new directory.

    NAME may use letters, digits, '-', '_' and spaces; the directory and package
    name is its lowercase form with '_' for '-' and spaces (My-Project -> my_project).
    Values not given are asked for on a terminal, or take their defaults with
    --no-input. Nothing is written unless everything is valid.
    """
    from dlscaffold.create import create_project

    answers = {"project_name": name}
    interactive = not no_input and _stdin_is_terminal()
    for key, value in options.items():
        if value is not None:
            answers[key] = value
        elif interactive:
            answers[key] = _ask(key)
    _report_new(create_project(answers, output_dir, force=force, use_git=not no_git))


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _ask(key: str) -> str:
    default = QUESTIONS[key]
    if isinstance(default, list):
        return str(click.prompt(TEMPLATE.prompt_text(key), type=click.Choice(default), default=default[0]))
    return str(click.prompt(TEMPLATE.prompt_text(key), default=default))


def _report_new(result: NewProject) -> None:
    answers = result.answers
    click.echo(
        f"Created {result.root} ({answers['framework']}, {answers['tracker']}): {len(result.files)} files."
    )
    for path in result.kept:
        click.echo(f"  kept your existing {path} (the template's version was not written)")
    if result.git_initialised:
        click.echo("Initialised a git repository with a first commit.")
    elif result.git_problem:
        click.echo(f"No git repository: {result.git_problem}")
    task = answers["task_name"]
    click.echo(
        "\nNext:\n"
        f"  cd {result.root}\n"
        "  pip install -r requirements.txt\n"
        f"  python experiments/{task}/train.py --epochs 20\n"
        f"  python experiments/{task}/eval.py\n"
        "  pytest"
    )


@main.command("add-task")
@click.argument("name")
@click.option(
    "--project",
    "project_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The project to add to  [default: the one containing the current directory]",
)
@click.option("--dry-run", is_flag=True, help="List the files that would be written; write nothing.")
def add_task(name: str, project_dir: Path | None, dry_run: bool) -> None:
    """Add the task NAME to a generated project.

    The task gets experiments/NAME/{train,eval}.py, trainers/NAME_data.py,
    trainers/NAME_trainer.py and its tests: a copy of the example task under
    the new name, for the project's framework, that trains as it is. Existing
    files are never modified, apart from the project record.
    """
    from dlscaffold.project import find_project
    from dlscaffold.tasks import add_task as add

    project = find_project(project_dir or Path.cwd())
    result = add(project, name, dry_run=dry_run)
    verb = "Would add" if dry_run else "Added"
    click.echo(f"{verb} task {name!r} to {project.root}:")
    for path in result.files:
        click.echo(f"  {path}")
    if not dry_run:
        click.echo(
            f"\nIt is the example task under a new name. Make it yours: the data in trainers/{name}_data.py,"
            f"\nthe model, loss and training in trainers/{name}_trainer.py, the hyperparameters in"
            f"\nexperiments/{name}/train.py."
        )
        click.echo(f"Train it:\n  python experiments/{name}/train.py --epochs 1")


@main.command()
@click.argument("project_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--task", help="Only the runs of this task.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def status(project_dir: Path | None, task: str | None, as_json: bool) -> None:
    """Show every run of every task: state, progress, main metric, failures.

    Reads the run directories on disk only; works while runs are training.
    """
    import json

    from dlscaffold.project import find_project
    from dlscaffold.runs import collect_runs, format_table

    project = find_project(project_dir or Path.cwd())
    runs = collect_runs(project.root, task)
    if as_json:
        click.echo(json.dumps([run.to_dict() for run in runs], indent=2))
    else:
        click.echo(format_table(runs))
