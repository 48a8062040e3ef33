"""``dlscaffold update``: carry the current template's changes into a project, keeping the researcher's.

Three versions of every file take part: the *base* (the project as the
template it keeps rendered it, with the recorded answers and every task), the
*working* file (what the researcher made of it) and the *new* one (the same
answers and tasks rendered with the installed template). Per file:

- the template did not change it: left alone, whatever the researcher did;
- the researcher did not change it: it becomes the new version (or goes, if
  the template dropped it);
- both changed it: ``git merge-file`` merges the two; where they changed the
  same lines it leaves ``<<<<<<<``/``>>>>>>>`` markers, which editors show as
  a conflict, and the file is listed;
- the researcher deleted it: it stays deleted;
- the template dropped it but the researcher changed it: it is kept.

Everything is computed before a byte is written, and written through
:mod:`dlscaffold.transaction`: the changed files, the new copy of the template
and the record move in together, and a failure or a kill half-way puts every
file back. Only a clean git working tree is updated, so ``git status`` and
``git diff`` show exactly what the update did, and ``git checkout . && git
clean -fd`` takes it back. What git could not show or undo (a git-ignored
file, a path through a symlink, a file that is not text) is left as it is and
listed.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dlscaffold import baseline, files, git, render, transaction
from dlscaffold.bounded import run_bounded
from dlscaffold.create import validate_answers
from dlscaffold.errors import GitError, NotAProjectError, TemplateError, UpdateError
from dlscaffold.project import RECORD_NAME, ProjectRecord, read_project
from dlscaffold.tasks import is_task_file, recorded
from dlscaffold.template import Template, bundled_template_dir

Action = Literal["added", "updated", "merged", "conflict", "removed", "kept", "skipped"]
Files = dict[str, tuple[bool, bytes]]  # relative POSIX path -> (executable?, content)
MANAGED = {RECORD_NAME, baseline.ARCHIVE_NAME}  # written by update itself, never merged

WHY = {
    "kept": "the template dropped it, but you changed it",
    "skipped": "you deleted it; it stays deleted",
    "other": "not a regular file here; left as it is",
    "binary": "not text, changed by you and by the template: yours is kept, without the template's change",
    "ignored": "git ignores it, so git could not undo a change: left as it is",
}


@dataclass(frozen=True)
class Change:
    path: str
    action: Action
    why: str = ""
    before: bytes | None = field(default=None, repr=False)  # the file now, where the update writes
    after: bytes | None = field(default=None, repr=False)  # what it writes (None: the file goes)

    def diff(self) -> str:
        """What the update does to the file, as a unified diff (empty where it leaves the file be)."""
        if self.action in ("kept", "skipped") or (self.before is None and self.after is None):
            return ""
        texts = []
        for data in (self.before, self.after):
            if data is not None and b"\0" in data:
                return f"Binary file {self.path} changes\n"
            texts.append([] if data is None else data.decode("utf-8", "replace").splitlines(keepends=True))
        old, new = (
            "/dev/null" if data is None else f"{side}/{self.path}"
            for side, data in (("a", self.before), ("b", self.after))
        )
        lines = difflib.unified_diff(texts[0], texts[1], old, new)
        return "".join(
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
        )


@dataclass
class Update:
    """What an update did (or, in a dry run, would do)."""

    root: Path
    old: str  # the templates, as "<version> (<digest prefix>)"
    new: str
    changes: list[Change] = field(default_factory=list)
    up_to_date: bool = False
    dirty: list[str] = field(default_factory=list)  # uncommitted changes a dry run saw

    @property
    def conflicts(self) -> list[str]:
        return [change.path for change in self.changes if change.action == "conflict"]


@dataclass
class _Plan:
    changes: list[Change] = field(default_factory=list)
    writes: Files = field(default_factory=dict)
    removes: list[str] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)  # permission bits of the researcher's to keep


def available(project_root: Path, template: Template | None = None) -> bool:
    """Whether the installed template differs from the one the project keeps (for ``--check``)."""
    project = read_project(project_root)
    if project.template_digest is None:
        raise UpdateError(_no_base_message(project_root))
    baseline.stored(project_root, project.template_digest)  # a copy that cannot be read: cannot tell
    new = baseline.read_tree((template or Template(bundled_template_dir())).root)
    return new.digest != project.template_digest


def update_project(
    project_root: Path,
    *,
    dry_run: bool = False,
    base_template: Path | None = None,
    adopt: bool = False,
    template: Template | None = None,
) -> Update:
    """Merge the installed template's changes into the project at ``project_root``; see the module doc.

    ``base_template`` names the template directory the project was made from,
    for a project that keeps none; ``adopt`` takes the installed template as
    the base without changing any file.
    """
    new_tree = baseline.read_tree((template or Template(bundled_template_dir())).root)
    with transaction.locked(project_root):
        if not dry_run:
            transaction.recover(project_root, committed=lambda journal: recorded(project_root, journal))
        project = read_project(project_root)
        _check_answers(project)
        if (adopt or base_template is not None) and project.template_digest is not None:
            kept = baseline.stored(project_root, project.template_digest)
            raise UpdateError(
                f"{project_root} keeps the template it was made from ({kept.label()}); "
                f"--adopt and --base-template are for projects that keep none: run plain `dlscaffold update`"
            )
        old_tree = _base(project, base_template, new_tree if adopt else None)
        old_label = "none kept" if adopt else old_tree.label()
        result = Update(root=project_root, old=old_label, new=new_tree.label())
        if old_tree.digest == new_tree.digest and project.template_digest == new_tree.digest:
            result.up_to_date = True
            return result
        dirty = _uncommitted(project_root)
        if dirty and not dry_run:
            shown = "\n  ".join(dirty[:10]) + ("\n  ..." if len(dirty) > 10 else "")
            raise UpdateError(
                f"{project_root} has uncommitted changes; commit or stash them first, so that the "
                f"update's own changes can be reviewed and undone with git:\n  {shown}"
            )
        result.dirty = dirty
        plan = _plan(project, old_tree, new_tree)
        result.changes = plan.changes
        if not dry_run:
            _apply(project, plan, new_tree)
    return result


def _base(
    project: ProjectRecord, base_template: Path | None, adopted: baseline.TemplateTree | None
) -> baseline.TemplateTree:
    """The template the project was rendered from: the one it keeps, or the one the user names."""
    if adopted is not None:
        return adopted
    if base_template is not None:
        root = (
            base_template / "template"
            if (base_template / "template" / "cookiecutter.json").is_file()
            else base_template
        )
        if not (root / "cookiecutter.json").is_file() or not Template(root).project_dir.is_dir():
            raise UpdateError(
                f"{base_template} is not a dlscaffold template (no cookiecutter.json and project directory)"
            )
        return baseline.read_tree(root)
    if project.template_digest is None:
        raise UpdateError(_no_base_message(project.root))
    return baseline.stored(project.root, project.template_digest)


def _check_answers(project: ProjectRecord) -> None:
    """The answers every render needs; a record without them is not rendered with guessed ones."""
    missing = [key for key in ("project_name", "framework") if not project.answers.get(key)]
    if missing:
        raise NotAProjectError(
            f"the project record in {project.root} is malformed: its answers lack {', '.join(missing)}; "
            "restore it from git"
        )


def _no_base_message(root: Path) -> str:
    return (
        f"{root} keeps no copy of the template it was made from (it was made by plain cookiecutter, "
        f"or by dlscaffold before 0.2), so update cannot tell the template's changes from yours. "
        f"Pass --base-template DIR, the template it was made from (a dlscaffold checkout at that "
        f"version), to merge; or --adopt to take the current template as its base from now on, "
        f"changing no other file"
    )


def _uncommitted(root: Path) -> list[str]:
    """The project's uncommitted changes, as ``git status`` lists them; refuse outside git.

    A staging directory a killed command left is not the user's change: the
    next update removes it (and undoes what it journalled) before it looks.
    """
    if shutil.which("git") is None:
        raise GitError("update needs git, to merge and to keep what it changes reviewable; install git")
    if git.repository_of(root) is None:
        raise UpdateError(
            f"{root} is not under git. update merges into your files, so it only runs where git can "
            "show and undo what it did: `git init && git add -A && git commit -m 'Before update'` first"
        )
    result = subprocess.run(
        ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=all", "--", "."],
        cwd=root,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    if result.returncode != 0:
        raise GitError(f"git status failed in {root}: {result.stderr.strip()}")
    prefix = subprocess.run(
        ["git", "rev-parse", "--show-prefix"], cwd=root, capture_output=True, text=True, check=False
    ).stdout.strip()
    leftover = re.compile(r"\?\? " + re.escape(prefix + transaction.STAGING_PREFIX) + r"[^/]*/.*")
    return [line for line in result.stdout.splitlines() if line.strip() and not leftover.fullmatch(line)]


def render_project(template: Template, project: ProjectRecord, destination: Path) -> Files:
    """Every file ``template`` makes for the project's answers and tasks (its first task, then the
    others as add-task renders them), apart from the record and the template copy, rendered
    into the empty directory ``destination``."""
    questions = template.questions()
    missing = {"project_name", "framework", "task_name"} - set(questions)
    if missing:
        raise TemplateError(
            f"{template.root} is not a dlscaffold template: it asks no {', '.join(sorted(missing))}"
        )
    answers = {key: value for key, value in project.answers.items() if key in questions}
    tasks = project.tasks
    if not tasks:
        raise UpdateError(f"the project record in {project.root} lists no task")
    budget = render.Budget()
    for index, task in enumerate(tasks):
        context = validate_answers({**answers, "task_name": task}, template)
        planned = template.plan(context, include=(lambda _: True) if index == 0 else is_task_file)
        render.write(planned, context, destination, budget)
    return {path: tree for path, tree in baseline.read_tree(destination).files.items() if path not in MANAGED}


def _plan(project: ProjectRecord, old_tree: baseline.TemplateTree, new_tree: baseline.TemplateTree) -> _Plan:
    with contextlib.ExitStack() as stack:
        old_template = stack.enter_context(baseline.laid_out(old_tree))
        new_template = stack.enter_context(baseline.laid_out(new_tree))
        # the scratch directories are the parent's: a child stopped at its deadline cannot remove them
        old_scratch, new_scratch = (
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dlscaffold-render-"))) for _ in "on"
        )
        base = run_bounded(
            lambda: render_project(old_template, project, old_scratch), "rendering the template it came from"
        )
        new = run_bounded(
            lambda: render_project(new_template, project, new_scratch), "rendering the installed template"
        )
    labels = ("yours", f"template {old_tree.label()}", f"template {new_tree.label()}")
    plan = _Plan()
    for path in sorted(base.keys() | new.keys()):
        _decide(project.root, path, base.get(path), new.get(path), labels, plan)
    _leave_ignored(project.root, plan)
    return plan


def _leave_ignored(root: Path, plan: _Plan) -> None:
    """Files git ignores are not changed: git could neither show nor undo it."""
    existing = [path for path in [*plan.writes, *plan.removes] if os.path.lexists(root / path)]
    if not existing:
        return
    result = subprocess.run(
        ["git", "check-ignore", "--stdin", "-z"],
        cwd=root,
        input=b"".join(path.encode() + b"\0" for path in existing),
        capture_output=True,
        check=False,
    )
    if result.returncode not in (0, 1):  # 1: none ignored; anything else, git could not tell
        raise GitError(f"git check-ignore failed in {root}: {result.stderr.decode(errors='replace').strip()}")
    ignored = {name.decode() for name in result.stdout.split(b"\0") if name}
    for path in ignored:
        plan.writes.pop(path, None)
        if path in plan.removes:
            plan.removes.remove(path)
    plan.changes = [
        Change(change.path, "kept", WHY["ignored"]) if change.path in ignored else change
        for change in plan.changes
    ]


def _decide(
    root: Path,
    path: str,
    base: tuple[bool, bytes] | None,
    new: tuple[bool, bytes] | None,
    labels: tuple[str, str, str],
    plan: _Plan,
) -> None:
    """Add what becomes of ``path`` to ``plan``."""
    if base == new:
        return  # the template did not change it: whatever the researcher did stands
    working = _working(root, path)
    if working == "other":
        plan.changes.append(Change(path, "kept", WHY["other"]))
        return
    if working is not None and _crlf(working, base, new):  # a Windows checkout (core.autocrlf)
        _decide_text(path, working.replace(b"\r\n", b"\n"), base, new, labels, plan, root)
        if path in plan.writes:
            executable, data = plan.writes[path]
            plan.writes[path] = (executable, data.replace(b"\n", b"\r\n"))
        return
    _decide_text(path, working, base, new, labels, plan, root)


def _crlf(working: bytes, base: tuple[bool, bytes] | None, new: tuple[bool, bytes] | None) -> bool:
    """Whether the researcher's copy ends every line with CRLF where the template has LF.

    Only a file that is CRLF throughout is converted; one with mixed line
    ends is merged as it is, so no line the researcher did not touch changes.
    """
    lines = working.count(b"\n")
    return (
        lines > 0
        and working.count(b"\r\n") == lines
        and not any(side is not None and b"\r\n" in side[1] for side in (base, new))
    )


def _decide_text(
    path: str,
    working: bytes | None,
    base: tuple[bool, bytes] | None,
    new: tuple[bool, bytes] | None,
    labels: tuple[str, str, str],
    plan: _Plan,
    root: Path,
) -> None:
    if working is None:
        if base is None and new is not None:
            plan.writes[path] = new
            plan.changes.append(Change(path, "added", after=new[1]))
        elif base is not None:
            plan.changes.append(Change(path, "skipped", WHY["skipped"]))
        return
    if new is not None and working == new[1]:
        return  # already what the template now has
    if base is not None and working == base[1]:
        if new is None:
            plan.removes.append(path)
            plan.changes.append(Change(path, "removed", before=working))
        else:
            plan.writes[path] = new
            if base[0] == new[0]:  # the template kept the mode: keep the researcher's (a chmod)
                plan.modes[path] = stat.S_IMODE(os.lstat(root / path).st_mode)
            plan.changes.append(Change(path, "updated", before=working, after=new[1]))
        return
    if new is None:
        plan.changes.append(Change(path, "kept", WHY["kept"]))
        return
    merged, conflicts = merge(working, base[1] if base is not None else b"", new[1], labels)
    if merged is None:
        plan.changes.append(Change(path, "kept", WHY["binary"]))
        return
    if merged == working:
        return  # the template's change is already in the researcher's file
    plan.writes[path] = (new[0], merged)
    plan.modes[path] = stat.S_IMODE(os.lstat(root / path).st_mode)
    if conflicts:
        why = f"{conflicts} conflicting region{'s' * (conflicts > 1)}"
        plan.changes.append(Change(path, "conflict", why, before=working, after=merged))
    else:
        plan.changes.append(Change(path, "merged", "your changes and the template's", working, merged))


def _working(root: Path, path: str) -> bytes | None | Literal["other"]:
    """The researcher's file at ``path``: its bytes, ``None`` if absent, ``"other"`` if it is not a
    plain file in a plain directory (a symlink, a directory, a FIFO: never read or written through)."""
    relative = Path(path)
    for parent in reversed(relative.parents[:-1]):  # experiments, experiments/task1, ...
        entry = root / parent
        if entry.is_symlink() or (os.path.lexists(entry) and not entry.is_dir()):
            return "other"
    full = root / relative
    if not os.path.lexists(full):
        return None
    if not stat.S_ISREG(os.lstat(full).st_mode):
        return "other"
    return full.read_bytes()


def merge(working: bytes, base: bytes, new: bytes, labels: tuple[str, str, str]) -> tuple[bytes | None, int]:
    """Three-way merge with ``git merge-file``: the result and its number of conflicting regions.

    ``None`` for content that is not text, which git would merge line by line
    into nonsense.
    """
    if any(b"\0" in data for data in (working, base, new)):
        return None, 1
    with tempfile.TemporaryDirectory(prefix="dlscaffold-merge-") as scratch:
        paths = []
        for name, data in (("yours", working), ("base", base), ("new", new)):
            path = Path(scratch, name)
            path.write_bytes(data)
            paths.append(str(path))
        command = ["git", "merge-file", "-p", "-L", labels[0], "-L", labels[1], "-L", labels[2], *paths]
        try:
            result = subprocess.run(command, capture_output=True, check=False)
        except OSError as error:
            raise GitError(f"git could not be run to merge: {error}") from error
    if not 0 <= result.returncode < 128:
        raise GitError(f"git merge-file failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout, result.returncode


def _apply(project: ProjectRecord, plan: _Plan, new_tree: baseline.TemplateTree) -> None:
    """Write the plan, the new template copy and the record in one journalled move."""
    root = project.root
    umask = files.current_umask()
    with transaction.staging_dir(root) as staging:
        for path, (executable, data) in plan.writes.items():
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(plan.modes.get(path, (0o777 if executable else 0o666) & ~umask))
        baseline.store(staging, new_tree)
        record = ProjectRecord(root=root, data=dict(project.data))
        record.name_template(new_tree.digest, new_tree.version)
        record.save(staging)
        moved = [Path(path) for path in [*plan.writes, baseline.ARCHIVE_NAME, RECORD_NAME]]
        transaction.move_into(staging, root, moved, removes=[Path(path) for path in plan.removes], update="1")
        transaction.done(staging)  # the commit point: from here on a kill keeps the update
    _remove_emptied(root, plan.removes)


def _remove_emptied(root: Path, removed: list[str]) -> None:
    """Directories left empty by files the template dropped go too (git keeps no empty directory)."""
    for path in removed:
        for parent in Path(path).parents[:-1]:
            try:
                (root / parent).rmdir()
            except OSError:
                break  # not empty: it holds something else
