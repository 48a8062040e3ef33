"""The project record, ``.dlscaffold.json``: what a generated project was made from.

The template writes it (so plain cookiecutter projects have one too); dlscaffold
reads it to find the project root and to render new tasks with the answers the
project was generated with, and appends each task it adds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlscaffold.errors import NotAProjectError

RECORD_NAME = ".dlscaffold.json"


@dataclass
class ProjectRecord:
    root: Path
    data: dict[str, Any]

    @property
    def answers(self) -> dict[str, str]:
        return dict(self.data.get("answers", {}))

    @property
    def tasks(self) -> list[str]:
        return list(self.data.get("tasks", []))

    def add_task(self, task: str) -> None:
        """Append ``task`` and rewrite the record atomically."""
        self.data["tasks"] = [*self.tasks, task]
        path = self.root / RECORD_NAME
        draft = path.with_name(f".{RECORD_NAME}.tmp")
        draft.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        os.replace(draft, path)


def find_project(start: Path) -> ProjectRecord:
    """The project containing ``start``: the nearest ancestor holding a record."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / RECORD_NAME).is_file():
            return read_project(directory)
    raise NotAProjectError(
        f"{start} is not inside a dlscaffold project (no {RECORD_NAME} here or above); "
        "run this inside a project made by `dlscaffold new`, or pass --project DIR"
    )


def read_project(root: Path) -> ProjectRecord:
    path = root / RECORD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise NotAProjectError(f"cannot read the project record {path}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("answers"), dict):
        raise NotAProjectError(f"{path} is not a dlscaffold project record")
    return ProjectRecord(root=root, data=data)
