"""Data code every task shares: raw files to cached tensors, fixed splits, resumable loaders.

Each task's own data lives in its ``trainers/<task>_data.py``; this module
holds only what they have in common. :func:`make_loader` takes any map-style
``Dataset`` (one sample per index), an :class:`EpochDataset` (samples that
change each epoch: augmentation) or a :class:`ShardStream` (shard files read
in order), and resumes each mid-epoch on the next sample.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import (
    Dataset,
    DistributedSampler,
    IterableDataset,
    Subset,
    default_collate,
    get_worker_info,
    random_split,
)
from torchdata.stateful_dataloader import StatefulDataLoader

from protocol.checkpoint import atomic_torch_save
from protocol.files import PROJECT_ROOT, atomic_write_bytes
from utils.utils import seed_worker

# torchdata 0.11 calls a torch function that torch 2.13 deprecates, once per process: not ours to fix
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

RAW_DIR = PROJECT_ROOT / "data" / "raw"
PROCESSED_DIR = PROJECT_ROOT / "data" / "processed"
SPLIT_SEED = 2024  # fixed, unlike the training seed: every run sees the same test set
MASK_64 = (1 << 64) - 1


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


class EpochDataset(Dataset):
    """A Dataset whose samples change from epoch to epoch (random augmentation, noise).

    :func:`make_loader` asks it for ``dataset[epoch, index]`` instead of
    ``dataset[index]``: the epoch travels with each index from the main process,
    so it reaches worker processes that live across epochs, and a resumed run
    draws what the uninterrupted one drew. Draw the randomness from
    ``sample_generator(seed, epoch, index)``, never from the global RNG (a
    worker's global RNG is reseeded when a run resumes). Wrap the outermost
    dataset (after ``split``): ``Subset`` passes only plain indices on.
    """

    def __getitem__(self, key: tuple[int, int]) -> Any:
        raise NotImplementedError


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch RNG for one sample in one epoch: the same in any process, on any resume."""
    return torch.Generator().manual_seed(mix(mix(mix(seed) ^ epoch) ^ index))


def mix(number: int) -> int:
    """SplitMix64's finaliser: numbers that differ by one become unrelated 64-bit seeds.

    A third of the cost of NumPy's SeedSequence, which matters once per sample.
    """
    number = (number + 0x9E3779B97F4A7C15) & MASK_64
    number = ((number ^ (number >> 30)) * 0xBF58476D1CE4E5B9) & MASK_64
    number = ((number ^ (number >> 27)) * 0x94D049BB133111EB) & MASK_64
    return number ^ (number >> 31)


class EpochKeys(DistributedSampler):
    """DistributedSampler's indices, each paired with the epoch: what an EpochDataset reads."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())


class ShardStream(IterableDataset):
    """Samples streamed from shard files, for data too large to index (tar shards, a database).

    ``read(path)`` returns the samples of one shard in order (a module-level
    function: worker processes receive it). Each epoch the shards are shuffled by
    (seed, epoch) and dealt out: every rank gets an equal number, and each of its
    workers a share of those. A shard's samples are shuffled by (seed, epoch,
    shard) as it is read, so the position (epoch, shards done, samples done in
    the current shard) is all a checkpoint needs to continue with the next
    sample: three numbers, not a buffer of samples. Make shards small enough to
    read whole, many enough that every worker gets some, and of
    ``samples_per_shard`` samples each: ranks then take the same number of
    steps, and the loader knows its length (Lightning reads a loader without one
    a batch ahead, and a checkpoint would skip that batch).
    """

    def __init__(
        self, shards: list[Path], read: Callable[[Path], list[Any]], *, samples_per_shard: int, seed: int
    ) -> None:
        if not shards:
            raise ValueError("a ShardStream needs at least one shard")
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be at least 1, not {samples_per_shard}")
        self.shards = sorted(Path(shard) for shard in shards)
        self.read = read
        self.samples_per_shard = samples_per_shard
        self.seed = seed
        self.shuffle = True
        self.rank, self.world_size = 0, 1
        self.epoch = 0
        self.done = (0, 0)  # this share's progress in this epoch: shards done, samples done in the next
        self.restored = False

    def share(self, rank: int, world_size: int) -> None:
        """Read only rank ``rank`` of ``world_size``'s shards (make_loader calls this)."""
        if len(self.shards) % world_size:
            raise ValueError(
                f"{len(self.shards)} shards cannot be dealt out evenly to {world_size} ranks: "
                "write a multiple of the number of ranks"
            )
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """The samples this rank reads in an epoch."""
        return len(self.shards) // self.world_size * self.samples_per_shard

    def batches(self, batch_size: int, num_workers: int, drop_last: bool = False) -> int:
        """The batches this rank's loader yields in an epoch: each worker batches its own share."""
        shards = len(self.shards) // self.world_size
        readers = max(num_workers, 1)
        per_reader = [
            len(range(reader, shards, readers)) * self.samples_per_shard for reader in range(readers)
        ]
        rounding = math.floor if drop_last else math.ceil
        return sum(rounding(samples / batch_size) for samples in per_reader)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "shards": self.done[0], "samples": self.done[1]}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = state["epoch"]
        self.done = (state["shards"], state["samples"])
        self.restored = True  # the next pass continues from here instead of starting over

    def my_shards(self) -> list[int]:
        """The shards this rank's worker reads in this epoch, in reading order."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            order = torch.randperm(len(order), generator=sample_generator(self.seed, self.epoch, 0)).tolist()
        mine = order[self.rank :: self.world_size]
        worker = get_worker_info()  # None in the main process
        return mine[worker.id :: worker.num_workers] if worker is not None else mine

    def __iter__(self) -> Iterator[Any]:
        if not self.restored:
            self.done = (0, 0)  # a new pass (a state taken before its first sample says so)
        self.restored = False
        start = self.done
        return self.samples(self.my_shards(), start)

    def samples(self, shards: list[int], start: tuple[int, int]) -> Iterator[Any]:
        first_shard, first_sample = start
        for position in range(first_shard, len(shards)):
            path = self.shards[shards[position]]
            samples = self.read(path)
            if len(samples) != self.samples_per_shard:
                raise ValueError(f"{path} holds {len(samples)} samples, not {self.samples_per_shard}")
            order = list(range(len(samples)))
            if self.shuffle:
                generator = sample_generator(self.seed, self.epoch, 1 + shards[position])  # 0: the order
                order = torch.randperm(len(samples), generator=generator).tolist()
            for count in range(first_sample if position == first_shard else 0, len(samples)):
                self.done = (position, count + 1)  # counted when handed out: it is in this batch
                yield samples[order[count]]
            self.done = (position + 1, 0)


class Loader(StatefulDataLoader):
    """The loader :func:`make_loader` returns: a StatefulDataLoader that takes ``set_epoch``.

    Its state (what a checkpoint holds) records the epoch it belongs to, so that a
    loop that left an epoch early does not resume the next one from the old position.
    """

    epoch = 0  # of the iterations to come, as set_epoch said
    loaded_epoch: int | None = None  # of a state loaded and not yet resumed

    def __len__(self) -> int:
        if isinstance(self.dataset, ShardStream):  # DataLoader's own guess ignores how workers batch
            return self.dataset.batches(self.batch_size or 1, self.num_workers, self.drop_last)
        return super().__len__()

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch's first batch: the shuffle (and an EpochDataset's draws) follow it."""
        self.epoch = epoch
        if self.next_iter_state is not None and self.loaded_epoch not in (None, epoch):
            self.next_iter_state = None  # a position in another epoch: this one starts afresh
        if isinstance(self.dataset, ShardStream):
            self.dataset.set_epoch(epoch)
        else:
            self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": super().state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # checkpoints of template 0.3 and earlier hold the position alone
        position = state_dict.get("position", state_dict)
        self.loaded_epoch = state_dict.get("epoch") if "position" in state_dict else None
        # A position after an epoch's last batch holds nothing the next epoch needs, and
        # loading it does harm: torchdata 0.11 restores the finished iterator, refilling its
        # prefetch queue from it, and a stream's restored state overrides the epoch that
        # set_epoch gave (the next epoch then replays the last). Start afresh instead.
        if position.get("_iterator_finished"):
            position = {}
        super().load_state_dict(position)


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
) -> Loader:
    """A DataLoader whose position, worker state included, is saved in checkpoints.

    ``dataset`` is a map-style Dataset, an :class:`EpochDataset` or a
    :class:`ShardStream`. What an epoch reads depends on (seed, epoch) alone:
    call ``loader.set_epoch(epoch)`` before each (the protocol does under
    Lightning), or pass the ``epoch`` the loader starts in. Under distributed
    training each rank reads its own share. ``num_workers=0`` suits in-memory
    tensors; raise it when loading means reading or decoding files.
    """
    options: dict[str, Any] = {}
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, EpochDataset):
        raise TypeError("an EpochDataset inside a Subset gets plain indices: wrap the Subset in it instead")
    if isinstance(dataset, IterableDataset):
        if not isinstance(dataset, ShardStream):
            raise TypeError("make_loader streams a ShardStream; wrap your stream's shards in one")
        dataset = copy.copy(dataset)  # the share and shuffle are this loader's: another may differ
        dataset.share(rank, world_size)
        dataset.shuffle = shuffle
        # a stream's workers start with each epoch, from the dataset set_epoch just set:
        # workers kept alive across epochs would never hear of the new one
        persistent = False
    else:
        keys = EpochKeys if isinstance(dataset, EpochDataset) else DistributedSampler
        options["sampler"] = keys(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        persistent = num_workers > 0
    loader = Loader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=persistent,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),  # worker seeds, without touching the global RNG
        pin_memory=torch.cuda.is_available(),
        **options,
    )
    loader.set_epoch(epoch)
    return loader
