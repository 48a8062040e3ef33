"""Data code every task shares: raw files to cached tensors, fixed splits, resumable loaders.

Each task's own data lives in its ``trainers/<task>_data.py``; this module
holds only what they have in common. Any map-style ``Dataset`` (one sample per
index) works with :func:`make_loader`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Subset, default_collate, random_split
from torchdata.stateful_dataloader import StatefulDataLoader

from protocol.checkpoint import atomic_torch_save
from protocol.files import PROJECT_ROOT, atomic_write_bytes
from utils.utils import seed_worker

# torchdata 0.11 calls a torch function that torch 2.13 deprecates, once per process: not ours to fix
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

RAW_DIR = PROJECT_ROOT / "data" / "raw"
PROCESSED_DIR = PROJECT_ROOT / "data" / "processed"
SPLIT_SEED = 2024  # fixed, unlike the training seed: every run sees the same test set


def cached(path: Path, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors saved at ``path``, made by ``build()`` and saved there on first use."""
    if not path.exists():
        atomic_torch_save(build(), path)
    return torch.load(path, weights_only=True)


def write_text(path: Path, text: str) -> None:
    """Write a raw data file atomically: a kill never leaves half a data set behind."""
    atomic_write_bytes(path, text.encode("utf-8"))


class TensorSamples(Dataset):
    """Samples held in memory as tensors: ``dataset[i]`` is one sample, like any Dataset."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(tensor[index] for tensor in self.tensors)

    def __getitems__(self, indices: list[int]) -> Batch:
        # DataLoader hands a whole batch of indices to a dataset that has this method:
        # one indexing operation per tensor instead of one per sample, about 5x faster here.
        index = torch.as_tensor(indices)
        return Batch(tensor[index] for tensor in self.tensors)


class Batch(tuple):
    """Samples a dataset's ``__getitems__`` already put together: nothing left to collate."""


def collate(samples: Any) -> Any:
    """DataLoader's default collation, which a :class:`Batch` skips."""
    if isinstance(samples, Batch):
        return tuple(samples)
    return default_collate(samples)


def split(dataset: Dataset, fractions: dict[str, float]) -> dict[str, Subset]:
    """Disjoint subsets (for example train, val, test), the same for every run."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    return dict(zip(fractions, random_split(dataset, list(fractions.values()), generator=generator)))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    collate_fn: Callable[[Any], Any] = collate,
) -> StatefulDataLoader:
    """A DataLoader whose position, worker state included, is saved in checkpoints.

    The order of an epoch depends on (seed, epoch) alone: call
    ``loader.sampler.set_epoch(epoch)`` at the start of each (Lightning does),
    or pass the ``epoch`` the loader starts in.
    Under distributed training each rank reads its own shard. ``num_workers=0``
    suits in-memory tensors; raise it when loading means reading or decoding files.
    """
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),  # worker seeds, without touching the global RNG
        pin_memory=torch.cuda.is_available(),
    )
