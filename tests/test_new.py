"""``dlscaffold new``: what it writes, and what it refuses to write."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlscaffold import cli as cli_module
from dlscaffold.template import Template, bundled_template_dir

from conftest import FRAMEWORKS, tree_digest

TRACKERS = ["tensorboard", "csv", "wandb"]
EXPECTED_PATHS = [
    "utils/dataset.py",
    "utils/utils.py",
    "layers/__init__.py",
    "data/raw",
    "data/processed",
    "experiments/task1/train.py",
    "experiments/task1/eval.py",
    "experiments/task1/results",
    "trainers/base_trainer.py",
    "trainers/task1_trainer.py",
    "scripts/sweep.py",
    "scripts/search.py",
    "tests/test_task1.py",
    "requirements.txt",
    "README.md",
    ".gitignore",
    ".dlscaffold.json",
]


@pytest.fixture(scope="module")
def every_flavour(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """One project per framework and tracker, rendered once for the whole module."""
    from dlscaffold.create import create_project

    root = tmp_path_factory.mktemp("flavours")
    projects = {}
    for framework, tracker in itertools.product(FRAMEWORKS, TRACKERS):
        answers = {"project_name": f"{framework}-{tracker}", "framework": framework, "tracker": tracker}
        projects[framework, tracker] = create_project(answers, root, use_git=False).root
    return projects


def test_every_flavour_has_the_research_layout(every_flavour: dict[tuple[str, str], Path]) -> None:
    for root in every_flavour.values():
        missing = [path for path in EXPECTED_PATHS if not (root / path).exists()]
        assert not missing, f"{root.name} lacks {missing}"


def test_every_generated_python_file_compiles(every_flavour: dict[tuple[str, str], Path]) -> None:
    for root in every_flavour.values():
        for path in root.rglob("*.py"):
            compile(path.read_text(), str(path), "exec")


def test_every_generated_python_file_is_ruff_clean_and_formatted(
    every_flavour: dict[tuple[str, str], Path],
) -> None:
    for root in every_flavour.values():
        for command in (["check"], ["format", "--check", "--diff"]):
            result = subprocess.run(
                ["ruff", *command, "--no-cache", "."], cwd=root, capture_output=True, text=True
            )
            assert result.returncode == 0, (
                f"ruff {command[0]} in {root.name}:\n{result.stdout}{result.stderr}"
            )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_longest_task_names_stay_ruff_clean(new_project, cli, framework: str) -> None:
    first, added = "a" * 30 + "_1", "z" * 30 + "_2"  # 32 characters: the longest allowed
    root = new_project(framework=framework, task_name=first).root
    assert cli("add-task", added, "--project", str(root)).exit_code == 0
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            ["ruff", *command, "--no-cache", "."], cwd=root, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout


def test_no_jinja_and_no_bytecode_is_left(every_flavour: dict[tuple[str, str], Path]) -> None:
    for root in every_flavour.values():
        for path in root.rglob("*"):
            assert "__pycache__" not in path.parts and "{{" not in str(path)
            if path.is_file() and path.name != ".dlscaffold-template.tar.gz":  # the template itself
                text = path.read_text()
                assert not any(marker in text for marker in ("{{", "{%", "{#")), path


def test_framework_and_tracker_shape_the_code(every_flavour: dict[tuple[str, str], Path]) -> None:
    lightning = every_flavour["lightning", "csv"]
    plain = every_flavour["pytorch", "wandb"]
    assert "pytorch-lightning" in (lightning / "requirements.txt").read_text()
    assert "lightning" not in (plain / "requirements.txt").read_text()
    assert "wandb" in (plain / "requirements.txt").read_text()
    assert "CSVLogger" in (lightning / "protocol" / "tracking.py").read_text()
    assert "LightningModule" in (lightning / "trainers" / "base_trainer.py").read_text()
    assert "import pytorch_lightning" not in "".join(p.read_text() for p in plain.rglob("*.py"))


def test_record_holds_the_answers_and_first_task(new_project) -> None:
    project = new_project("My-Project", framework="pytorch", task_name="vision", tracker="csv")
    assert project.root.name == "my_project"
    record = json.loads((project.root / ".dlscaffold.json").read_text())
    assert record["answers"]["framework"] == "pytorch"
    assert record["answers"]["tracker"] == "csv"
    assert record["tasks"] == ["vision"]
    assert (project.root / "trainers" / "vision_trainer.py").exists()
    assert "def train(run: Run)" in (project.root / "trainers" / "vision_trainer.py").read_text()


@pytest.mark.parametrize("script", ["latin", "astral"])
def test_text_is_escaped_wherever_it_lands_in_code(new_project, script: str) -> None:
    tricky = 'He said "hi" \\ {{ x }} {% raw %} \'\'\' """ é'
    if script == "astral":  # beyond the Basic Multilingual Plane: an emoji, a math letter, CJK ext. B
        tricky += " \U0001f600 \U0001d518 \U00020000 \u200d"
    project = new_project(description=tricky, author="O'Brien <ob@example.org>")
    tomllib = pytest.importorskip("tomllib")

    metadata = tomllib.loads((project.root / "pyproject.toml").read_text())["project"]
    assert metadata["description"] == tricky
    assert metadata["authors"] == [{"name": "O'Brien <ob@example.org>"}]
    assert json.loads((project.root / ".dlscaffold.json").read_text())["answers"]["description"] == tricky


