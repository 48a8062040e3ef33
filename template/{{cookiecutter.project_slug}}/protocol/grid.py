"""Sweep input, rarely edited: a grid from ``--grid`` options and a sweep file, checked whole.

Everything a user types or writes into a sweep file is checked here before any
run starts, and refused in one line that names the problem: a sweep file that
is not a small JSON object of known keys, a repeated key, NaN, a boolean, a
nested value, an empty or repeated value, a name that is not an option name.
Values keep the text they were written with: ``"01"`` is one value, ``01``.
"""

from __future__ import annotations

import json
import math
import re
import stat
from pathlib import Path
from typing import Any

MAX_SWEEP_FILE_BYTES = 1_000_000  # a grid is a few lines: anything bigger is a mistake
OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # as train.py spells it, without the "--"


class SweepError(Exception):
    """Input the sweep refuses, said in one line; the sweep exits with status 2 before it starts."""


def build_grid(specs: list[str], sweep_file: Path | None) -> tuple[dict[str, list[str]], list[str]]:
    """The grid (name -> values, as train.py command-line text) and the arguments common to every run."""
    grid, extra = read_sweep_file(sweep_file) if sweep_file is not None else ({}, [])
    given = set()
    for spec in specs:
        name, values = grid_option(spec)
        if name in given:
            raise SweepError(f"--grid {name} is given twice: put all its values in one --grid")
        given.add(name)
        grid[name] = values  # the command line replaces the sweep file's values for this name
    return grid, extra


def grid_option(spec: str) -> tuple[str, list[str]]:
    """``--grid NAME=V1,V2`` as its name and values."""
    name, separator, values = spec.partition("=")
    if not separator:
        raise SweepError(f"--grid {spec}: expected NAME=V1,V2,...")
    where = f"--grid {name}"
    return check_name(name, where), check_values(values.split(","), where)


def check_name(name: str, where: str) -> str:
    if not OPTION_NAME.fullmatch(name):
        raise SweepError(f"{where}: not an option name; write it as train.py does, e.g. learning_rate")
    return name


def check_text(value: str, where: str) -> str:
    """Refuse text that is not valid Unicode: lone surrogates (JSON's "\\ud800", or bytes from the
    command line that are not UTF-8) cannot be passed on to train.py or written to a script."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise SweepError(f"{where}: {value!r} is not valid text (undecodable bytes?)") from None
    return value


def check_values(values: list[str], where: str) -> list[str]:
    """Refuse an empty grid, an empty value, and a value given twice (the same run, twice)."""
    if not values:
        raise SweepError(f"{where}: no values")
    for index, value in enumerate(values):
        check_text(value, where)
        if not value:
            raise SweepError(f"{where}: an empty value")
        if value in values[:index]:
            raise SweepError(f"{where}: {value!r} is given twice")
    return values


def read_sweep_file(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """The grid and common train.py arguments of a sweep file; anything unexpected is refused."""
    content = load_json(path)
    if not isinstance(content, dict):
        raise SweepError(f"{path}: expected a JSON object with 'grid' and 'args'")
    unknown = sorted(set(content) - {"grid", "args"})
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r}; a sweep file holds only 'grid' and 'args'")
    grid_spec = content.get("grid", {})
    if not isinstance(grid_spec, dict):
        raise SweepError(f"{path}: 'grid' must be an object mapping names to lists of values")
    grid = {}
    for name, values in grid_spec.items():
        where = f"{path}: grid {name!r}"
        if not isinstance(values, list):
            raise SweepError(f"{where}: expected a list of values")
        grid[check_name(name, where)] = check_values([grid_value(value, where) for value in values], where)
    args = content.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise SweepError(f'{path}: \'args\' must be a list of strings, e.g. ["--epochs", "2"]')
    return grid, [check_text(arg, f"{path}: args") for arg in args]


def load_json(path: Path, option: str = "--sweep_file") -> Any:
    """A small UTF-8 JSON file, refusing what ``json`` would quietly accept: repeated keys, NaN."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise SweepError(f"{option} {path}: {error.strerror}") from None
    # checked before opening: reading a FIFO would wait forever for a writer
    if not stat.S_ISREG(mode):
        raise SweepError(f"{option} {path}: not a regular file")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SWEEP_FILE_BYTES + 1)
    except OSError as error:
        raise SweepError(f"{option} {path}: {error.strerror}") from None
    if len(data) > MAX_SWEEP_FILE_BYTES:
        raise SweepError(f"{path}: larger than {MAX_SWEEP_FILE_BYTES} bytes; such a file is a few lines")
    try:
        text = data.decode("utf-8-sig")  # -sig: the byte-order mark some editors write is no error
    except UnicodeDecodeError as error:
        raise SweepError(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        return json.loads(text, object_pairs_hook=refuse_repeated_keys, parse_constant=refuse_constant)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise SweepError(f"{path}: invalid JSON: {error.msg} ({where})") from None
    except RecursionError:
        raise SweepError(f"{path}: invalid JSON: nested too deeply") from None
    except SweepError as error:
        raise SweepError(f"{path}: {error}") from None
    except ValueError:  # what json says beyond its decode errors: an integer too long to convert
        raise SweepError(f"{path}: a number with thousands of digits") from None


def refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; json alone would keep the last of two equal keys without a word."""
    content: dict[str, Any] = {}
    for key, value in pairs:
        if key in content:
            raise SweepError(f"the key {key!r} appears twice in one object")
        content[key] = value
    return content


def refuse_constant(name: str) -> None:
    raise SweepError(f"{name} is not a number a run can use")


def grid_value(value: Any, where: str) -> str:
    """A JSON grid value as the text train.py reads on its command line."""
    if isinstance(value, bool):  # tested first: True is also an int in Python
        raise SweepError(
            f"{where}: {json.dumps(value)} is a JSON boolean; write the text train.py expects "
            "as a string, or put a flag in 'args'"
        )
    if isinstance(value, str):
        return value  # exactly as written: "01" stays 01, "1,2" stays one value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):  # 1e999 reads as infinity
        return repr(value)  # the shortest text that reads back as the same float: 0.001, 1e-05
    raise SweepError(f"{where}: {json.dumps(value)[:40]} is not a string or a finite number")
