"""Keep the chosen flavour of each file, as ``dlscaffold new`` does.

The template holds ``name.<choice>.ext`` where the flavours differ, with one or
more choices of framework or tracker before the extension, in any order
(``tracking.pytorch.csv.py``): when every one of them is chosen the file becomes
``name.ext``, and otherwise it is removed. Other files (``name.ext``,
``name.other.ext``) stay as they are.
"""

import sys
from pathlib import Path

# cookiecutter.json's choices of its flavour variables (tests/test_flavours.py keeps them the same)
CHOICES = {"framework": ("lightning", "pytorch"), "tracker": ("tensorboard", "csv", "wandb")}
CHOSEN = {"framework": {{ cookiecutter.framework | tojson }}, "tracker": {{ cookiecutter.tracker | tojson }}}


def flavoured(name, flavours, chosen):
    """The name a file keeps, or None where it is left out (dlscaffold's ``render.flavoured``)."""
    parts = name.split(".")
    end = start = len(parts) - 1  # parts[start:end] are the flavour parts; parts[0] is always the stem
    while start > 1 and parts[start - 1] in flavours:
        start -= 1
    if start == end:
        return name
    if any(part not in chosen for part in parts[start:end]):
        return None
    return ".".join([*parts[:start], parts[-1]])


def main() -> None:
    flavours = {choice for choices in CHOICES.values() for choice in choices}
    chosen = set(CHOSEN.values())
    for path in sorted(Path.cwd().rglob("*")):
        if not path.is_file():
            continue
        kept = flavoured(path.name, flavours, chosen)
        if kept is None:
            path.unlink()
        elif kept != path.name:
            target = path.with_name(kept)
            if target.exists():  # a kept name is never flavoured: no later file moves it away
                where = target.relative_to(Path.cwd())
                sys.exit(f"two template files become {where} for {', '.join(CHOSEN.values())}; rename one")
            path.rename(target)


if __name__ == "__main__":
    main()
