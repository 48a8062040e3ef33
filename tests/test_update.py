"""``dlscaffold update``: a project made from an earlier template, edited, grown and updated.

The earlier templates are the real ones of dlscaffold 0.1.0 and 0.2.0
(``tests/data``), so the update carries real changes: new protocol modules, a
rewritten eval.py, changed train.py files, base trainers and sweep script.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dlscaffold import baseline, transaction
from dlscaffold.create import create_project
from dlscaffold.template import Template, bundled_template_dir
from dlscaffold.update import update_project

from conftest import FRAMEWORKS, cookiecutter, run_python, tree_digest

OLD_TEMPLATE = Path(__file__).parent / "data" / "template-0.1.0.tar.gz"
TEMPLATE_0_2 = Path(__file__).parent / "data" / "template-0.2.0.tar.gz"
IDENTITY = ["-c", "user.name=Researcher", "-c", "user.email=researcher@example.org"]
CURRENT = baseline.read_tree(bundled_template_dir())


def unpack(archive: Path, root: Path) -> Template:
    with tarfile.open(archive) as tar:
        tar.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return Template(root)


@pytest.fixture(scope="module")
def old_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return unpack(OLD_TEMPLATE, tmp_path_factory.mktemp("template-0.1.0"))


@pytest.fixture(scope="module")
def templates(old_template: Template, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    """The kept templates of earlier releases, by version."""
    return {"0.1.0": old_template, "0.2.0": unpack(TEMPLATE_0_2, tmp_path_factory.mktemp("template-0.2.0"))}


def git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *IDENTITY, *args], cwd=root, capture_output=True, text=True, check=True)
    return result.stdout


def commit(root: Path) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-qm", "My research")


def generate(where: Path, framework: str, template: Template | None = None) -> Path:
    project = create_project({"project_name": "demo", "framework": framework}, where, template=template)
    assert project.git_initialised, project.git_problem
    return project.root


def research(root: Path, cli) -> None:
    """What a researcher does to a project in its first weeks; none of it overlaps the template's changes."""
    assert cli("add-task", "task2", "--project", str(root)).exit_code == 0
    train = root / "experiments" / "task1" / "train.py"
    edited = train.read_text().replace(
        '"--hidden_size", type=positive_int, default=128', '"--hidden_size", type=positive_int, default=96'
    )
    assert edited != train.read_text()
    train.write_text(edited)
    with (root / "trainers" / "task1_trainer.py").open("a") as handle:
        handle.write("\n\ndef my_metric(x):\n    return x\n")
    with (root / "trainers" / "base_trainer.py").open("a") as handle:
        handle.write("\n\ndef my_helper():\n    return 42\n")
    (root / "README.md").unlink()


