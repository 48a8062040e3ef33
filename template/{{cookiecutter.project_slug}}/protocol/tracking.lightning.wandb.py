"""Run protocol, rarely edited: the run's Lightning logger, Weights & Biases.

Offline unless ``WANDB_MODE=online`` (run ``wandb sync`` later); files go to the run's ``logs/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.loggers import Logger, WandbLogger

from protocol.naming import tracker_id


def make_logger(log_dir: Path, run_name: str) -> Logger:
    """A logger writing into ``log_dir`` itself; one W&B run per run directory, resumed with it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_MODE", "offline")
    return WandbLogger(
        project={{ cookiecutter.project_slug | tojson }},
        name=run_name,
        id=tracker_id(run_name),
        resume="allow",
        save_dir=str(log_dir),
    )
