"""Shared helpers, rarely edited: seeding, RNG state, checkpoint files."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocol.files import atomic_write

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) in one call."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader workers.

    torch seeds each worker differently, but not NumPy or ``random``: without
    this, every worker would draw the same "random" augmentations. A resumed
    run reseeds its workers, so randomness that must replay exactly (augmentation)
    is best drawn from a generator seeded by (seed, epoch, index).
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)  # the main process stops the run; workers end with it


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state, in types that ``torch.load(weights_only=True)`` accepts."""
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


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file renamed into place: a kill never leaves half a checkpoint."""
    atomic_write(path, lambda handle: torch.save(obj, handle))
