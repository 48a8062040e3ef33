"""The bundled template: where it is, what it asks, and the context it renders with.

The context is built exactly as cookiecutter builds it, so that ``dlscaffold
new`` and ``cookiecutter <repo>`` produce the same project: choice lists take
their first entry as default, string values may refer to earlier answers with
Jinja (``project_slug`` is derived from ``project_name``), keys starting with
``_`` are copied as they are and keys starting with ``__`` are rendered but
never asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from dlscaffold.errors import InvalidValueError, TemplateError

if TYPE_CHECKING:
    from dlscaffold.render import RenderedFile

PROJECT_DIR_NAME = "{{cookiecutter.project_slug}}"
TASK_VARIABLE = "cookiecutter.task_name"
# choice variables whose values may name a file's flavour: ``x.pytorch.csv.py`` exists, as
# ``x.py``, in the projects whose framework is pytorch and whose tracker is csv only
FLAVOUR_VARIABLES: Final[tuple[str, ...]] = ("framework", "tracker")


def bundled_template_dir() -> Path:
    """The template shipped in the wheel, or ``template/`` of a source checkout."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "_template", package_dir.parents[1] / "template"):
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    raise TemplateError(f"the bundled template is missing (looked beside {package_dir})")


@dataclass(frozen=True)
class Template:
    """A cookiecutter template directory holding one project directory."""

    root: Path

    @cached_property
    def variables(self) -> dict[str, Any]:
        try:
            loaded = json.loads((self.root / "cookiecutter.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise TemplateError(f"cannot read {self.root / 'cookiecutter.json'}: {error}") from error
        if not isinstance(loaded, dict):
            raise TemplateError(f"{self.root / 'cookiecutter.json'} is not a JSON object")
        return loaded

    @property
    def project_dir(self) -> Path:
        return self.root / PROJECT_DIR_NAME

    def questions(self) -> dict[str, Any]:
        """What a user may answer: name -> default string, or list of choices."""
        return {
            key: value
            for key, value in self.variables.items()
            if not key.startswith("_") and not (isinstance(value, str) and "{{" in value)
        }

    def plan(
        self, context: dict[str, Any], include: Callable[[PurePosixPath], bool] = lambda _: True
    ) -> list[RenderedFile]:
        """The files of a project rendered with ``context``, the chosen flavour of each."""
        from dlscaffold import render

        listed = [name for name in FLAVOUR_VARIABLES if isinstance(self.variables.get(name), list)]
        choices = {choice for name in listed for choice in self.variables[name] if isinstance(choice, str)}
        return render.plan(
            self.project_dir,
            context,
            include,
            flavours=choices,
            chosen=tuple(str(context[name]) for name in listed if name in context),
        )

    def prompt_text(self, key: str) -> str:
        prompts = self.variables.get("__prompts__", {})
        return str(prompts.get(key, key.replace("_", " ").capitalize()))

    def context(self, answers: dict[str, str]) -> dict[str, Any]:
        """The ``cookiecutter`` mapping the files render with, from the user's answers."""
        from dlscaffold.render import render_string

        unknown = set(answers) - set(self.questions())
        if unknown:
            raise InvalidValueError(f"the template has no variable {', '.join(sorted(unknown))}")
        context: dict[str, Any] = {}
        for key, default in self.variables.items():
            if key == "__prompts__":
                continue
            if key.startswith("_") and not key.startswith("__"):
                context[key] = default
            elif key in answers:
                context[key] = _chosen(key, answers[key], default)
            elif isinstance(default, list):
                context[key] = default[0]
            elif isinstance(default, str):
                context[key] = render_string(default, context)
            else:
                context[key] = default
        return context


def _chosen(key: str, value: str, default: Any) -> str:
    if isinstance(default, list) and value not in default:
        raise InvalidValueError(f"{key} must be one of {', '.join(default)}, not {value!r}")
    return value
