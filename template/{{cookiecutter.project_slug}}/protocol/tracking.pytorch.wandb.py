"""Run protocol, rarely edited: the run's Weights & Biases logs, one small class the loop's state uses.

Offline unless ``WANDB_MODE=online`` (run ``wandb sync`` later); files go to the run's ``logs/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from protocol.naming import tracker_id


class Tracker:
    """Logs scalar metrics against the global step."""

    def __init__(self, log_dir: Path, run_name: str, hparams: dict[str, Any], start_step: int) -> None:
        import wandb

        log_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_MODE", "offline")
        self.wandb_run = wandb.init(
            project={{ cookiecutter.project_slug | tojson }},
            name=run_name,
            id=tracker_id(run_name),
            resume="allow",
            dir=str(log_dir),
            config=hparams,
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.wandb_run.log(metrics, step=step)

    def close(self) -> None:
        self.wandb_run.finish()
