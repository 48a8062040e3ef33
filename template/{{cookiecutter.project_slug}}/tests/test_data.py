"""The data pipeline and layers every task builds on."""

from __future__ import annotations

import torch

from layers import ResidualMLP
from utils.dataset import NUM_CLASSES, NUM_FEATURES, EpochBatchSampler, load_splits


def test_splits_are_disjoint_and_fixed() -> None:
    first, second = load_splits(), load_splits()
    sizes = {name: len(split) for name, split in first.items()}
    assert min(sizes.values()) > 0
    assert torch.equal(first["test"].features, second["test"].features)
    train_points = {tuple(row.tolist()) for row in first["train"].features}
    assert not train_points & {tuple(row.tolist()) for row in first["test"].features}


def test_batch_order_depends_only_on_seed_and_epoch() -> None:
    sampler = EpochBatchSampler(size=100, batch_size=8, shuffle=True, seed=3)
    sampler.set_epoch(2)
    full_epoch = list(sampler)
    sampler.set_epoch(2, start_batch=5)
    assert list(sampler) == full_epoch[5:]
    sampler.set_epoch(3)
    assert list(sampler) != full_epoch
    assert sorted(index for batch in full_epoch for index in batch) == list(range(100))


def test_model_maps_features_to_class_scores() -> None:
    model = ResidualMLP(NUM_FEATURES, hidden_size=16, out_features=NUM_CLASSES, depth=2)
    assert model(torch.randn(5, NUM_FEATURES)).shape == (5, NUM_CLASSES)
