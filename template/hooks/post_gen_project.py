"""Keep the chosen framework's flavour of each file, as ``dlscaffold new`` does.

The template holds ``name.<framework>.ext`` where the flavours differ: the
chosen one becomes ``name.ext`` and the others are removed.
"""

from pathlib import Path

FLAVOURS = ("lightning", "pytorch")
CHOSEN = {{ cookiecutter.framework | tojson }}


def main() -> None:
    for path in sorted(Path.cwd().rglob("*")):
        parts = path.name.split(".")
        if not path.is_file() or len(parts) < 3 or parts[-2] not in FLAVOURS:
            continue
        if parts[-2] == CHOSEN:
            path.rename(path.with_name(".".join([*parts[:-2], parts[-1]])))
        else:
            path.unlink()


if __name__ == "__main__":
    main()
