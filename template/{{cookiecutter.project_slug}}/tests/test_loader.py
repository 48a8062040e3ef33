"""The shared data pipeline: ordinary Datasets, batched in-memory data, exact mid-epoch resume."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from utils.dataset import TensorSamples, make_loader


class Squares(Dataset):
    """An ordinary map-style Dataset: one sample per index, nothing else."""

    def __len__(self) -> int:
        return 90

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(index), float(index) ** 2]), index


def batches(loader, epoch: int, stop_after: int | None = None) -> list[list[int]]:
    loader.sampler.set_epoch(epoch)
    seen = []
    for _, indices in loader:
        seen.append(indices.tolist())
        if len(seen) == stop_after:
            break
    return seen


def test_a_per_sample_dataset_with_workers_resumes_mid_epoch_exactly() -> None:
    def loader():
        return make_loader(Squares(), batch_size=8, shuffle=True, seed=3, num_workers=2)

    uninterrupted = loader()
    expected = [batches(uninterrupted, epoch) for epoch in range(3)]

    stopped = loader()
    first = batches(stopped, 0)
    partial = batches(stopped, 1, stop_after=4)
    state = stopped.state_dict()  # what a checkpoint holds

    resumed = loader()
    resumed.load_state_dict(state)
    rest = batches(resumed, 1)
    assert [first, partial + rest, batches(resumed, 2)] == expected
    assert expected[0] != expected[1]  # each epoch its own order
    assert sorted(i for batch in expected[0] for i in batch) == list(range(90))


def test_in_memory_samples_batch_like_an_ordinary_dataset() -> None:
    features, labels = torch.randn(50, 3), torch.arange(50)
    dataset = TensorSamples(features, labels)
    one = dataset[7]
    assert torch.equal(one[0], features[7]) and int(one[1]) == 7
    batch_features, batch_labels = next(iter(make_loader(dataset, 16, shuffle=True, seed=0)))
    assert batch_features.shape == (16, 3)
    assert torch.equal(batch_features, features[batch_labels])


def test_ranks_read_disjoint_shards() -> None:
    shards = [
        {
            int(i)
            for _, indices in make_loader(Squares(), 8, shuffle=True, seed=1, rank=rank, world_size=2)
            for i in indices
        }
        for rank in (0, 1)
    ]
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(90))
