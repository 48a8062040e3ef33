"""Every name is checked before anything is written; a refusal says what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlscaffold import names
from dlscaffold.errors import InvalidValueError

BAD_PROJECT_NAMES = [
    "",
    "   ",
    "../escape",
    "a/b",
    "a\\b",
    "..",
    "1project",
    "class",  # a keyword once normalised
    "my project!",
    "{{ cookiecutter.x }}",
    "{% raw %}",
    'quote"d',
    "it's",
    "trailing-",
    "x" * 65,
    "naïve",
]
BAD_TASK_NAMES = [
    "t" * 33,
    "",
    "Task",
    "1task",
    "my-task",
    "a.b",
    "../t",
    "for",
    "match",
    "base",
    "utils",
    "_private",
    "t{{x}}",
]


@pytest.mark.parametrize("name", BAD_PROJECT_NAMES)
def test_bad_project_names_are_refused_and_nothing_is_written(cli, tmp_path: Path, name: str) -> None:
    result = cli("new", name, "--no-input", "--output-dir", str(tmp_path))
    assert result.exit_code != 0
    assert "Error:" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", BAD_TASK_NAMES)
def test_bad_task_names_are_refused_and_nothing_is_written(cli, tmp_path: Path, name: str) -> None:
    result = cli("new", "demo", "--task", name, "--no-input", "--output-dir", str(tmp_path))
    assert result.exit_code != 0
    assert "Error:" in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_message_says_what_is_allowed() -> None:
    with pytest.raises(InvalidValueError, match="letters, digits"):
        names.check_project_name("bad/name")
    with pytest.raises(InvalidValueError, match="lowercase letters, digits and '_'"):
        names.check_task_name("Bad")
    with pytest.raises(InvalidValueError, match="reserved"):
        names.check_task_name("trainers")


@pytest.mark.parametrize("name", ["demo", "My-Project", "my project", "nlp_2024", "A"])
def test_good_project_names_pass(name: str) -> None:
    names.check_project_name(name)


def test_texts_may_say_anything_on_one_line() -> None:
    names.check_text("quotes \" ' {{ jinja }} \\ and unicode é", "description")
    with pytest.raises(InvalidValueError, match="control character"):
        names.check_text("two\nlines", "description")


def test_unknown_choice_is_refused(cli, tmp_path: Path) -> None:
    result = cli("new", "demo", "--framework", "jax", "--no-input", "--output-dir", str(tmp_path))
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []
