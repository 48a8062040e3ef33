"""Run protocol, rarely edited: which directory a run lives in."""

from __future__ import annotations

import argparse
import hashlib
import re
from typing import Any

MAX_RUN_NAME = 120


def hyperparameter_defaults(hyperparameters: argparse.ArgumentParser) -> dict[str, Any]:
    """Every option of train.py's ``hyperparameters()`` parser with its default: the run's identity.

    Each of them names the run's directory, is recorded in ``hparams.json`` and
    must match on a relaunch; read from the parser itself, so an option added
    there is all three at once.
    """
    try:
        return vars(hyperparameters.parse_args([]))
    except SystemExit:  # argparse said which option has no default
        raise SystemExit(
            "every option of hyperparameters() needs a default: a run is named after those that differ"
        ) from None


def run_name(args: argparse.Namespace, defaults: dict[str, Any]) -> str:
    """``--run_name``, or the hyperparameters that differ from their ``defaults``, plus the seed.

    For example ``learning_rate-0.01_seed-1``. Other options (devices,
    workers, ...) never rename a run, so a relaunch on other hardware finds it.
    """
    if args.run_name:
        return args.run_name
    parts = []
    for name in sorted(defaults):
        value = getattr(args, name)
        if name == "seed" or value != defaults[name]:
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
