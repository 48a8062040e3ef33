"""Run protocol, rarely edited: each step's values, kept on their device until a logging period ends.

Turning a GPU tensor into a Python number (``.item()``, ``bool()``, ``float()``)
makes the CPU wait until every kernel queued before it has run: a sync, which
stalls a loop that does it every step. Both loops' protocols keep each step's
values here instead, on the device, and read them all in one transfer once a
logging period; the values still come back step by step, so a non-finite loss
is reported at the step where it appeared.
"""

from __future__ import annotations

import torch


class StepValues:
    """The scalar values of the steps since the last :meth:`read`."""

    def __init__(self) -> None:
        self.keys: tuple[str, ...] = ()
        self.steps: list[int] = []
        self.rows: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, step: int, values: dict[str, torch.Tensor | float]) -> None:
        """Keep ``values`` (0-dim tensors, or numbers) for ``step``: one small op on the device, no sync.

        The values of the steps between two reads have the same names: read first
        when a loop changes what it reports.
        """
        keys = tuple(values)
        if self.rows and keys != self.keys:
            raise ValueError(f"read the values of {self.keys} before adding others ({keys})")
        self.keys = keys
        tensors = [torch.as_tensor(value).detach().float() for value in values.values()]
        device = tensors[0].device if tensors else torch.device("cpu")
        self.rows.append(torch.stack([tensor.to(device).reshape(()) for tensor in tensors]))
        self.steps.append(step)

    def read(self) -> list[tuple[int, dict[str, float]]]:
        """Every kept step with its values, oldest first, in one transfer (one sync); then forget them."""
        if not self.rows:
            return []
        table = torch.stack(self.rows).tolist()  # the one read of the logging period
        rows = [(step, dict(zip(self.keys, row))) for step, row in zip(self.steps, table)]
        self.steps, self.rows = [], []
        return rows
