"""Run protocol, rarely edited: which directory a run lives in."""

from __future__ import annotations

import argparse
import hashlib
import re
from typing import Any

MAX_RUN_NAME = 120


def run_name(args: argparse.Namespace, parser: argparse.ArgumentParser, hparams: list[str]) -> str:
    """``--run_name``, or the ``hparams`` that differ from their defaults, plus the seed.

    For example ``learning_rate-0.01_seed-1``. Options outside ``hparams``
    (devices, workers, ...) never rename a run, so a relaunch on other hardware
    finds it.
    """
    if args.run_name:
        return args.run_name
    parts = []
    for name in sorted(hparams):
        value = getattr(args, name)
        if name == "seed" or value != parser.get_default(name):
            parts.append(f"{name}-{_format_value(value)}")
    name = "_".join(parts) or "default"
    if len(name) > MAX_RUN_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_RUN_NAME - 11]}~{digest}"
    return name


def _format_value(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def tracker_id(run_name: str) -> str:
    """The run's id for a tracker (W&B): its name's plain characters and a hash of the whole name.

    Unique per run (a cut name would not be: two long names share their start) and
    stable across resumes; W&B refuses ``:;,#?/'`` and ids over 64 characters.
    """
    digest = hashlib.sha256(run_name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '-', run_name)[:40]}-{digest}"