@pytest.fixture
def updated(tmp_path: Path, templates: dict[str, Template], cli) -> Callable[..., tuple[Path, Path, str]]:
    """An edited project of an earlier release updated to the current template, and a fresh one
    with the same edits."""

    def make(framework: str, version: str = "0.2.0") -> tuple[Path, Path, str]:
        root = generate(tmp_path / "old", framework, templates[version])
        research(root, cli)
        commit(root)
        assert cli("update", "--check", "--project", str(root)).exit_code == 1
        result = cli("update", "--project", str(root))
        assert result.exit_code == 0, result.output
        fresh = generate(tmp_path / "fresh", framework)
        research(fresh, cli)
        return root, fresh, result.output

    return make


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_update_equals_the_current_template_with_your_changes(
    updated, cli, framework: str, version: str
) -> None:
    root, fresh, output = updated(framework, version)
    # byte for byte what the current template gives with the same research done on it
    assert tree_digest(root) == tree_digest(fresh)
    assert (
        "allow_abbrev=False" in (root / "experiments" / "task2" / "train.py").read_text()
    )  # the added task too
    assert "default=96" in (root / "experiments" / "task1" / "train.py").read_text()
    assert "def my_helper" in (root / "trainers" / "base_trainer.py").read_text()
    assert not (root / "README.md").exists()
    for line in (
        "merged    experiments/task1/train.py",
        "merged    trainers/task1_trainer.py",
        "updated   experiments/task2/eval.py",
        "added     protocol/evaluation.py",
        "skipped   README.md  (you deleted it; it stays deleted)",
    ):
        assert line in output
    assert "conflict" not in output  # the researcher's edits and the template's touch other lines
    if framework == "lightning":  # Trainer options moved from the shared file to the task's
        assert "merged    trainers/base_trainer.py" in output
    if version == "0.1.0":
        assert "added     protocol/grid.py" in output
    assert json.loads((root / ".dlscaffold.json").read_text())["template_digest"] == CURRENT.digest

    before = tree_digest(root)
    again = cli("update", "--project", str(root))  # uncommitted, but there is nothing to do
    assert again.exit_code == 0 and "up to date" in again.output
    assert tree_digest(root) == before
    check = cli("update", "--check", "--project", str(root))
    assert check.exit_code == 0 and check.output == ""


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_updated_project_passes_its_own_tests(updated, framework: str) -> None:
    root, _, output = updated(framework)
    assert "removed   utils/tracking.py" in output and "added     protocol/tracking.py" in output
    result = run_python(["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"], cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trained = run_python(["experiments/task2/train.py", "--epochs", "1"], cwd=root)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert list((root / "experiments" / "task2" / "results").glob("*/finished.out"))


def test_a_same_line_edit_is_a_conflict_with_markers(tmp_path: Path, old_template: Template, cli) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    train = root / "experiments" / "task1" / "train.py"
    train.write_text(
        train.read_text().replace("RawDescriptionHelpFormatter", "ArgumentDefaultsHelpFormatter")
    )
    commit(root)
    result = cli("update", "--project", str(root))
    assert result.exit_code == 1
    assert "conflict  experiments/task1/train.py  (1 conflicting region)" in result.output
    assert "1 file in conflict" in result.output
    text = train.read_text()
    assert text.count("<<<<<<< yours") == 1 and text.count("=======") == 1
    assert ">>>>>>> template 0.3.0 (" in text
    assert "ArgumentDefaultsHelpFormatter" in text and "allow_abbrev=False" in text  # both sides, marked
    assert (root / "protocol" / "grid.py").is_file()  # the rest is updated
    assert "conflict" not in git(root, "diff", "--stat", "--", "experiments/task1/eval.py")


def test_a_dirty_tree_is_refused_and_nothing_changes(tmp_path: Path, old_template: Template, cli) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    (root / "notes.txt").write_text("untracked")
    (root / "layers" / "residual.py").write_text("# half-done\n")  # a file the template never changed
    before = tree_digest(root)
    result = cli("update", "--project", str(root))
    assert result.exit_code == 1
    assert "uncommitted changes" in result.output
    assert "notes.txt" in result.output and "layers/residual.py" in result.output
    assert "Traceback" not in result.output
    assert tree_digest(root) == before

    preview = cli("update", "--dry-run", "--project", str(root))  # a dry run may look
    assert (
        preview.exit_code == 0 and "Would update" in preview.output and "commit them first" in preview.output
    )
    assert tree_digest(root) == before


def test_outside_git_update_is_refused(tmp_path: Path, old_template: Template, cli) -> None:
    root = create_project({"project_name": "demo"}, tmp_path, use_git=False, template=old_template).root
    before = tree_digest(root)
    result = cli("update", "--project", str(root))
    assert result.exit_code == 1 and "not under git" in result.output and "git init" in result.output
    assert tree_digest(root) == before


def test_dry_run_lists_the_changes_and_writes_nothing(tmp_path: Path, old_template: Template, cli) -> None:
    root = generate(tmp_path, "lightning", old_template)
    before = tree_digest(root)
    result = cli("update", "--dry-run", "--project", str(root))
    assert result.exit_code == 0
    assert "Would update" in result.output and "added     protocol/grid.py" in result.output
    assert "+++" not in result.output
    diff = cli("update", "--dry-run", "--diff", "--project", str(root)).output
    assert "--- /dev/null\n+++ b/protocol/grid.py\n" in diff
    assert "--- a/experiments/task1/train.py\n+++ b/experiments/task1/train.py\n" in diff
    assert "+    from trainers import base_trainer\n" in diff  # one of the template's changes to it
    assert tree_digest(root) == before
    assert git(root, "status", "--porcelain") == ""


def test_add_task_renders_from_the_template_the_project_keeps(
    tmp_path: Path, old_template: Template, cli
) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    assert cli("add-task", "early", "--project", str(root)).exit_code == 0
    assert (
        "allow_abbrev" not in (root / "experiments" / "early" / "train.py").read_text()
    )  # 0.1.0, like task1
    commit(root)
    assert cli("update", "--project", str(root)).exit_code == 0
    commit(root)
    assert cli("add-task", "late", "--project", str(root)).exit_code == 0
    late = (root / "experiments" / "late" / "train.py").read_text()
    assert late == (root / "experiments" / "early" / "train.py").read_text().replace("early", "late")
    assert "allow_abbrev=False" in late


# --- the rules for files the template adds and drops, on a template made for the test ---------


def variant(tmp_path: Path, change: Callable[[Path], None]) -> Template:
    """A copy of the current template with ``change`` applied to its project directory."""
    root = tmp_path / "variant"
    shutil.copytree(bundled_template_dir(), root, ignore=shutil.ignore_patterns("__pycache__"))
    change(root / "{{cookiecutter.project_slug}}")
    return Template(root)


def test_dropped_files_go_unless_changed_and_added_files_never_overwrite(tmp_path: Path) -> None:
    root = generate(tmp_path / "p", "pytorch")
    (root / "utils" / "utils.py").write_text("# mine now\n")
    (root / "layers" / "mine.py").write_text("# my layer\n")
    (root / "NOTES.md").write_text("my notes\n")  # where the new template will add a file
    commit(root)

    def change(project: Path) -> None:
        (project / "utils" / "utils.py").unlink()  # dropped, but the researcher changed it
        (project / "layers" / "__init__.py").unlink()  # dropped, unchanged
        (project / "NOTES.md").write_text("the template's notes\n")
        (project / "CHANGELOG.md").write_text("new\n")

    result = update_project(root, template=variant(tmp_path, change))
    actions = {change.path: change.action for change in result.changes}
    assert actions == {
        "utils/utils.py": "kept",
        "layers/__init__.py": "removed",
        "NOTES.md": "conflict",
        "CHANGELOG.md": "added",
    }
    assert (root / "utils" / "utils.py").read_text() == "# mine now\n"
    assert not (root / "layers" / "__init__.py").exists() and (root / "layers" / "mine.py").is_file()
    notes = (root / "NOTES.md").read_text()
    assert "<<<<<<< yours\nmy notes\n=======\nthe template's notes\n>>>>>>>" in notes
    assert (root / "CHANGELOG.md").read_text() == "new\n"


def test_symlinks_are_never_written_through(tmp_path: Path) -> None:
    root = generate(tmp_path / "p", "pytorch")
    elsewhere = tmp_path / "elsewhere"
    (root / "protocol").rename(elsewhere)
    (root / "protocol").symlink_to(elsewhere)
    commit(root)
    before = tree_digest(elsewhere)

    def change(project: Path) -> None:
        with (project / "protocol" / "files.py").open("a") as handle:
            handle.write("# changed\n")

    result = update_project(root, template=variant(tmp_path, change))
    assert [(c.path, c.action) for c in result.changes] == [("protocol/files.py", "kept")]
    assert tree_digest(elsewhere) == before


# --- all or nothing ----------------------------------------------------------------------------


@pytest.mark.parametrize("renames", [0, 7, 15])
def test_a_failure_half_way_puts_every_file_back(
    tmp_path: Path, old_template: Template, monkeypatch, renames: int
) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    before = tree_digest(root)
    real, calls = os.rename, []

    def failing(*args):
        calls.append(args)
        if len(calls) == renames + 1:
            raise OSError(28, "No space left on device", str(args[1]))
        return real(*args)

    monkeypatch.setattr(transaction.os, "rename", failing)
    with pytest.raises(OSError):
        update_project(root)
    monkeypatch.undo()
    assert tree_digest(root) == before
    assert git(root, "status", "--porcelain") == ""
    assert not list(root.glob(transaction.STAGING_PREFIX + "*"))


KILL_AT = """
import os, signal, sys
from dlscaffold import transaction
from dlscaffold.cli import main
real, calls = transaction.os.rename, []
def dying(*args):
    calls.append(args)
    if len(calls) > int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
transaction.os.rename = dying
main(["update"])
"""


@pytest.mark.parametrize("renames", [2, 9, 15])
def test_a_killed_update_is_undone_and_the_next_one_completes(
    tmp_path: Path, old_template: Template, cli, renames: int
) -> None:
    root = generate(tmp_path / "killed", "pytorch", old_template)
    killed = subprocess.run([sys.executable, "-c", KILL_AT, str(renames)], cwd=root, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    result = cli("update", "--project", str(root))  # undoes the half update, finds a clean tree
    assert result.exit_code == 0, result.output
    clean = generate(tmp_path / "clean", "pytorch", old_template)
    assert cli("update", "--project", str(clean)).exit_code == 0
    assert tree_digest(root) == tree_digest(clean)


def test_a_killed_update_is_undone_where_the_project_was_moved_and_a_copy_is_refused(
    tmp_path: Path, old_template: Template, cli
) -> None:
    root = generate(tmp_path / "killed", "pytorch", old_template)
    killed = subprocess.run([sys.executable, "-c", KILL_AT, "9"], cwd=root, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)  # a copy is another directory: never undone in its name
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    root.rename(moved)
    result = cli("update", "--project", str(moved))  # undoes the half update where it now is
    assert result.exit_code == 0, result.output
    clean = generate(tmp_path / "clean", "pytorch", old_template)
    assert cli("update", "--project", str(clean)).exit_code == 0
    assert tree_digest(moved) == tree_digest(clean)

    before = tree_digest(copy)
    refused = cli("update", "--project", str(copy))
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit)
    assert "was written for another directory" in refused.output and str(root) in refused.output
    assert tree_digest(copy) == before and list(copy.glob(transaction.STAGING_PREFIX + "*"))


def test_update_and_add_task_at_once_land_one_after_the_other(tmp_path: Path, old_template: Template) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    commands = [["update"], ["add-task", "racer"]]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "dlscaffold", *command],
            cwd=root,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for command in commands
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert all("Traceback" not in output for output in outputs), outputs
    assert processes[1].returncode == 0, outputs[1]  # add-task never waits for a clean tree
    record = json.loads((root / ".dlscaffold.json").read_text())
    assert record["tasks"] == ["task1", "racer"]
    racer = (root / "experiments" / "racer" / "train.py").read_text()
    if processes[0].returncode == 0:  # update first: the new task comes from the new template
        assert record["template_digest"] == CURRENT.digest and "allow_abbrev=False" in racer
    else:  # add-task first: its uncommitted task makes update refuse, changing nothing
        assert "uncommitted changes" in outputs[0]
        assert record["template_digest"] != CURRENT.digest and "allow_abbrev" not in racer
        assert not (root / "protocol" / "grid.py").exists()
    assert not list(root.glob(transaction.STAGING_PREFIX + "*"))


