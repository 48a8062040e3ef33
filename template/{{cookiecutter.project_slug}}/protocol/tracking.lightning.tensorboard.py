"""Run protocol, rarely edited: the run's Lightning logger, TensorBoard.

Event files go to the run's ``logs/``: ``tensorboard --logdir experiments``.
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.loggers import Logger, TensorBoardLogger


def make_logger(log_dir: Path, run_name: str) -> Logger:
    """A logger writing into ``log_dir`` itself, with no version subfolders: the run is the version."""
    log_dir.mkdir(parents=True, exist_ok=True)
    return TensorBoardLogger(save_dir=str(log_dir), name="", version="", default_hp_metric=False)
