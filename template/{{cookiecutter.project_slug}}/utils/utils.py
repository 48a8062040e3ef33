"""Shared helpers, rarely edited: seeding every RNG, seeding loader workers."""

from __future__ import annotations

import atexit
import multiprocessing
import random
import signal

import numpy as np
import torch


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


@atexit.register  # runs before multiprocessing's own exit function, which was registered first
def end_loader_workers() -> None:
    """At exit, end the worker processes of loaders still alive (a loader made at module level).

    Workers ignore SIGTERM (see :func:`seed_worker`), and multiprocessing ends its
    daemonic children at exit with SIGTERM, then waits for them: it would wait forever.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # DataLoader's handler would call them failures
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
