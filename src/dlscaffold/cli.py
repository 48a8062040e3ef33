"""The ``dlscaffold`` command line: parse, call the library, print.

Only click is imported at start-up; each command imports what it needs when it
runs, so ``dlscaffold --help`` answers at once. torch and Lightning are never
imported here: they belong to the generated projects.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dlscaffold import __version__
from dlscaffold.errors import DlscaffoldError
from dlscaffold.text import printable

if TYPE_CHECKING:
    from dlscaffold.create import NewProject
    from dlscaffold.template import Template


@functools.cache
def _template() -> Template:
    """The bundled template, read when a command needs it: ``dlscaffold --help`` never does."""
    from dlscaffold.template import Template, bundled_template_dir

    return Template(bundled_template_dir())


class _TemplateChoice(click.ParamType):  # type: ignore[type-arg]  # generic in click 8.2+ only
    """One of the bundled template's choices for a question, read from it when first needed."""

    name = "choice"

    def __init__(self, key: str) -> None:
        self.key = key

    def choice(self) -> click.Choice[str]:
        return click.Choice(_template().questions()[self.key])

    def get_metavar(self, *args: Any, **kwargs: Any) -> str | None:
        return self.choice().get_metavar(*args, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return self.choice().convert(value, param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> Any:
        return self.choice().shell_complete(ctx, param, incomplete)


class _Group(click.Group):
    """Turns the errors a user or the file system can cause into one clean line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DlscaffoldError as error:
            raise click.ClickException(printable(str(error))) from error
        except BrokenPipeError:  # `dlscaffold ... | head` has read enough: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None
        except OSError as error:  # a read-only directory, a full disk, a file where a directory should be
            from dlscaffold.files import describe_os_error

            if isinstance(error, FileNotFoundError) and error.filename is None:  # os.getcwd()
                raise click.ClickException(
                    "the current directory no longer exists; cd to another one"
                ) from error
            raise click.ClickException(printable(describe_os_error(error))) from error


def _check_task(project_root: Path, task: str | None) -> None:
    """Refuse ``--task`` naming a task the project does not have, listing those it has."""
    from dlscaffold.runs import task_names

    tasks = task_names(project_root)
    if task is not None and task not in tasks:
        known = ", ".join(tasks) or "none yet"
        raise click.BadParameter(
            f"the project has no task {task!r} (its tasks: {known})", param_hint="--task"
        )


def _here() -> Path:
    """The current directory, which may have been deleted under the shell."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        raise DlscaffoldError("the current directory no longer exists; cd to another one") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlscaffold")
def main() -> None:
    """Generate deep-learning research projects that train, resume and reproduce.

    \b
      dlscaffold new myproject                    # PyTorch Lightning, TensorBoard
      dlscaffold new myproject --framework pytorch
      cd myproject && dlscaffold add-task task2   # another experiment, same conventions
      dlscaffold status                           # every run: finished, interrupted, failed
      dlscaffold update                           # the current template's changes, merged into yours
    """


def _choice(key: str) -> _TemplateChoice:
    return _TemplateChoice(key)


@main.command()
@click.argument("name", required=False)
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
    help="Add the template's files to a directory that is not empty; whatever is there is kept.",
)
@click.option("--no-git", is_flag=True, help="Do not initialise a git repository.")
def new(
    name: str | None,
    output_dir: Path,
    no_input: bool,
    force: bool,
    no_git: bool,
    **options: str | None,
) -> None:
    """Create the project NAME in the directory NAME (or in the current one: NAME is '.').

    NAME may use letters, digits, '-', '_' and spaces; the directory and package
    name is its lowercase form with '_' for '-' and spaces (My-Project -> my_project).
    With '.', the current directory, empty or with --force, becomes the project
    and its name is the project's name. Values not given are asked for on a
    terminal, each checked as it is typed, or take their defaults with
    --no-input. Nothing is written unless everything is valid.
    """
    from dlscaffold.create import create_project

    interactive = not no_input and _stdin_is_terminal()
    here = name == "."
    if here:
        name = _here().name
        if output_dir != Path("."):
            raise click.UsageError("'new .' makes the current directory the project; drop --output-dir")
        _check("project_name", name, what=f"the current directory's name {name!r}")
    if name is None:
        if not interactive:
            raise click.UsageError("missing the project NAME (or '.' for the current directory)")
        name = _ask("project_name")
    answers = {"project_name": name}
    for key, value in options.items():
        if value is not None:
            answers[key] = value
        elif interactive:
            answers[key] = _ask(key)
    result = create_project(answers, output_dir, here=here, force=force, use_git=not no_git)
    _report_new(result, here)


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _check(key: str, value: str, what: str | None = None) -> str:
    """Apply the rule for ``key`` to one answer; a refusal names what was wrong."""
    from dlscaffold import names

    def project_name() -> None:
        names.check_project_name(value)
        names.check_slug(_slug(value))

    rules: dict[str, Callable[[], None]] = {
        "project_name": project_name,
        "task_name": lambda: names.check_task_name(value),
        "author": lambda: names.check_text(value, "author"),
        "description": lambda: names.check_text(value, "description"),
    }
    try:
        rules.get(key, lambda: None)()
    except DlscaffoldError as error:
        message = str(error) if what is None else f"{what} cannot name a project: {error}"
        raise click.BadParameter(printable(message)) from error
    return value