# --- projects that keep no template, and kept templates that were tampered with ----------------


def test_a_plain_cookiecutter_project_is_refused_then_adopted(tmp_path: Path, cli) -> None:
    assert cookiecutter(tmp_path, "project_name=demo").returncode == 0
    root = tmp_path / "demo"
    git(root, "init", "-q")
    commit(root)
    refused = cli("update", "--project", str(root))
    assert refused.exit_code == 1 and "--adopt" in refused.output and "--base-template" in refused.output
    check = cli("update", "--check", "--project", str(root))
    assert check.exit_code == 2

    before = tree_digest(root)
    adopted = cli("update", "--adopt", "--project", str(root))
    assert adopted.exit_code == 0, adopted.output
    changed = {path for path, digest in tree_digest(root).items() if before.get(path) != digest}
    assert changed == {".dlscaffold.json", ".dlscaffold-template.tar.gz"}
    assert cli("update", "--check", "--project", str(root)).exit_code == 0


def test_a_cookiecutter_project_merges_from_the_template_it_was_made_from(
    tmp_path: Path, old_template: Template, cli
) -> None:
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "-o",
            str(tmp_path),
            str(old_template.root),
            "project_name=demo",
            "framework=pytorch",
        ],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    root = tmp_path / "demo"
    train = root / "experiments" / "task1" / "train.py"
    train.write_text(train.read_text().replace("default=128", "default=96"))
    git(root, "init", "-q")
    commit(root)
    result = cli("update", "--base-template", str(old_template.root), "--project", str(root))
    assert result.exit_code == 0, result.output
    assert "merged    experiments/task1/train.py" in result.output
    assert "default=96" in train.read_text() and "allow_abbrev=False" in train.read_text()
    assert json.loads((root / ".dlscaffold.json").read_text())["template_digest"] == CURRENT.digest


