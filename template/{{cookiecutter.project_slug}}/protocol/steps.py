"""Run protocol, rarely edited: each step's values, kept on their device until a logging period ends.

Turning a GPU tensor into a Python number (``.item()``, ``bool()``, ``float()``)
makes the CPU wait until every kernel queued before it has run: a sync, which
stalls a loop that does it every step. Both loops' protocols keep each step's
values here instead, on the device, and read them all in one transfer once a
logging period; the values still come back step by step, so a non-finite loss
is reported at the step where it appeared.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def non_finite(values: dict[str, float]) -> list[str]:
    """``key became nan`` (or ``inf``) for each value that is not a finite number."""
    return [f"{key} became {value}" for key, value in values.items() if not math.isfinite(value)]


def gone_bad(metrics: dict[str, float], main_metric: str) -> list[str]:
    """What in an epoch's metrics says the weights went bad: a loss, or the main metric, not finite."""
    return non_finite({key: value for key, value in metrics.items() if key == main_metric or "loss" in key})


class StepValues:
    """The scalar values of the steps since the last :meth:`read`; each step may report other names."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device  # where the values wait: the model's, or the first tensor's
        self.steps: list[tuple[int, tuple[str, ...]]] = []
        self.rows: list[torch.Tensor] = []

    def add(self, step: int, values: dict[str, Any]) -> None:
        """Keep ``values`` (0-dim tensors, or numbers) for ``step``: one small op on the device, no sync."""
        if not values:
            return
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.numel() != 1:
                raise TypeError(f"step values are scalars; {name} has shape {tuple(value.shape)}")
            if not isinstance(value, (torch.Tensor, int, float)):
                raise TypeError(f"step values are tensors or numbers; {name} is {type(value).__name__}")
            if self.device is None and isinstance(value, torch.Tensor):
                self.device = value.device
        device = self.device or torch.device("cpu")
        row = [
            torch.as_tensor(value, device=device).detach().reshape(()).float() for value in values.values()
        ]
        self.rows.append(torch.stack(row))
        self.steps.append((step, tuple(values)))

    def read(self) -> list[tuple[int, dict[str, float]]]:
        """Every kept step with its values, oldest first, in one transfer (one sync); then forget them."""
        if not self.rows:
            return []
        flat = torch.cat(self.rows).tolist()  # the one read of the logging period
        rows, start = [], 0
        for step, names in self.steps:
            rows.append((step, dict(zip(names, flat[start : start + len(names)]))))
            start += len(names)
        self.steps, self.rows = [], []
        return rows
