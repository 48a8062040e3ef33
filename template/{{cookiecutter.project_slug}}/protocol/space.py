"""Search input, rarely edited: the space of a hyperparameter search, from a small JSON file, checked whole.

    {
      "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": true},
      "hidden_size": {"type": "int", "low": 32, "high": 256, "step": 32},
      "dropout": {"type": "float", "low": 0.0, "high": 0.5},
      "depth": {"type": "categorical", "choices": [1, 2, 4]}
    }

Each name is one of train.py's hyperparameters. ``float`` and ``int`` take
``low`` < ``high``, and either ``log`` (a log scale: ``low`` > 0) or ``step``;
``categorical`` takes a list of distinct strings or numbers. Anything else, a
NaN, a boolean, a repeated key or an unknown key, is refused in one line before
anything runs. Torch-free and Optuna-free: the space is read without either.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.grid import SweepError, check_name, check_text, load_json

MAX_DIMENSIONS = 64
MAX_CHOICES = 1000
KEYS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}}
KEYS["categorical"] = {"choices"}
Value = str | int | float


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter of the space, as the JSON file gave it."""

    name: str
    kind: str  # float, int or categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Value, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"type": self.kind, "choices": list(self.choices)}
        spec: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            spec["log"] = True
        if self.step is not None:
            spec["step"] = self.step
        return spec

    def corners(self) -> list[Value]:
        """The values train.py is asked about before the search starts: bounds, or every choice."""
        if self.kind == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        return [self.low, self.high]


def as_text(value: Value) -> str:
    """A value as train.py reads it on its command line: ``0.001``, ``64``, ``adam``."""
    return repr(value) if isinstance(value, float) else str(value)


def read_space(path: Path) -> list[Dimension]:
    """The space in ``path``, checked; :class:`SweepError` says what is wrong, in one line."""
    return parse_space(load_json(path, "--space"), str(path))


def parse_space(content: Any, where: str) -> list[Dimension]:
    if not isinstance(content, dict) or not content:
        raise SweepError(f"{where}: expected a JSON object of hyperparameters, each with its range")
    if len(content) > MAX_DIMENSIONS:
        raise SweepError(f"{where}: {len(content)} hyperparameters; a search takes at most {MAX_DIMENSIONS}")
    return [
        dimension(check_name(name, f"{where}: {name!r}"), spec, f"{where}: {name}")
        for name, spec in content.items()
    ]


def dimension(name: str, spec: Any, where: str) -> Dimension:
    if not isinstance(spec, dict):
        example = '{"type": "float", "low": 0, "high": 1}'
        raise SweepError(f"{where}: expected an object such as {example}")
    kind = spec.get("type")
    if kind not in KEYS:
        raise SweepError(f'{where}: "type" must be "float", "int" or "categorical", not {json.dumps(kind)}')
    unknown = sorted(set(spec) - KEYS[kind] - {"type"})
    if unknown:
        raise SweepError(f"{where}: a {kind} takes {', '.join(sorted(KEYS[kind]))}; not {', '.join(unknown)}")
    if kind == "categorical":
        return Dimension(name, kind, choices=choices(spec.get("choices"), where))
    number = int if kind == "int" else float
    low, high = (bound(spec.get(key), number, f"{where}: {key}") for key in ("low", "high"))
    if not low < high:
        raise SweepError(f"{where}: low ({low}) must be below high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SweepError(f"{where}: log is true or false, not {json.dumps(log)}")
    step = spec.get("step")
    if step is not None:
        step = bound(step, number, f"{where}: step")
        if step <= 0:
            raise SweepError(f"{where}: step must be positive, not {step}")
        if log:
            raise SweepError(f"{where}: log and step exclude each other: a log scale has no fixed step")
    if log and low <= 0:
        raise SweepError(f"{where}: a log scale needs low > 0, not {low}")
    return Dimension(name, kind, low, high, log, step)


def bound(value: Any, number: type, where: str) -> float | int:
    """A finite number of the dimension's type; ``1`` is a fine float, ``0.5`` no int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SweepError(f"{where}: expected a number, not {json.dumps(value)}")
    if not math.isfinite(value):  # 1e999 reads as infinity
        raise SweepError(f"{where}: {value} is not a finite number")
    if number is int and not isinstance(value, int):
        raise SweepError(f"{where}: an int dimension takes whole numbers, not {value}")
    return number(value)


def choices(value: Any, where: str) -> tuple[Value, ...]:
    if not isinstance(value, list) or not value:
        raise SweepError(f'{where}: "choices" must be a non-empty list')
    if len(value) > MAX_CHOICES:
        raise SweepError(f"{where}: {len(value)} choices; at most {MAX_CHOICES}")
    for choice in value:
        if isinstance(choice, float) and not math.isfinite(choice):
            raise SweepError(f"{where}: {choice} is not a finite number")
        if isinstance(choice, bool) or not isinstance(choice, (str, int, float)):
            raise SweepError(
                f"{where}: a choice is a string or a number (a boolean as the text train.py reads), "
                f"not {json.dumps(choice)}"
            )
    texts = [check_text(as_text(choice), where) for choice in value]
    if "" in texts:
        raise SweepError(f"{where}: an empty choice")
    repeated = sorted({text for text in texts if texts.count(text) > 1})
    if repeated:
        raise SweepError(f"{where}: {', '.join(repeated)} given twice")
    return tuple(value)


def space_json(space: list[Dimension]) -> dict[str, Any]:
    """The space as recorded in the search's settings: what a relaunch must match."""
    return {dim.name: dim.to_json() for dim in space}
