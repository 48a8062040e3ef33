"""Experiment tracking, rarely edited: the Lightning logger of the chosen backend.

{% if cookiecutter.tracker == 'tensorboard' -%}
TensorBoard event files go to the run's ``logs/``: ``tensorboard --logdir experiments``.
{%- elif cookiecutter.tracker == 'csv' -%}
Metrics go to ``logs/metrics.csv`` in the run directory.
{%- else -%}
Weights & Biases, offline unless ``WANDB_MODE=online`` (run ``wandb sync`` later).
{%- endif %}
"""

from __future__ import annotations

{% if cookiecutter.tracker == 'wandb' -%}
import os
{% endif -%}
from pathlib import Path

from pytorch_lightning.loggers import Logger


def make_logger(log_dir: Path, run_name: str) -> Logger:
    """A logger writing into ``log_dir`` itself, with no version subfolders: the run is the version."""
    log_dir.mkdir(parents=True, exist_ok=True)
{%- if cookiecutter.tracker == 'tensorboard' %}
    from pytorch_lightning.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(log_dir), name="", version="", default_hp_metric=False)
{%- elif cookiecutter.tracker == 'csv' %}
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(save_dir=str(log_dir), name="", version="")
{%- else %}
    from pytorch_lightning.loggers import WandbLogger

    from protocol.naming import tracker_id

    os.environ.setdefault("WANDB_MODE", "offline")
    return WandbLogger(
        project={{ cookiecutter.project_slug | tojson }},
        name=run_name,
        id=tracker_id(run_name),
        resume="allow",
        save_dir=str(log_dir),
    )
{%- endif %}
