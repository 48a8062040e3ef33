"""Validation of the names and texts that end up in paths and generated code.

Everything the user types is checked here before a single file is written.
Names become directories, Python modules and class names, so they must be
plain identifiers; free text (author, description) may be anything printable,
since the template escapes it wherever it lands in code.
"""

from __future__ import annotations

import keyword
import re
import unicodedata

from dlscaffold.errors import InvalidValueError

PROJECT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\- ]*")
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
MAX_NAME_LENGTH = 64
MAX_TASK_NAME_LENGTH = 32  # task names recur in paths, class names and example commands
MAX_TEXT_LENGTH = 500

#: names a task cannot take: the project's own top-level packages, and ``base``,
#: whose trainer module (``trainers/base_trainer.py``) already exists
RESERVED_TASK_NAMES = frozenset(
    {"base", "data", "experiments", "layers", "protocol", "scripts", "tests", "trainers", "utils"}
)


def check_project_name(name: str) -> None:
    """Refuse a project name that would not make a clean directory and package name."""
    if not name or not name.strip():
        raise InvalidValueError("the project name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidValueError(f"the project name is longer than {MAX_NAME_LENGTH} characters")
    if not PROJECT_NAME.fullmatch(name) or name.endswith((" ", "-")):
        raise InvalidValueError(
            f"invalid project name {name!r}: use letters, digits, '-', '_' and spaces, "
            "starting with a letter (for example: my-project)"
        )


def check_slug(slug: str) -> None:
    """Refuse a normalised project name that is not a usable Python package name."""
    _check_identifier(slug, "project name, once normalised,")


def check_task_name(name: str) -> None:
    """Refuse a task name that would not make a clean directory, module and class name."""
    if not name:
        raise InvalidValueError("the task name is empty")
    if len(name) > MAX_TASK_NAME_LENGTH:
        raise InvalidValueError(f"the task name is longer than {MAX_TASK_NAME_LENGTH} characters")
    _check_identifier(name, "task name")
    if name in RESERVED_TASK_NAMES:
        reserved = ", ".join(sorted(RESERVED_TASK_NAMES))
        raise InvalidValueError(f"{name!r} is reserved by the project layout; avoid: {reserved}")


def check_text(value: str, what: str) -> None:
    """Free text may say anything printable, in any script, on one line, within reason.

    Refused: control characters and line separators (the text must stay one
    line in TOML, JSON and Python), and lone surrogates, which is how Python
    hands over bytes from the command line that are not valid UTF-8.
    """
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidValueError(f"the {what} is longer than {MAX_TEXT_LENGTH} characters")
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise InvalidValueError(f"the {what} is not valid UTF-8 text")
        if category in ("Cc", "Zl", "Zp"):
            raise InvalidValueError(f"the {what} contains a control character or line break ({char!r})")


def _check_identifier(name: str, what: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidValueError(f"the {what} is longer than {MAX_NAME_LENGTH} characters")
    if not IDENTIFIER.fullmatch(name):
        raise InvalidValueError(
            f"invalid {what} {name!r}: use lowercase letters, digits and '_', "
            "starting with a letter (for example: image_classifier)"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise InvalidValueError(f"invalid {what} {name!r}: it is a Python keyword")
