"""The example data and the data pipeline.

Raw data lives in ``data/raw/``; the first use turns it into tensors cached in
``data/processed/``. The example is a three-armed spiral: small enough to
train in seconds on a laptop CPU, hard enough that the metrics mean something.
Replace :func:`make_raw_data` and :func:`process` with your own data; keep the
rest.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.utils import PROJECT_ROOT, atomic_torch_save, atomic_write_bytes, seed_worker

RAW_FILE = PROJECT_ROOT / "data" / "raw" / "spirals.csv"
PROCESSED_FILE = PROJECT_ROOT / "data" / "processed" / "spirals.pt"
NUM_FEATURES = 2
NUM_CLASSES = 3
SPLIT_SEED = 2024  # fixed, unlike the training seed: every run sees the same test set
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def make_raw_data(path: Path, points_per_class: int = 500, noise: float = 0.12) -> None:
    """Write the example data set: points on ``NUM_CLASSES`` interleaved spiral arms."""
    rng = np.random.default_rng(0)
    rows = []
    for label in range(NUM_CLASSES):
        radius = rng.uniform(0.05, 1.0, points_per_class)
        angle = 2.5 * math.pi * radius + 2 * math.pi * label / NUM_CLASSES
        x = radius * np.cos(angle) + noise * radius * rng.standard_normal(points_per_class)
        y = radius * np.sin(angle) + noise * radius * rng.standard_normal(points_per_class)
        rows += [(f"{a:.6f}", f"{b:.6f}", label) for a, b in zip(x, y)]
    lines = ["x,y,label"] + [",".join(map(str, row)) for row in rows]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def process(raw_file: Path) -> dict[str, torch.Tensor]:
    """Turn the raw CSV into standardised feature and label tensors."""
    with raw_file.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = torch.tensor([[float(row["x"]), float(row["y"])] for row in rows])
    labels = torch.tensor([int(row["label"]) for row in rows])
    features = (features - features.mean(0)) / features.std(0)
    return {"features": features, "labels": labels}


def load_processed() -> dict[str, torch.Tensor]:
    """The processed tensors, building (and caching) them on first use."""
    if not PROCESSED_FILE.exists():
        if not RAW_FILE.exists():
            make_raw_data(RAW_FILE)
        atomic_torch_save(process(RAW_FILE), PROCESSED_FILE)
    return torch.load(PROCESSED_FILE, weights_only=True)


class TensorBatchDataset(Dataset):
    """In-memory tensors indexed a whole batch at a time.

    Indexing with a list of indices returns a ready batch, which is much faster
    than collating single samples (see :class:`EpochBatchSampler`).
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index], self.labels[index]


def load_splits() -> dict[str, TensorBatchDataset]:
    """Train, validation and test sets, split the same way for every run."""
    data = load_processed()
    order = torch.randperm(len(data["labels"]), generator=torch.Generator().manual_seed(SPLIT_SEED))
    splits, start = {}, 0
    for index, (name, fraction) in enumerate(SPLIT_FRACTIONS.items()):
        last = index == len(SPLIT_FRACTIONS) - 1
        stop = len(order) if last else start + round(fraction * len(order))
        chosen = order[start:stop]
        splits[name] = TensorBatchDataset(data["features"][chosen], data["labels"][chosen])
        start = stop
    return splits


class EpochBatchSampler(Sampler[list[int]]):
    """Yields batches of indices in an order that depends only on (seed, epoch).

    * Deterministic: a resumed run sees exactly the batches the original would
      have seen, including from the middle of an epoch (``set_epoch(e, start)``).
    * Distributed-aware: under ``torch.distributed`` each rank takes its own
      shard of every batch list, so no DistributedSampler is needed.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.size = size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _batches(self) -> list[list[int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        rank, world = _rank_and_world()
        shard = order[rank::world]
        return [shard[i : i + self.batch_size] for i in range(0, len(shard), self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        # A generator, so the order is drawn at the first batch rather than when the
        # iterator is made: Lightning makes it before calling set_epoch on a resume.
        batches = self._batches()[self.start_batch :]
        self.start_batch = 0  # only the first epoch after a resume starts mid-way
        yield from batches

    def __len__(self) -> int:
        rank, world = _rank_and_world()
        return math.ceil(len(range(rank, self.size, world)) / self.batch_size)


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def make_loader(
    dataset: TensorBatchDataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0
) -> DataLoader:
    """A DataLoader over whole batches.

    ``num_workers=0`` is the right default for in-memory tensors: on a 2-core
    CPU worker processes cost more than they save. Raise it when loading means
    reading files or decoding images.
    """
    return DataLoader(
        dataset,
        sampler=EpochBatchSampler(len(dataset), batch_size, shuffle, seed),
        batch_size=None,  # the sampler already yields batches
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG untouched
        pin_memory=torch.cuda.is_available(),
    )