def _slug(name: str) -> str:
    return str(_template().context({"project_name": name})["project_slug"])


def _ask(key: str) -> str:
    """Prompt for one answer until it is valid, so a typo never costs the answers before it."""
    template = _template()
    default = template.questions()[key]
    if isinstance(default, list):
        return str(click.prompt(template.prompt_text(key), type=click.Choice(default), default=default[0]))
    return str(click.prompt(template.prompt_text(key), default=default, value_proc=lambda v: _check(key, v)))


def _report_new(result: NewProject, here: bool) -> None:
    answers = result.answers
    click.echo(
        f"Created {printable(str(result.root))} ({answers['framework']}, {answers['tracker']}): "
        f"{len(result.files)} files."
    )
    for path in result.kept:
        click.echo(f"  kept your existing {path} (the template's version was not written)")
    if result.git_initialised:
        click.echo("Initialised a git repository with a first commit.")
    elif result.git_problem:
        click.echo(printable(f"warning: no git repository: {result.git_problem}"), err=True)
    task = answers["task_name"]
    root = str(result.root)
    from shlex import quote  # here, not at the top: every command but new starts without it

    cd = "" if here or printable(root) != root else f"  cd {quote(root)}\n"
    click.echo(
        "\nNext:\n"
        f"{cd}"
        "  pip install -r requirements.txt        # or: uv sync, then uv run ...\n"
        f"  python experiments/{task}/train.py --epochs 20\n"
        f"  python experiments/{task}/eval.py\n"
        "  pytest"
    )


