"""Run protocol, rarely edited: the options every train.py shares, and argparse checks.

A value refused here never reaches a run directory: argparse prints the
problem and exits with status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from protocol.naming import MAX_RUN_NAME

MAX_SEED = 2**32 - 1  # NumPy's legacy seeding accepts no more


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` keeps the script's docstring as written and shows every option's default."""


def add_run_arguments(parser: argparse.ArgumentParser, task_dir: Path) -> None:
    """The options that control a run without changing what it computes."""
    group = parser.add_argument_group("run control (does not change the run's name)")
    group.add_argument(
        "--run_name",
        type=run_name_argument,
        help="name of the run directory, instead of one derived from the hyperparameters "
        "that differ from their defaults and the seed",
    )
    group.add_argument(
        "--results_dir",
        type=Path,
        default=task_dir / "results",
        help="where run directories go",
    )
    group.add_argument(
        "--force",
        action="store_true",
        help="train again even if the run finished, failed, or was trained with another "
        "configuration; the old run is kept, renamed",
    )
    failed = group.add_mutually_exclusive_group()
    failed.add_argument(
        "--retry_failed",
        action="store_true",
        help="train a failed run again from scratch; the failed attempt is kept, renamed",
    )
    failed.add_argument(
        "--resume_failed",
        action="store_true",
        help="continue a failed run from its last checkpoint: for a crash (out of memory, a lost "
        "file system), not a diverged loss",
    )


def run_name_argument(text: str) -> str:
    """A single, ordinary directory name inside ``results/``: never a path."""
    if not text or text in (".", "..") or text.startswith("."):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a run name: it must not be empty or start with '.'"
        )
    if "/" in text or "\\" in text or not text.isprintable():
        # isprintable also refuses the undecodable bytes Python passes on from the command line
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a run name: no path separators, control or undecodable characters"
        )
    if len(text.encode("utf-8")) > MAX_RUN_NAME:  # bytes: the file system counts those, and an
        # archived attempt adds a 20-byte suffix to a name that must stay within 255
        raise argparse.ArgumentTypeError(f"a run name has at most {MAX_RUN_NAME} bytes (UTF-8)")
    return text


def device_name(text: str) -> str:
    """``auto``, or a device as torch names it: ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""
    kind, _, index = text.partition(":")
    digits = index.isascii() and index.isdigit()  # "١" is a digit to Python, not to torch
    if text == "auto" or (kind in ("cpu", "cuda", "mps") and (not index or digits)):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda, cuda:N or mps")


def devices(text: str) -> int | str:
    """Lightning's ``devices``: a count (``2``) as a number; ``auto``, ``0,1`` or ``-1`` as text."""
    return int(text) if text.isascii() and text.isdigit() else text


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is between 0 and {MAX_SEED}, not {value}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, not {text}")
    return value


def probability(text: str) -> float:
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, not {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, not {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