def tamper(archive: Path, how: str) -> None:
    if how == "garbage":
        archive.write_bytes(b"not gzip")
    elif how == "another-template":
        archive.write_bytes(baseline.TemplateTree({"cookiecutter.json": (False, b"{}")}).pack())
    else:
        archive.unlink()
        if how == "fifo":
            os.mkfifo(archive)


@pytest.mark.parametrize("how", ["garbage", "another-template", "missing", "fifo"])
def test_a_tampered_template_copy_is_refused_in_one_line(tmp_path: Path, cli, how: str) -> None:
    root = generate(tmp_path, "pytorch")
    tamper(root / ".dlscaffold-template.tar.gz", how)
    if how != "fifo":
        commit(root)
    before = tree_digest(root)
    for command in (["update"], ["add-task", "more"]):
        result = cli(*command, "--project", str(root))
        assert result.exit_code == 1, result.output
        assert "restore" in result.output and "Traceback" not in result.output
    assert tree_digest(root) == before


def test_an_archive_escaping_its_directory_is_refused() -> None:
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(Exception, match="outside itself"):
        baseline.unpack(buffer.getvalue(), "archive")


def test_a_record_with_a_task_that_is_a_path_is_refused(tmp_path: Path, cli) -> None:
    root = generate(tmp_path, "pytorch")
    record = json.loads((root / ".dlscaffold.json").read_text())
    record["tasks"].append("../../escape")
    (root / ".dlscaffold.json").write_text(json.dumps(record))
    commit(root)
    result = cli("update", "--project", str(root))
    assert result.exit_code == 1 and "malformed" in result.output
    with pytest.raises(Exception, match="malformed"):
        update_project(root)
    assert not (tmp_path.parent / "escape").exists()


