"""The project record, ``.dlscaffold.json``: what a generated project was made from.

The template writes it (so plain cookiecutter projects have one too); dlscaffold
reads it to find the project root and to render new tasks with the answers the
project was generated with, and appends each task it adds. ``new`` and
``update`` add the identity of the template kept in the project
(``template_digest``, see :mod:`dlscaffold.baseline`), which is what lets
``update`` re-render the project exactly as it was generated. A record someone
edited by hand is checked like any other input: a malformed one is reported,
never half-trusted.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlscaffold import __version__, files, names
from dlscaffold.errors import InvalidValueError, NotAProjectError

RECORD_NAME = ".dlscaffold.json"
DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass
class ProjectRecord:
    root: Path
    data: dict[str, Any]

    @property
    def answers(self) -> dict[str, str]:
        return dict(self.data["answers"])

    @property
    def tasks(self) -> list[str]:
        return list(self.data.get("tasks", []))

    @property
    def template_digest(self) -> str | None:
        """The content hash of the template kept in the project; ``None`` if it keeps none."""
        digest = self.data.get("template_digest")
        return str(digest) if digest is not None else None

    def add_task(self, task: str) -> None:
        """Append ``task`` and rewrite the record atomically (call it holding the project's lock)."""
        self.data["tasks"] = [*self.tasks, task]
        self.save()

    def name_template(self, digest: str, version: str) -> None:
        """Say which template the project keeps, and which dlscaffold put it there (then :meth:`save`)."""
        self.data["template_version"] = version
        self.data["template_digest"] = digest
        self.data["dlscaffold_version"] = __version__

    def save(self, root: Path | None = None) -> None:
        """Write the record atomically into ``root`` (the project's own root by default)."""
        text = json.dumps(self.data, indent=2, ensure_ascii=False) + "\n"
        files.write_text_atomic((root or self.root) / RECORD_NAME, text)


def find_project(start: Path, how_to_name: str) -> ProjectRecord:
    """The project containing ``start``: the nearest ancestor holding a record.

    ``how_to_name`` tells the user how this command takes a project directory.
    """
    # first as given (a run in results/ that is a symlink to scratch storage is still in its
    # project), then resolved (a project reached through a symlink of its own)
    given = Path(os.path.abspath(start))
    for directory in dict.fromkeys([given, *given.parents, start.resolve(), *start.resolve().parents]):
        if (directory / RECORD_NAME).exists():
            return read_project(directory)
    start = start.resolve()
    raise NotAProjectError(
        f"{start} is not inside a dlscaffold project (no {RECORD_NAME} here or above); "
        f"run this inside a project made by `dlscaffold new`, or {how_to_name}"
    )


def read_project(root: Path) -> ProjectRecord:
    """Read and check the record of the project at ``root``."""
    path = root / RECORD_NAME
    try:
        data = files.read_json(path)
    except files.UnreadableFile as error:
        raise NotAProjectError(f"cannot read the project record: {error}") from error
    problem = _problem(data)
    if problem:
        raise NotAProjectError(f"the project record {path} is malformed: {problem}; restore it from git")
    return ProjectRecord(root=root, data=data)


def _problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "it is not a JSON object"
    answers = data.get("answers")
    if not isinstance(answers, dict) or not all(isinstance(value, str) for value in answers.values()):
        return "'answers' is not an object of strings"
    tasks = data.get("tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(task, str) for task in tasks):
        return "'tasks' is not a list of names"
    if len(set(tasks)) != len(tasks):
        return "'tasks' names a task twice"
    for task in tasks:  # tasks become paths when the project is rendered again
        try:
            names.check_task_name(task)
        except InvalidValueError as error:
            return f"'tasks' holds {task!r}: {error}"
    digest = data.get("template_digest")
    if digest is not None and not (isinstance(digest, str) and DIGEST.fullmatch(digest)):
        return "'template_digest' is not a SHA-256 in hex"
    return None
