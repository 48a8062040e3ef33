"""Flavoured template files: ``name.pytorch.csv.ext`` is ``name.ext`` where pytorch and csv are chosen."""

from __future__ import annotations

import ast
import itertools
import json
import shutil
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from dlscaffold.errors import TemplateError
from dlscaffold.render import flavoured
from dlscaffold.template import FLAVOUR_VARIABLES, Template, bundled_template_dir

from conftest import FRAMEWORKS, cookiecutter

TRACKERS = ["tensorboard", "csv", "wandb"]
CHOICES = list(itertools.product(FRAMEWORKS, TRACKERS))
HOOK = bundled_template_dir() / "hooks" / "post_gen_project.py"
TASK = "{{cookiecutter.task_name}}"
KEPT_TEMPLATES = sorted((Path(__file__).parent / "data").glob("template-*.tar.gz"))

TINY_FILES = [
    "README.md",
    "plain.name.py",  # "name" is no choice: the name stays
    "lightning.lightning.py",  # the stem is never a flavour, even when it is a choice
    "t.pytorch.csv.py",
    "t.pytorch.tensorboard.py",
    "t.lightning.csv.py",
    "u.csv.py",
    "lib/v.wandb.lightning.py",  # the parts may come in any order
]
# what each choice writes beside README.md and plain.name.py: path -> the template file it comes from
WRITES = {
    ("lightning", "tensorboard"): {"lightning.py": "lightning.lightning.py"},
    ("lightning", "csv"): {
        "lightning.py": "lightning.lightning.py",
        "t.py": "t.lightning.csv.py",
        "u.py": "u.csv.py",
    },
    ("lightning", "wandb"): {
        "lightning.py": "lightning.lightning.py",
        "lib/v.py": "lib/v.wandb.lightning.py",
    },
    ("pytorch", "tensorboard"): {"t.py": "t.pytorch.tensorboard.py"},
    ("pytorch", "csv"): {"t.py": "t.pytorch.csv.py", "u.py": "u.csv.py"},
    ("pytorch", "wandb"): {},
}
ALWAYS = {"README.md": "README.md", "plain.name.py": "plain.name.py"}


def tiny_template(root: Path, files: list[str], hook: bool = False) -> Template:
    """A template whose every file holds its own template path, so that the output says where it came from."""
    variables = {
        "project_name": "tiny",
        "project_slug": "{{ cookiecutter.project_name }}",
        "framework": FRAMEWORKS,
        "task_name": "task1",
        "tracker": TRACKERS,
    }
    root.mkdir()
    (root / "cookiecutter.json").write_text(json.dumps(variables))
    for name in files:
        path = root / "{{cookiecutter.project_slug}}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    if hook:
        (root / "hooks").mkdir()
        shutil.copy(HOOK, root / "hooks" / HOOK.name)
    return Template(root)


def planned(template: Template, framework: str, tracker: str) -> dict[str, str]:
    context = template.context({"framework": framework, "tracker": tracker})
    return {
        str(file.path): file.source.relative_to(template.project_dir).as_posix()
        for file in template.plan(context)
    }


@pytest.mark.parametrize(
    ("name", "chosen", "expected"),
    [
        ("t.pytorch.csv.py", ("pytorch", "csv"), "t.py"),
        ("t.csv.pytorch.py", ("pytorch", "csv"), "t.py"),
        ("t.pytorch.csv.py", ("pytorch", "wandb"), None),
        ("t.pytorch.csv.py", ("lightning", "csv"), None),
        ("u.csv.py", ("lightning", "csv"), "u.py"),
        ("u.csv.py", ("lightning", "wandb"), None),
        ("state.pytorch.py", ("pytorch", "csv"), "state.py"),
        ("a.b.pytorch.py", ("pytorch", "csv"), "a.b.py"),
        ("lightning.lightning.py", ("lightning", "csv"), "lightning.py"),
        ("plain.name.py", ("pytorch", "csv"), "plain.name.py"),
        ("a.pytorch.b.py", ("lightning", "csv"), "a.pytorch.b.py"),  # only the run right before ".py"
        ("pytorch.py", ("lightning", "csv"), "pytorch.py"),  # fewer than three parts
        ("x.pytorch", ("lightning", "csv"), "x.pytorch"),
        ("x.pytorch.lightning.py", ("pytorch", "csv"), None),  # never both
    ],
)
def test_flavoured_names(name: str, chosen: tuple[str, str], expected: str | None) -> None:
    path = PurePosixPath("dir.pytorch.py", name)  # a directory's name is never flavoured
    kept = flavoured(path, {*FRAMEWORKS, *TRACKERS}, chosen)
    assert kept == (None if expected is None else path.with_name(expected))