# --- what an adversarial pass found --------------------------------------------------------------


def with_kept_template(root: Path, extra: dict[str, bytes]) -> None:
    """Replace the project's kept template by the current one plus ``extra``, with a matching record."""
    tree = baseline.TemplateTree({**CURRENT.files, **{path: (False, data) for path, data in extra.items()}})
    (root / ".dlscaffold-template.tar.gz").write_bytes(tree.pack())
    record = json.loads((root / ".dlscaffold.json").read_text())
    record["template_digest"] = tree.digest
    (root / ".dlscaffold.json").write_text(json.dumps(record))
    commit(root)


@pytest.mark.parametrize(
    "extra",
    [
        {"{{cookiecutter.project_slug}}/{{ '%cpwned'|format(47) }}": b"x"},  # an absolute path
        {"{{cookiecutter.project_slug}}/{{ '..' }}/pwned": b"x"},
        {"{{cookiecutter.project_slug}}/{{cookiecutter.task_name}}{{ '%c..%cpwned'|format(47, 47) }}": b"x"},
        {"{{cookiecutter.project_slug}}/x.py": b"{{ cycler.__init__.__globals__.os.system('touch pwned') }}"},
        {"{{cookiecutter.project_slug}}/.git/hooks/post-checkout": b"#!/bin/sh\ntouch pwned\n"},
    ],
    ids=["absolute", "dotdot", "task-path", "code", "git-hook"],
)
def test_a_crafted_kept_template_cannot_write_outside_or_run_code(tmp_path: Path, cli, extra) -> None:
    root = generate(tmp_path / "p", "pytorch")
    with_kept_template(root, extra)
    before = tree_digest(root)
    result = cli("update", "--project", str(root), cwd=root)
    assert result.exit_code == 1, result.output
    assert any(why in result.output for why in ("cannot render", "not a name", "git's own directory"))
    assert tree_digest(root) == before
    assert not (root / ".git" / "hooks" / "post-checkout").exists()
    added = cli("add-task", "more", "--project", str(root), cwd=root)  # renders only the task's files
    assert "Traceback" not in added.output
    assert not list(tmp_path.rglob("*pwned*")) and not Path("/pwned").exists()


@pytest.mark.parametrize("option", [["--adopt"], ["--base-template", "TEMPLATE"]])
def test_adopting_is_refused_where_the_project_keeps_its_template(
    tmp_path: Path, old_template: Template, cli, option: list[str]
) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    option = [str(old_template.root) if value == "TEMPLATE" else value for value in option]
    before = tree_digest(root)
    result = cli("update", *option, "--project", str(root))
    assert result.exit_code == 1 and "keeps the template it was made from (1 (" in result.output
    assert tree_digest(root) == before