@pytest.mark.parametrize(
    "text", ["two\nlines", "tab\there", "bell\x07", "line\u2028separator", "undecodable \udcff byte"]
)
def test_text_that_cannot_stay_one_clean_line_is_refused(cli, tmp_path: Path, text: str) -> None:
    result = cli("new", "demo", "--no-input", "--description", text, "--output-dir", str(tmp_path))
    assert result.exit_code == 1 and "the description" in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_what_it_made_and_what_to_run(cli, tmp_path: Path) -> None:
    result = cli("new", "demo", "--no-input", "--no-git", "--output-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "Created" in result.output and "lightning" in result.output
    assert "python experiments/task1/train.py" in result.output
    assert (tmp_path / "demo" / "experiments" / "task1" / "train.py").exists()


def test_git_repository_with_a_first_commit(cli, tmp_path: Path) -> None:
    result = cli("new", "demo", "--no-input", "--output-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    log = subprocess.run(["git", "log", "--oneline"], cwd=tmp_path / "demo", capture_output=True, text=True)
    assert len(log.stdout.splitlines()) == 1
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=tmp_path / "demo", capture_output=True, text=True
    )
    assert status.stdout == ""


def test_no_git_inside_an_existing_repository(cli, tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = cli("new", "demo", "--no-input", "--output-dir", str(tmp_path))
    assert result.exit_code == 0
    assert not (tmp_path / "demo" / ".git").exists()
    assert f"warning: no git repository: {tmp_path} is inside the git repository {tmp_path}" in result.output


def test_no_git_flag(cli, tmp_path: Path) -> None:
    assert cli("new", "demo", "--no-input", "--no-git", "--output-dir", str(tmp_path)).exit_code == 0
    assert not (tmp_path / "demo" / ".git").exists()


def test_existing_directory_is_refused_untouched(cli, tmp_path: Path) -> None:
    target = tmp_path / "demo"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    before = tree_digest(target)
    result = cli("new", "demo", "--no-input", "--output-dir", str(tmp_path))
    assert result.exit_code != 0
    assert "already exists" in result.output and "--force" in result.output
    assert tree_digest(target) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["demo"]


def test_force_adds_template_files_and_keeps_the_users(cli, tmp_path: Path) -> None:
    target = tmp_path / "demo"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    (target / "README.md").write_text("my readme")
    result = cli("new", "demo", "--no-input", "--no-git", "--force", "--output-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "README.md").read_text() == "my readme"
    assert "kept your existing README.md" in result.output
    assert (target / "experiments" / "task1" / "train.py").exists()


def test_failure_while_rendering_leaves_nothing(tmp_path: Path) -> None:
    from dlscaffold.create import create_project
    from dlscaffold.errors import TemplateError

    broken = tmp_path / "template"
    project_dir = broken / "{{cookiecutter.project_slug}}"
    project_dir.mkdir(parents=True)
    source = Template(bundled_template_dir())
    (broken / "cookiecutter.json").write_text(json.dumps(source.variables))
    (project_dir / "good.txt").write_text("fine")
    (project_dir / "zz_bad.txt").write_text("{% if %}")
    output = tmp_path / "out"
    output.mkdir()
    with pytest.raises(TemplateError):
        create_project({"project_name": "demo"}, output, use_git=False, template=Template(broken))
    assert list(output.iterdir()) == []


def test_prompts_on_a_terminal(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_module, "_stdin_is_terminal", lambda: True)
    from click.testing import CliRunner

    answers = "pytorch\nvision\ncsv\nAda\nSpirals, again\n"
    result = CliRunner().invoke(
        cli_module.main, ["new", "demo", "--no-git", "--output-dir", str(tmp_path)], input=answers
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "demo" / ".dlscaffold.json").read_text())
    assert record["answers"] == {
        "project_name": "demo",
        "project_slug": "demo",
        "framework": "pytorch",
        "tracker": "csv",
        "author": "Ada",
        "description": "Spirals, again",
    }
    assert record["tasks"] == ["vision"]


def test_each_answer_is_checked_as_it_is_typed(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_module, "_stdin_is_terminal", lambda: True)
    from click.testing import CliRunner

    # the name, then a bad task name that is asked again, keeping the answers before it
    answers = "2bad\nGood-Name\npytorch\nclass\nmy_task\ncsv\nAda\nline\n"
    result = CliRunner().invoke(
        cli_module.main, ["new", "--no-git", "--output-dir", str(tmp_path)], input=answers
    )
    assert result.exit_code == 0, result.output
    assert "invalid project name '2bad'" in result.output
    assert "'class': it is a Python keyword" in result.output
    record = json.loads((tmp_path / "good_name" / ".dlscaffold.json").read_text())
    assert record["answers"]["framework"] == "pytorch" and record["tasks"] == ["my_task"]


def test_new_dot_makes_the_current_directory_the_project(cli, tmp_path: Path) -> None:
    here = tmp_path / "my-study"
    here.mkdir()
    result = cli("new", ".", "--no-input", cwd=here)
    assert result.exit_code == 0, result.output
    record = json.loads((here / ".dlscaffold.json").read_text())
    assert record["answers"]["project_slug"] == "my_study"
    log = subprocess.run(["git", "log", "--oneline"], cwd=here, capture_output=True, text=True)
    assert log.stdout.strip() and (here / "experiments" / "task1" / "train.py").is_file()
    assert not list(tmp_path.glob(".dlscaffold-staging-*")) and not list(here.glob(".dlscaffold-staging-*"))
    again = cli("new", ".", "--no-input", cwd=here)
    assert again.exit_code == 1 and "is not empty" in again.output


def test_new_without_a_name_and_no_terminal_says_what_is_missing(cli, tmp_path: Path) -> None:
    result = cli("new", "--no-input", cwd=tmp_path)
    assert result.exit_code == 2 and "missing the project NAME" in result.output


def test_cli_choices_come_from_the_template() -> None:
    questions = Template(bundled_template_dir()).questions()
    assert questions["framework"][0] == "lightning"
    assert questions["tracker"][0] == "tensorboard"
    assert questions["task_name"] == "task1"


def test_new_never_imports_torch_or_lightning(tmp_path: Path) -> None:
    code = (
        "import sys; from dlscaffold.cli import main\n"
        "try:\n    main(['new', 'demo', '--no-input', '--no-git', '--output-dir', sys.argv[1]])\n"
        "except SystemExit as done:\n    assert done.code == 0\n"
        "heavy = {'torch', 'pytorch_lightning', 'lightning', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo").is_dir()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sweeps_read_runs_without_importing_torch(new_project, framework: str) -> None:
    root = new_project(framework=framework).root
    code = (
        "import runpy, sys\n"
        "sys.argv = ['scripts/sweep.py', 'task1', '--grid', 'seed=0,1', '--dry-run']\n"
        "try:\n    runpy.run_path('scripts/sweep.py', run_name='__main__')\n"
        "except SystemExit as stop:\n    assert not stop.code, stop.code\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("--seed") == 2
    assert result.stdout.strip().endswith("no torch")