def _project_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--project DIR`` of a command that changes a project."""
    return click.option(
        "--project",
        "project_dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help=f"The project to {what}  [default: the one containing the current directory]",
    )


@main.command("add-task")
@click.argument("name")
@_project_option("add to")
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

    project = find_project(project_dir or _here(), how_to_name="pass --project DIR")
    result = add(project.root, name, dry_run=dry_run)
    verb = "Would add" if dry_run else "Added"
    click.echo(printable(f"{verb} task {name!r} to {project.root}:"))
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
    """Show every run of every task: state, progress, main metric, failures;
    then every hyperparameter search: trials done, pruned, failed, the best.

    Reads the run directories on disk only; works while runs are training.
    """
    import json

    from dlscaffold.project import find_project
    from dlscaffold.runs import collect_runs, format_table
    from dlscaffold.studies import collect_studies, format_studies

    project = find_project(project_dir or _here(), how_to_name="name it: dlscaffold status DIR")
    _check_task(project.root, task)
    runs = collect_runs(project.root, task)
    if as_json:
        click.echo(json.dumps([run.to_dict() for run in runs], indent=2, allow_nan=False))
        return
    click.echo(format_table(runs))
    studies = collect_studies(project.root, runs, task)
    if studies:
        click.echo(f"\nSearches (scripts/search.py; a relaunch goes on):\n{format_studies(studies)}")


@main.command()
@click.argument("project_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--task", help="Only the runs of this task.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the report into  [default: PROJECT_DIR/reports]",
)
def report(project_dir: Path | None, task: str | None, out_dir: Path | None) -> None:
    """Write a report of the runs: results tables and learning curves.

    Runs that differ only by their seed form a group. report.md shows, per
    task, each group's mean ± standard deviation over its finished runs, for
    the main metric and every final metric, and the curves of every run with a
    history (history.jsonl); results.csv and results.tex (booktabs, for a
    paper) hold the same table. The plots need matplotlib:
    pip install "dlscaffold[report]".
    """
    from dlscaffold.project import find_project
    from dlscaffold.report import write_report

    project = find_project(project_dir or _here(), how_to_name="name it: dlscaffold report DIR")
    _check_task(project.root, task)
    result = write_report(project.root, out_dir or project.root / "reports", task)
    if result.runs == 0:
        click.echo("No runs yet. Train one: python experiments/<task>/train.py")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(printable(f"Wrote {len(result.written)} files:"))
    for path in result.written:
        click.echo(printable(f"  {path}"))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    help="largest difference allowed in weights and metrics  [default: 0 (bitwise) for plain PyTorch, "
    "1e-6 for Lightning]",
)
@click.option(
    "--python",
    help="the Python to train with (a path, or a name on PATH)  [default: the active virtual "
    "environment's, else the project's .venv, else the one running dlscaffold]",
)
def reproduce(run_dir: Path, tolerance: float | None, python: str | None) -> None:
    """Train RUN_DIR again from the exact code and command it recorded, and compare.

    \b
    The code is the snapshot the run took of the project (a git commit under
    refs/dlscaffold/snapshots/, untracked files included), exported to a temporary
    directory; the new run lands beside the original as <run>-reproduced-<time>.
    Nothing of the original run or of your working tree, index or branches changes.
    Exit code 0 when final metrics and weights match within the tolerance.
    The interpreter the manifest names is never run (a run directory can come
    from anyone): the command says which Python it trains with, and why.
    """
    from dlscaffold.project import find_project
    from dlscaffold.reproduce import choose_python
    from dlscaffold.reproduce import reproduce as run_again

    project = find_project(run_dir, how_to_name="give a run directory inside a project")
    if tolerance is not None and not math.isfinite(tolerance):
        raise click.BadParameter(f"{tolerance} is not a finite number", param_hint="--tolerance")
    if tolerance is None:
        tolerance = 1e-6 if project.answers.get("framework") == "lightning" else 0.0
    result = run_again(project, run_dir, tolerance, choose_python(project.root, python))
    click.echo(f"\nreproduced as {printable(str(result.new_run))} (tolerance {tolerance:g}):")
    for key, (before, after) in result.metrics.items():
        click.echo(printable(f"  {key:<16} {before!s:<22} {after!s:<22}"))
    weights = result.weights
    click.echo(
        f"  weights: {weights['compared']} tensors, {len(weights['differing'])} differ "
        f"(largest difference {weights['largest']:.3g}), {len(weights['missing'])} missing"
    )
    same = result.metrics_match and result.weights_match
    click.echo("the run reproduces." if same else "the run does NOT reproduce within the tolerance.")
    if not same:
        raise SystemExit(1)


@main.command()
@_project_option("update")
@click.option("--dry-run", is_flag=True, help="List what would change, file by file; write nothing.")
@click.option("--diff", "show_diff", is_flag=True, help="Also print each change as a unified diff.")
@click.option(
    "--check",
    is_flag=True,
    help="Print nothing; exit 1 if an update is available, 0 if not, 2 if it cannot tell (for CI).",
)
@click.option(
    "--base-template",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="For a project that keeps no copy of its template: the template it was made from "
    "(a dlscaffold checkout at that version, or its template/ directory).",
)
@click.option(
    "--adopt",
    is_flag=True,
    help="For a project that keeps no copy of its template: take the current one as its base "
    "from now on, changing no other file.",
)
def update(
    project_dir: Path | None,
    dry_run: bool,
    show_diff: bool,
    check: bool,
    base_template: Path | None,
    adopt: bool,
) -> None:
    """Bring the project up to the installed dlscaffold's template, keeping your changes.

    \b
    Each file is merged three ways: as the template first rendered it (the copy the
    project keeps in .dlscaffold-template.tar.gz), as you made it, and as the
    current template renders it, for the first task and every task added since.
      - files you did not change take the template's new version;
      - files you changed are merged with git; where you and the template changed
        the same lines, <<<<<<< markers are left and the file is listed (exit 1);
      - files you deleted stay deleted; files the template dropped go, unless you
        changed them; files the template added appear.
    The working tree must be committed first, so `git diff` shows what the update
    did. It is written all at once or not at all.

    \b
      dlscaffold update --dry-run --diff    # what it would change, as diffs
      dlscaffold update                     # do it; review with `git diff`, commit
      dlscaffold update --check             # in CI: exit 1 when an update is available
    """
    from dlscaffold.project import find_project
    from dlscaffold.update import available, update_project

    if adopt and base_template is not None:
        raise click.UsageError("--adopt and --base-template exclude each other")
    if check and (dry_run or show_diff or adopt or base_template is not None):
        raise click.UsageError("--check takes no other option than --project")
    if check:
        try:
            project = find_project(project_dir or _here(), how_to_name="pass --project DIR")
            raise SystemExit(1 if available(project.root) else 0)
        except (DlscaffoldError, OSError) as error:
            click.echo(printable(f"Error: {error}"), err=True)
            raise SystemExit(2) from error
    project = find_project(project_dir or _here(), how_to_name="pass --project DIR")
    result = update_project(project.root, dry_run=dry_run, base_template=base_template, adopt=adopt)
    where = printable(str(result.root))
    if result.up_to_date:
        click.echo(f"{where} is up to date with the template {result.new}; nothing to do.")
        return
    verb = "Would update" if dry_run else ("Adopted" if adopt else "Updated")
    click.echo(f"{verb} {where} from the template {result.old} to {result.new}:")
    for change in result.changes:
        why = f"  ({change.why})" if change.why else ""
        click.echo(printable(f"  {change.action:<9} {change.path}{why}"))
    if not result.changes:
        click.echo("  no file of the project changes; the record names the new template")
    if show_diff:
        for change in result.changes:
            click.echo(printable(change.diff()), nl=False)
    if dry_run and result.dirty:
        click.echo("Uncommitted changes: commit them first, or update will refuse.")
    conflicts = result.conflicts
    if conflicts:
        files = f"{len(conflicts)} file{'s' * (len(conflicts) > 1)}"
        if dry_run:
            click.echo(f"{files} would be left in conflict, to resolve by hand.")
        else:
            click.echo(f"{files} in conflict: resolve the <<<<<<< markers, then commit.")
        raise SystemExit(1)
    if not dry_run:
        click.echo("Review it with `git diff`, run the tests, and commit.")