@pytest.mark.parametrize("key", ["project_name", "framework"])
def test_a_record_without_a_needed_answer_is_malformed(tmp_path: Path, cli, key: str) -> None:
    root = generate(tmp_path, "pytorch")
    record = json.loads((root / ".dlscaffold.json").read_text())
    del record["answers"][key]
    (root / ".dlscaffold.json").write_text(json.dumps(record))
    commit(root)
    result = cli("update", "--project", str(root))
    assert result.exit_code == 1 and f"lack {key}" in result.output and "Traceback" not in result.output


def test_archive_bombs_are_refused_before_they_fill_memory(tmp_path: Path) -> None:
    huge = baseline.TemplateTree({"cookiecutter.json": (False, b"{}"), "zeros": (False, bytes(40 << 20))})
    with pytest.raises(Exception, match="unpacks to over"):
        baseline.unpack(huge.pack(), "archive")
    many = baseline.TemplateTree(
        {f"f{index}": (False, b"") for index in range(baseline.MAX_TEMPLATE_FILES + 5)}
    )
    with pytest.raises(Exception, match="entries"):
        baseline.unpack(many.pack(), "archive")


def test_a_fifo_in_a_base_template_is_refused_not_read(tmp_path: Path, old_template: Template) -> None:
    assert cookiecutter(tmp_path, "project_name=demo").returncode == 0
    root = tmp_path / "demo"
    git(root, "init", "-q")
    commit(root)
    base = tmp_path / "base"
    shutil.copytree(old_template.root, base)
    os.mkfifo(base / "{{cookiecutter.project_slug}}" / "fifo")
    result = subprocess.run(
        [sys.executable, "-m", "dlscaffold", "update", "--dry-run", "--base-template", str(base)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "not a regular file" in result.stderr, result.stderr


def test_a_crlf_checkout_updates_without_conflicts(tmp_path: Path, old_template: Template, cli) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    for path in root.rglob("*.py"):
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    commit(root)
    result = cli("update", "--project", str(root))
    assert result.exit_code == 0, result.output
    assert "conflict" not in result.output and "updated   protocol/launch.py" in result.output
    launch = (root / "protocol" / "launch.py").read_bytes()
    assert b"\r\n" in launch and b"\n" not in launch.replace(b"\r\n", b"")
    assert (
        launch.replace(b"\r\n", b"\n") == CURRENT.files["{{cookiecutter.project_slug}}/protocol/launch.py"][1]
    )


def test_git_ignored_files_are_left_alone(tmp_path: Path, old_template: Template, cli) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    (root / ".git" / "info" / "exclude").write_text("protocol/grid.py\n")
    (root / "protocol" / "grid.py").write_text("# my private grid\n")  # where the template adds one
    result = cli("update", "--project", str(root))
    assert result.exit_code == 0, result.output
    assert "kept      protocol/grid.py  (git ignores it" in result.output
    assert (root / "protocol" / "grid.py").read_text() == "# my private grid\n"


def test_the_researchers_file_modes_are_kept(tmp_path: Path, old_template: Template, cli) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    (root / "protocol" / "launch.py").chmod(0o600)
    (root / "scripts" / "sweep.py").chmod(0o755)
    commit(root)
    assert cli("update", "--project", str(root)).exit_code == 0
    assert (root / "protocol" / "launch.py").stat().st_mode & 0o777 == 0o600
    assert (root / "scripts" / "sweep.py").stat().st_mode & 0o777 == 0o755


def test_what_a_killed_command_left_is_not_called_uncommitted(
    tmp_path: Path, old_template: Template, cli
) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    (root / (transaction.STAGING_PREFIX + "left")).mkdir()
    (root / (transaction.STAGING_PREFIX + "left") / "x.py").write_text("")
    preview = cli("update", "--dry-run", "--project", str(root))
    assert preview.exit_code == 0 and "commit them first" not in preview.output
    assert cli("update", "--project", str(root)).exit_code == 0
    assert not list(root.glob(transaction.STAGING_PREFIX + "*"))


def test_check_cannot_tell_with_a_broken_template_copy(tmp_path: Path, cli) -> None:
    root = generate(tmp_path, "pytorch")
    (root / ".dlscaffold-template.tar.gz").write_bytes(b"garbage")
    result = cli("update", "--check", "--project", str(root))
    assert result.exit_code == 2 and "restore" in result.output


# --- what a second adversarial pass found -------------------------------------------------------


def plant_journal(root: Path, journal: dict, name: str = "notes") -> Path:
    staging = root / (transaction.STAGING_PREFIX + name)
    staging.mkdir()
    (staging / "journal.json").write_text(json.dumps({"dirs": [], **journal}))
    return staging


def test_a_committed_journal_is_never_acted_on(tmp_path: Path, cli) -> None:
    root = generate(tmp_path, "pytorch")
    journal = {"destination": str(root.resolve()), "files": {".git": "directory", "data": "directory"}}
    staging = plant_journal(root, journal)
    git(root, "add", "--force", staging.name)  # as if cloned from a repository someone crafted
    commit(root)
    assert cli("add-task", "more", "--project", str(root)).exit_code == 0
    assert (root / ".git").is_dir() and (root / "data" / "raw").is_dir()


def test_a_journal_naming_another_path_to_the_project_is_never_obeyed(tmp_path: Path, cli) -> None:
    root = generate(tmp_path, "pytorch")
    staging = plant_journal(root, {"destination": "/proc/self/cwd", "files": {"data": "directory"}})
    refused = cli("add-task", "more", "--project", str(root), cwd=root)
    assert refused.exit_code == 1 and "was written for another directory (/proc/self/cwd)" in refused.output
    assert (root / "data" / "raw").is_dir() and staging.is_dir()  # neither obeyed nor thrown away


def test_recovery_never_writes_through_a_symlink(tmp_path: Path, cli) -> None:
    root = generate(tmp_path, "pytorch")
    (root / "hk").symlink_to(root / ".git" / "hooks")
    staging = plant_journal(
        root,
        {
            "destination": str(root.resolve()),
            "files": {"hk/post-checkout": "0"},
            "originals": ["hk/post-checkout"],
        },
    )
    hook = staging / ".dlscaffold-originals" / "hk" / "post-checkout"
    hook.parent.mkdir(parents=True)
    hook.write_text("#!/bin/sh\ntouch pwned\n")
    assert cli("add-task", "more", "--project", str(root)).exit_code == 0
    assert not (root / ".git" / "hooks" / "post-checkout").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda files: files.update(
                {"{{cookiecutter.project_slug}}/.dlscaffold-staging-x/journal.json": b"{}"}
            ),
            "staging directory",
        ),
        (
            lambda files: files.update({"{{cookiecutter.project_slug}}/big.txt": b"{{ 'a' * 10**12 }}"}),
            "cannot render",
        ),
        (
            lambda files: files.update(
                {
                    "cookiecutter.json": (
                        files["cookiecutter.json"].replace(
                            b'"_copy_without_render": []', b'"_copy_without_render": 5'
                        )
                    )
                }
            ),
            "_copy_without_render",
        ),
        (
            lambda files: files.update(
                {
                    "cookiecutter.json": (
                        files["cookiecutter.json"].replace(b'"project_name": "myproject",', b"")
                    )
                }
            ),
            "asks no project_name",
        ),
    ],
    ids=["staging-name", "huge-string", "copy-without-render", "no-project-name"],
)
def test_a_crafted_template_definition_is_one_line(tmp_path: Path, cli, change, message: str) -> None:
    root = generate(tmp_path, "pytorch")
    files = {path: data for path, (_, data) in CURRENT.files.items()}
    change(files)
    tree = baseline.TemplateTree({path: (False, data) for path, data in files.items()})
    (root / ".dlscaffold-template.tar.gz").write_bytes(tree.pack())
    record = json.loads((root / ".dlscaffold.json").read_text())
    record["template_digest"] = tree.digest
    (root / ".dlscaffold.json").write_text(json.dumps(record))
    commit(root)
    before = tree_digest(root)
    result = cli("update", "--project", str(root))
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and tree_digest(root) == before


