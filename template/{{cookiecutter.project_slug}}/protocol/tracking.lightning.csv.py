"""Run protocol, rarely edited: the run's Lightning logger, CSV.

Metrics go to ``logs/metrics.csv`` in the run directory.
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, Logger


def make_logger(log_dir: Path, run_name: str) -> Logger:
    """A logger writing into ``log_dir`` itself, with no version subfolders: the run is the version."""
    log_dir.mkdir(parents=True, exist_ok=True)
    return CSVLogger(save_dir=str(log_dir), name="", version="")
