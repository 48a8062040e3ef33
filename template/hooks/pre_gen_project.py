"""Validate the answers before plain ``cookiecutter`` writes anything.

dlscaffold checks the same rules itself; this hook gives ``cookiecutter <repo>``
users the same refusals, using dlscaffold's own rules from the repository.
"""

import importlib.util
import sys
from pathlib import Path

RULES = Path({{ cookiecutter._repo_dir | tojson }}).resolve().parent / "src" / "dlscaffold" / "names.py"
ANSWERS = {
    "project_name": {{ cookiecutter.project_name | tojson }},
    "project_slug": {{ cookiecutter.project_slug | tojson }},
    "task_name": {{ cookiecutter.task_name | tojson }},
    "author": {{ cookiecutter.author | tojson }},
    "description": {{ cookiecutter.description | tojson }},
}


def load_rules():
    if not RULES.is_file():
        return None  # a copy of the template without dlscaffold's sources: nothing to check with
    sys.path.insert(0, str(RULES.parents[1]))  # so `names` can import `dlscaffold.errors`
    spec = importlib.util.spec_from_file_location("dlscaffold_names", RULES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def whole_characters(text):
    """``tojson`` spells a character beyond the BMP (an emoji) as a surrogate pair, which a
    Python literal keeps as two code points: join them into the one character they are."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16")


def main() -> int:
    rules = load_rules()
    if rules is None:
        return 0
    checks = [
        (rules.check_project_name, ANSWERS["project_name"]),
        (rules.check_slug, ANSWERS["project_slug"]),
        (rules.check_task_name, ANSWERS["task_name"]),
    ]
    checks += [(lambda value, what=key: rules.check_text(value, what), ANSWERS[key]) for key in ("author", "description")]
    for check, value in checks:
        try:
            check(whole_characters(value))
        except ValueError as error:
            print(f"ERROR: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