def test_a_file_with_mixed_line_ends_keeps_each_line_as_it_was(
    tmp_path: Path, old_template: Template, cli
) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    launch = root / "protocol" / "launch.py"
    launch.write_bytes(launch.read_bytes() + b"# mine\r\n")
    commit(root)
    assert cli("update", "--project", str(root)).exit_code == 0
    merged = launch.read_bytes()
    assert merged.count(b"\r\n") == 1 and merged.endswith(b"# mine\r\n")


def test_a_user_file_named_like_a_staging_directory_is_uncommitted_work(
    tmp_path: Path, old_template: Template, cli
) -> None:
    root = generate(tmp_path, "pytorch", old_template)
    (root / (transaction.STAGING_PREFIX + "plan.md")).write_text("my plan\n")
    result = cli("update", "--project", str(root))
    assert result.exit_code == 1 and "uncommitted changes" in result.output


# --- what a third adversarial pass found --------------------------------------------------------

TASK_FILE = "{{cookiecutter.project_slug}}/trainers/{{cookiecutter.task_name}}_extra.py"
LOOP = b"{% for a in range(100000) %}{% for b in range(100000) %}{{ b }}{% endfor %}{% endfor %}"
SPIN = b"{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"  # no memory


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{% include 'other.txt' %}", "cannot include, import or extend another"),
        (b"{% import 'macros.txt' as m %}", "cannot include, import or extend another"),
        (b"{% extends 'base.txt' %}", "cannot include, import or extend another"),
        (b"{{ 1 / 0 }}", "cannot render"),
        (b"{{ '%d' % 'x' }}", "cannot render"),
        (LOOP, "took longer than 1.5 s, so it was stopped"),
        (b"{% set x = 'a' * 10**7 %}{{ x }}", "renders to more than any real template writes"),
        (b"{{ ('a' * 10**5) * 10**5 }}", "MemoryError"),  # 10 GB: refused by the memory cap at once
    ],
    ids=["include", "import", "extends", "zero-division", "type-error", "loop", "huge-file", "memory"],
)
def test_a_crafted_kept_template_is_one_line_and_bounded(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, content: bytes, message: str
) -> None:
    monkeypatch.setenv("DLSCAFFOLD_RENDER_TIMEOUT", "1.5")
    scratch = tmp_path / "tmp"  # where the commands' temporary directories go: none may stay
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    root = generate(tmp_path / "p", "pytorch")
    with_kept_template(root, {TASK_FILE: content})
    before = tree_digest(root)
    for command in (["update"], ["add-task", "more"], ["add-task", "more", "--dry-run"]):
        result = cli(*command, "--project", str(root))
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), result.exception  # no traceback
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert tree_digest(root) == before
        assert not transaction.staging_dirs(root)
        assert not list(scratch.iterdir()), list(scratch.iterdir())


@pytest.mark.parametrize("value", ["inf", "1e400", "-1", "0", "nan", "soon"])
def test_a_render_timeout_that_is_not_a_number_of_seconds_is_one_line(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("DLSCAFFOLD_RENDER_TIMEOUT", value)
    root = generate(tmp_path / "p", "pytorch")
    result = cli("add-task", "more", "--dry-run", "--project", str(root))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "DLSCAFFOLD_RENDER_TIMEOUT must be a number of seconds" in result.output


def process_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (``Z``: a zombie), ``None`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


def forked_children(pid: int) -> list[int]:
    """The children of ``pid`` running its own program (a fork, not git or another command)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            same = (stat.parent / "cmdline").read_bytes() == Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and same:
            found.append(int(stat.parent.name))
    return found


def test_a_render_whose_command_is_killed_dies_with_it_and_frees_the_project(tmp_path: Path) -> None:
    root = generate(tmp_path / "p", "pytorch")
    with_kept_template(root, {TASK_FILE: SPIN})
    env = {**os.environ, "DLSCAFFOLD_RENDER_TIMEOUT": "600"}
    command = [sys.executable, "-m", "dlscaffold", "add-task", "t6", "--project", str(root)]
    parent = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    children: list[int] = []
    for _ in range(400):  # until the render runs in its child (not a fork about to become git)
        children = forked_children(parent.pid)
        time.sleep(0.5)
        if children and children == forked_children(parent.pid):
            break
    assert children, "the render should run in a child process"
    parent.kill()
    parent.wait()
    for _ in range(400):
        if process_state(children[0]) in (None, "Z"):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the render went on without its command")
    env["DLSCAFFOLD_RENDER_TIMEOUT"] = "1"
    again = [*command[:-3], "t7", "--project", str(root)]
    result = subprocess.run(again, env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "took longer than 1 s" in result.stderr, result.stderr  # not "busy"


def test_a_template_version_with_terminal_escapes_never_reaches_the_terminal(tmp_path: Path, cli) -> None:
    root = generate(tmp_path / "p", "pytorch")
    variables = json.loads(CURRENT.files["cookiecutter.json"][1])
    variables["_dlscaffold_template_version"] = "0.2\x1b]0;pwned\x07\n<<<<<<< x"
    with_kept_template(root, {"cookiecutter.json": json.dumps(variables).encode()})
    result = cli("update", "--project", str(root), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "from the template unknown (" in result.output
