"""Run protocol, rarely edited: checkpoint files and the RNG states they hold (torch).

Shared by both loops' checkpoints: written atomically, and holding every
global RNG state in types ``torch.load(weights_only=True)`` accepts, so a
checkpoint someone hands you loads tensors and never runs code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocol.errors import OtherWorldSize
from protocol.files import atomic_write


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file renamed into place: a kill never leaves half a checkpoint."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state: Python's, NumPy's, torch's and this process's GPU's."""
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached_gauss],
        "torch": torch.get_rng_state(),
        # this process's GPU only: under DDP every rank draws from its own, identically seeded
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])


def check_world_size(path: Path, saved: Any, current: int) -> None:
    """Refuse a checkpoint written by another number of processes, naming both (see OtherWorldSize)."""
    if isinstance(saved, int) and saved != current:  # older checkpoints do not say
        raise OtherWorldSize(
            f"{path} was written by {saved} processes and this launch has {current}: "
            f"launch it on {saved} to resume it"
        )