@pytest.mark.parametrize(("framework", "tracker"), CHOICES)
def test_each_choice_writes_the_files_of_its_flavours(tmp_path: Path, framework: str, tracker: str) -> None:
    template = tiny_template(tmp_path / "template", TINY_FILES)
    assert planned(template, framework, tracker) == {**ALWAYS, **WRITES[framework, tracker]}


@pytest.mark.parametrize(("framework", "tracker"), CHOICES)
def test_cookiecutter_writes_the_same_through_the_hook(tmp_path: Path, framework: str, tracker: str) -> None:
    template = tiny_template(tmp_path / "template", TINY_FILES, hook=True)
    result = cookiecutter(
        tmp_path / "out", f"framework={framework}", f"tracker={tracker}", template=template.root
    )
    assert result.returncode == 0, result.stderr
    project = tmp_path / "out" / "tiny"
    written = {
        path.relative_to(project).as_posix(): path.read_text()
        for path in project.rglob("*")
        if path.is_file()
    }
    assert written == planned(template, framework, tracker)


@pytest.mark.parametrize(
    "files",
    [["x.py", "x.pytorch.py"], ["x.pytorch.csv.py", "x.csv.pytorch.py"], ["x.csv.py", "x.pytorch.py"]],
)
def test_two_files_on_one_path_are_a_template_bug(tmp_path: Path, files: list[str]) -> None:
    template = tiny_template(tmp_path / "template", files)
    with pytest.raises(TemplateError, match=r"both become x\.py for pytorch, csv"):
        planned(template, "pytorch", "csv")
    assert planned(template, "lightning", "tensorboard") == ({"x.py": "x.py"} if "x.py" in files else {})


def test_plain_cookiecutter_refuses_two_files_on_one_path(tmp_path: Path) -> None:
    template = tiny_template(tmp_path / "template", ["x.csv.py", "x.pytorch.py"], hook=True)
    result = cookiecutter(tmp_path / "out", "framework=pytorch", "tracker=csv", template=template.root)
    assert result.returncode != 0
    assert "two template files become x.py for pytorch, csv" in result.stderr
    assert not (tmp_path / "out" / "tiny").exists()


def test_the_hook_knows_the_choices_of_cookiecutter_json() -> None:
    """The hook cannot read cookiecutter.json's lists, so it spells them out; they must not drift apart."""
    assignment = next(line for line in HOOK.read_text().splitlines() if line.startswith("CHOICES = "))
    hook_choices = ast.literal_eval(assignment.removeprefix("CHOICES = "))
    variables = Template(bundled_template_dir()).variables
    assert hook_choices == {name: tuple(variables[name]) for name in FLAVOUR_VARIABLES}


@pytest.mark.parametrize("archive", KEPT_TEMPLATES, ids=lambda path: path.name)
def test_kept_templates_render_as_under_the_framework_only_rule(tmp_path: Path, archive: Path) -> None:
    """Templates from before tracker flavours render exactly as the one-suffix rule rendered them."""
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    template = Template(tmp_path)
    for framework, tracker in CHOICES:
        context = template.context({"framework": framework, "tracker": tracker})
        expected = []
        for source in sorted(path for path in template.project_dir.rglob("*") if path.is_file()):
            parts = source.name.split(".")
            if len(parts) >= 3 and parts[-2] in FRAMEWORKS:
                if parts[-2] != framework:
                    continue
                source = source.with_name(".".join([*parts[:-2], parts[-1]]))
            expected.append(source.relative_to(template.project_dir).as_posix())
        rendered = [file.path.as_posix() for file in template.plan(context)]
        assert sorted(rendered) == sorted(path.replace(TASK, "task1") for path in expected)
