"""Run protocol, rarely edited: the run's metrics as CSV, one small class the loop's state uses.

Metrics go to ``logs/metrics.csv`` in the run directory, one row per logged value.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from protocol.files import atomic_write_bytes


class Tracker:
    """Logs scalar metrics against the global step."""

    def __init__(self, log_dir: Path, run_name: str, hparams: dict[str, Any], start_step: int) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
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
