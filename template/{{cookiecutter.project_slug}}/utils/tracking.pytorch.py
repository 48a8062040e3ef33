"""Experiment tracking, rarely edited: one small class for the chosen backend.

{% if cookiecutter.tracker == 'tensorboard' -%}
TensorBoard event files go to the run's ``logs/``: ``tensorboard --logdir experiments``.
{%- elif cookiecutter.tracker == 'csv' -%}
Metrics go to ``logs/metrics.csv`` in the run directory, one row per logged step.
{%- else -%}
Weights & Biases, offline unless ``WANDB_MODE=online`` (run ``wandb sync`` later).
{%- endif %}
"""

from __future__ import annotations

{% if cookiecutter.tracker == 'csv' -%}
import csv
import io
{% elif cookiecutter.tracker == 'wandb' -%}
import os
{% endif -%}
from pathlib import Path
from typing import Any
{%- if cookiecutter.tracker == 'csv' %}

from protocol.files import atomic_write_bytes
{%- endif %}


class Tracker:
    """Logs scalar metrics against the global step."""

    def __init__(self, log_dir: Path, run_name: str, hparams: dict[str, Any], start_step: int) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
{%- if cookiecutter.tracker == 'tensorboard' %}
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed attempt logged past the checkpoint we resume from
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_step + 1 if start_step else None)
        if not start_step:
            self.writer.add_text("hparams", str(hparams))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()
{%- elif cookiecutter.tracker == 'csv' %}
        self.path = log_dir / "metrics.csv"
        if start_step and self.path.exists():
            # as TensorBoard's purge_step: rows a killed attempt logged past the checkpoint
            # we resume from are logged again by this one, so they go
            with self.path.open(newline="") as handle:
                header, *rows = list(csv.reader(handle)) or [["step", "metric", "value"]]
            kept = [row for row in rows if row and row[0].isdigit() and int(row[0]) <= start_step]
            text = io.StringIO()
            csv.writer(text).writerows([header, *kept])
            atomic_write_bytes(self.path, text.getvalue().encode())

    def log(self, metrics: dict[str, float], step: int) -> None:
        new_file = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(["step", "metric", "value"])
            writer.writerows([step, key, value] for key, value in metrics.items())

    def close(self) -> None:
        pass
{%- else %}
        import wandb

        from protocol.naming import tracker_id

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
{%- endif %}
