"""The GAN example's data, as ``trainers/<task>_data.py`` would hold it: points with augmentation."""

from __future__ import annotations

import math

import torch

from utils.dataset import EpochDataset, sample_generator


class Ring(EpochDataset):
    """Points near eight spots on the unit circle, with noise drawn afresh each epoch (augmentation).

    An EpochDataset: the loader asks for ``dataset[epoch, index]``, so worker
    processes know the epoch, and the noise comes from a generator seeded by
    (seed, epoch, index): a resumed run draws exactly what it drew before.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __len__(self) -> int:
        return 512

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        epoch, index = key
        angle = 2 * math.pi * (index % 8) / 8
        noise = torch.randn(2, generator=sample_generator(self.seed, epoch, index))
        return torch.tensor([math.cos(angle), math.sin(angle)]) + 0.05 * noise
