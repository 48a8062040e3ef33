"""Run protocol, rarely edited: the run's TensorBoard logs, one small class the loop's state uses.

Event files go to the run's ``logs/``: ``tensorboard --logdir experiments``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Tracker:
    """Logs scalar metrics against the global step."""

    def __init__(self, log_dir: Path, run_name: str, hparams: dict[str, Any], start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        # purge_step drops events a killed attempt logged past the checkpoint we resume from
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_step + 1 if start_step else None)
        if not start_step:
            self.writer.add_text("hparams", str(hparams))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()
